"""Notebook 05's checkers accept the reference and name each known mistake."""

from __future__ import annotations

import pytest
import torch

from course_lib.capstone import activity, exercises, matching, units


def test_references_pass():
    assert "correct" in exercises.check_matched_width(matching.matched_width)
    assert "correct" in exercises.check_orient(units.orient)
    assert "correct" in exercises.check_top_token_share(activity.top_token_share)


def test_stubs_are_not_attempted():
    def stub(*args):
        raise NotImplementedError("hint: ...")

    for check in (exercises.check_matched_width, exercises.check_orient, exercises.check_top_token_share):
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
