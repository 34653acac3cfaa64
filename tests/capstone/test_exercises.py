"""Notebook 05's checkers accept the reference and name each known mistake."""

from __future__ import annotations

import pytest
import torch

from course_lib.capstone import activity, exercises, explain, matching, units


def test_references_pass():
    assert "correct" in exercises.check_matched_width(matching.matched_width)
    assert "correct" in exercises.check_orient(units.orient)
    assert "correct" in exercises.check_top_token_share(activity.top_token_share)
    assert "correct" in exercises.check_token_weights(explain.token_weights)


def test_stubs_are_not_attempted():
    def stub(*args):
        raise NotImplementedError("hint: ...")

    for check in (exercises.check_matched_width, exercises.check_orient, exercises.check_top_token_share,
                  exercises.check_token_weights):
        assert check(stub) == exercises.NOT_ATTEMPTED


@pytest.mark.parametrize("wrong, words", [
    (lambda loss, widths: min(widths, key=lambda wl: abs(wl[1] - loss))[0], "nearest loss"),
    (lambda loss, widths: min(widths, key=lambda wl: wl[1])[0], "most capable"),
    (lambda loss, widths: None, "returned None"),
])
def test_matched_width_mistakes(wrong, words):
    with pytest.raises(exercises.ExerciseError, match=words):
        exercises.check_matched_width(wrong)


@pytest.mark.parametrize("wrong, words", [
    (lambda a: 1 if float(a.mean()) >= 0 else -1, "sign of the mean"),
    (lambda a: 1 if float(a.max()) >= float(-a.min()) else -1, "maximum and the minimum"),
    (lambda a: -units.orient(a), "inverted"),
    (lambda a: True, "an int"),
])
def test_orient_mistakes(wrong, words):
    with pytest.raises(exercises.ExerciseError, match=words):
        exercises.check_orient(wrong)


@pytest.mark.parametrize("wrong, words", [
    (lambda a, ids: max(float(a[ids == v].sum()) for v in ids.unique()) / float(a.sum()) if float(a.sum()) else 0.0,
     "relu"),
    (lambda a, ids: float(a.clamp(min=0).max() / a.clamp(min=0).sum()) if float(a.clamp(min=0).sum()) > 0 else 0.0,
     "single largest activation"),
    (lambda a, ids: float("nan"), "NaN"),
    (lambda a, ids: torch.tensor([0.1, 0.2]), "float"),
])
def test_top_token_share_mistakes(wrong, words):
    with pytest.raises(exercises.ExerciseError, match=words):
        exercises.check_top_token_share(wrong)


def _mass_sums(ur, k):
    mass, count = {}, {}
    for r in ur.train:
        for s, a in zip(r.strings, r.acts):
            mass[s] = mass.get(s, 0.0) + a
            count[s] = count.get(s, 0) + 1
    return {s: mass[s] for s in sorted((s for s in mass if mass[s] > 0), key=lambda s: -mass[s])[:k]}


@pytest.mark.parametrize("wrong, words", [
    (_mass_sums, "sums of activation"),
    (lambda ur, k: dict(list(explain.token_weights(ur, k + 1).items())), "k \\+ 1"),
    (lambda ur, k: list(explain.token_weights(ur, k)), "a dict"),
])
def test_token_weights_mistakes(wrong, words):
    with pytest.raises(exercises.ExerciseError, match=words):
        exercises.check_token_weights(wrong)
