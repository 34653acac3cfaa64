"""course_lib.lens.exercises: each checker accepts the reference and names the mistake in known wrong answers."""

from __future__ import annotations

import pytest
import torch

from course_lib import lens
from course_lib.lens import exercises as ex


def not_done(*args):
    raise NotImplementedError("hint: ...")


def test_references_pass_and_stubs_are_not_attempted():
    assert "correct" in ex.check_zero_ablation_hook(lens.zero_ablation_hook)
    assert "correct" in ex.check_head_ablation_hook(lens.head_ablation_hook)
    assert "correct" in ex.check_token_loss(lens.token_loss)
    assert "correct" in ex.check_logit_lens_probs(lens.logit_lens_probs)
    assert "correct" in ex.check_steering_hook(lens.steering_hook)
    for check in (ex.check_zero_ablation_hook, ex.check_head_ablation_hook, ex.check_token_loss,
                  ex.check_logit_lens_probs, ex.check_steering_hook):
        assert check(not_done) == ex.NOT_ATTEMPTED


def _zero_in_place(a, hook):
    a.zero_()


def _zero_first(a, hook):
    a = a.clone()
    a[..., 0] = 0
    return a


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, hook: a, "unchanged"),
    (lambda a, hook: None, "returned None"),
    (_zero_in_place, "in place"),
    (lambda a, hook: torch.zeros(()), "shape"),
    (_zero_first, "only part"),
])
def test_zero_ablation_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_zero_ablation_hook(wrong)


def _zero(index):
    def hook(z, hook, head):
        z = z.clone()
        z[index(head)] = 0
        return z
    return hook


@pytest.mark.parametrize("wrong, hint", [
    (_zero(lambda h: (slice(None), h)), "position"),
    (_zero(lambda h: (..., h)), "d_head"),
    (_zero(lambda h: (slice(None),)), "every head"),
    (_zero(lambda h: (h % 2,)), "batch element"),
    (lambda z, hook, head: z, "nothing was ablated"),
])
def test_head_ablation_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_head_ablation_hook(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda lg, t: -lg.log_softmax(-1).gather(-1, t[..., None]).mean(), "no shift"),
    (lambda lg, t: -lg[:, 1:].log_softmax(-1).gather(-1, t[:, :-1, None]).mean(), "wrong way"),
    (lambda lg, t: lg[:, :-1].log_softmax(-1).gather(-1, t[:, 1:, None]).mean(), "sign"),
    (lambda lg, t: -lg[:, :-1].gather(-1, t[:, 1:, None]).mean(), "raw logits"),
    (lambda lg, t: -lg[:, :-1].log_softmax(-1).gather(-1, t[:, 1:, None]).sum(), "summed"),
    (lambda lg, t: -lg[:, :-1].log_softmax(-1).gather(-1, t[:, 1:, None])[..., 0], "one number"),
])
def test_token_loss_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_token_loss(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda r, ln, un: un(r).softmax(-1), "final norm"),
    (lambda r, ln, un: un(ln(r)), "returned logits"),
    (lambda r, ln, un: un(ln(r)).softmax(0), "wrong dimension"),
    (lambda r, ln, un: un(ln(r)).log_softmax(-1), "log-probabilities"),
    (lambda r, ln, un: un(ln(r)).softmax(-1)[-1], "shape"),
])
def test_logit_lens_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_logit_lens_probs(wrong)


def _steer(index, op="add", clone=True, ret=True):
    def hook(resid, hook, vector, position):
        out = resid.clone() if clone else resid
        idx = index(position)
        if op == "add":
            out[idx] += vector
        elif op == "sub":
            out[idx] -= vector
        else:
            out[idx] = vector
        return out if ret else None
    return hook


@pytest.mark.parametrize("wrong, hint", [
    (_steer(lambda p: (slice(None), p), clone=False, ret=False), "in place and returned None"),
    (_steer(lambda p: (slice(None), p), ret=False), "returned None"),
    (_steer(lambda p: (slice(None), p), clone=False), "modified resid in place"),
    (_steer(lambda p: (...,)), "every position"),
    (_steer(lambda p: (slice(None), -1)), "last position"),
    (_steer(lambda p: (slice(None), 0)), "position 0"),
    (_steer(lambda p: (p % 2,)), "batch dimension"),
    (_steer(lambda p: (slice(None), p), op="set"), "replaced"),
    (_steer(lambda p: (slice(None), p), op="sub"), "subtracted"),
    (lambda resid, hook, vector, position: resid.clone(), "nothing changed"),
    (lambda resid, hook, vector, position: resid[:, position] + vector, "shape"),
])
def test_steering_hook_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_steering_hook(wrong)
