"""course_lib.circuits.exercises: the checkers accept the references and name the mistake in known wrong answers."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import circuits, weight_sparsity
from course_lib.circuits import exercises as ex

CHECKS = {
    "kept_fraction": (ex.check_kept_fraction, weight_sparsity.kept_fraction),
    "project_topk": (ex.check_project_topk, weight_sparsity.project_topk),
    "hard_mask": (ex.check_hard_mask, circuits.hard_mask),
    "weight_edges": (ex.check_weight_edges, circuits.weight_edges),
    "accept_circuit": (ex.check_accept_circuit, circuits.accept_circuit),
    "smallest_k": (ex.check_smallest_k, circuits.pruning.smallest_k),
}


def not_done(*args):
    raise NotImplementedError


@pytest.mark.parametrize("name", CHECKS)
def test_reference_passes_and_a_stub_is_not_attempted(name):
    check, reference = CHECKS[name]
    assert check(reference).startswith(f"{name}: correct")
    assert check(not_done) == ex.NOT_ATTEMPTED


# --------------------------------------------------------------------------- kept_fraction


_schedule = ex._schedule  # the schedule with its likely mistakes as switches


def test_another_correct_schedule_passes():
    def clipped(step, total, target, start, end):  # the same schedule written with a clamp
        u = min(max(((step + 1) / total - start) / (end - start), 0.0), 1.0)
        return torch.tensor(1.0 - u * (1.0 - target))

    assert "correct" in ex.check_kept_fraction(clipped)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, n, f, a, b: f, "starts at 1"),
    (lambda s, n, f, a, b: _schedule(s, n, f, a, b, offset=0), "off by one"),
    (lambda s, n, f, a, b: 1.0 + f - weight_sparsity.kept_fraction(s, n, f, a, b), "rises"),
    (lambda s, n, f, a, b: _schedule(s, n, f, a, b, clamp=False), "keeps falling"),
    (lambda s, n, f, a, b: _schedule(s, n, f, a, b, hold=False), "before anneal_start"),
    (lambda s, n, f, a, b: _schedule(s, n, f, 0.0, 1.0), "whole run"),
    (lambda s, n, f, a, b: weight_sparsity.kept_fraction(s, n, 0.0, a, b) if f < 1 else 1.0, "falls to 0"),
    (lambda s, n, f, a, b: 0.5, "wrong value for kept_fraction"),
    (lambda s, n, f, a, b: [1.0], "torch.Tensor"),
])
def test_kept_fraction_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_kept_fraction(wrong)


# --------------------------------------------------------------------------- project_topk


def _keep(w, k, score):
    flat = torch.zeros(w.numel(), dtype=torch.bool)
    if k:
        flat[score.reshape(-1).topk(k).indices] = True
    return w * flat.view_as(w)


def test_an_in_place_projection_passes():
    def in_place(w, fraction):
        k = max(1, math.ceil(fraction * w.numel()))
        threshold = w.abs().flatten().topk(k).values.min()
        return w.mul_(w.abs() >= threshold)

    assert "correct" in ex.check_project_topk(in_place)


@pytest.mark.parametrize("wrong, hint", [
    (lambda w, f: _keep(w, math.floor(f * w.numel()), w.abs()), "rounded down"),
    (lambda w, f: _keep(w, round(f * w.numel()), w.abs()), "rounded down"),
    (lambda w, f: _keep(w, max(1, math.ceil(f * w.numel())), w), "largest values"),
    (lambda w, f: _keep(w, max(1, math.ceil(f * w.numel())), -w.abs()), "smallest magnitudes"),
    (lambda w, f: weight_sparsity.project_topk(w, f) != 0, "returned the mask"),
    (lambda w, f: (weight_sparsity.project_topk(w, f) != 0).float(), "returned the mask"),
    (lambda w, f: _keep(w, math.ceil(f * w.numel()) + 1, w.abs()), "exactly k = ceil"),
    (lambda w, f: weight_sparsity.project_topk(w, f).abs(), "not the ones of largest"),
    (lambda w, f: weight_sparsity.project_topk(w, f).flatten(), "shape"),
])
def test_project_topk_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_project_topk(wrong)


def test_project_topk_per_row():
    def per_row(w, f):
        if w.ndim < 2:
            return weight_sparsity.project_topk(w, f)
        k = max(1, math.ceil(f * w.shape[-1]))
        return w * torch.zeros_like(w, dtype=torch.bool).scatter_(-1, w.abs().topk(k, dim=-1).indices, True)

    with pytest.raises(ex.ExerciseError, match="within each row"):
        ex.check_project_topk(per_row)


# --------------------------------------------------------------------------- hard_mask


def _ste(logits, surrogate):
    hard = (logits > 0).to(logits.dtype)
    return hard + (surrogate - surrogate.detach())


def test_the_detach_trick_passes():
    def detach_trick(logits, temperature):
        return _ste(logits, torch.sigmoid(logits / temperature))

    assert "correct" in ex.check_hard_mask(detach_trick)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, T: torch.sigmoid(s / T), "soft mask"),
    (lambda s, T: torch.sigmoid(s), "soft mask"),
    (lambda s, T: (s < 0).float(), "inverted"),
    (lambda s, T: (s > 0).float(), "no gradient reaches"),
    (lambda s, T: s > 0, "make it float"),
    (lambda s, T: (s > 0).float() + 0 * s, "gradient of the logits is zero"),
    (lambda s, T: _ste(s, s), "plain straight-through"),
    (lambda s, T: _ste(s, torch.sigmoid(s)), "temperature is missing"),
    (lambda s, T: _ste(s, torch.sigmoid(s / T) * T), "1 / temperature is missing"),
    (lambda s, T: (s > 0).float() - (torch.sigmoid(s / T) - torch.sigmoid(s / T).detach()), "wrong sign"),
    (lambda s, T: (s > 0).float() + torch.sigmoid(s / T).detach() * (s - s.detach()), r"is sigmoid\(logits / T\) itself"),
    (lambda s, T: (s > 0.5).float(), "forward pass must be 1"),
])
def test_hard_mask_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_hard_mask(wrong)


# --------------------------------------------------------------------------- weight_edges


def test_a_differently_written_edge_count_passes():
    def via_outer(W, src, dst):
        return torch.count_nonzero(W * (src[:, None] & dst[None, :]))

    assert "correct" in ex.check_weight_edges(via_outer)


@pytest.mark.parametrize("wrong, hint", [
    (lambda W, a, b: int((W != 0).sum()), "every nonzero weight"),
    (lambda W, a, b: int(a.sum() * b.sum()), "every pair of kept nodes"),
    (lambda W, a, b: int((W[a] != 0).sum()), "only the source"),
    (lambda W, a, b: int((W[:, b] != 0).sum()), "only the destination"),
    (lambda W, a, b: int(((W != 0) & (a[:, None] | b[None, :])).sum()), "either node"),
    (lambda W, a, b: int((W[b][:, a] != 0).sum()), "src_kept selects rows"),
    (lambda W, a, b: W[a][:, b].sum(), "summed the weights"),
    (lambda W, a, b: W[a][:, b].abs().sum(), r"summed \|W\|"),
    (lambda W, a, b: int((W[a][:, b] > 0).sum()), "wrong value for case"),
])
def test_weight_edges_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_weight_edges(wrong)


# --------------------------------------------------------------------------- accept_circuit


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, tr, te, t: n is not None and tr <= t, "train loss"),
    (lambda n, tr, te, t: te <= t, "never reached the target on the train prompts"),
    (lambda n, tr, te, t: n is not None and te < t, "equal counts"),
    (lambda n, tr, te, t: bool(n) and te <= t, "train_nodes = 0 is a circuit"),
    (lambda n, tr, te, t: n is not None and te > t, "inverted"),
    (lambda n, tr, te, t: n > 0 and te <= t, "TypeError"),
    (lambda n, tr, te, t: te, "True or False"),
    (lambda n, tr, te, t: None, "returned None"),
    (lambda n, tr, te, t: False, "wrong value for accept_circuit"),
])
def test_accept_circuit_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_accept_circuit(wrong)


def test_accept_circuit_takes_a_bool_tensor():
    assert "correct" in ex.check_accept_circuit(
        lambda n, tr, te, t: torch.tensor(n is not None) & (torch.tensor(te) <= t))


# --------------------------------------------------------------------------- smallest_k


def _bisect(loss_at, ks, goal, *, whole=False, give_lo=False):
    hits = [k for k in ks if loss_at(k) <= goal]
    if not hits:
        return None
    lo, hi = (0, ks[-1]) if whole else (max([k for k in ks if k < hits[0]], default=0), hits[0])
    if whole and loss_at(0) <= goal:
        return 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if loss_at(mid) <= goal else (mid, hi)
    return lo if give_lo else hi


def test_a_recursive_bisection_passes():
    def rec(loss_at, ks, goal):
        hits = [k for k in ks if loss_at(k) <= goal]
        if not hits:
            return None

        def go(lo, hi):
            if hi - lo <= 1:
                return hi
            mid = (lo + hi + 1) // 2  # rounding up is as good
            return go(lo, mid) if loss_at(mid) <= goal else go(mid, hi)

        return go(max([k for k in ks if k < hits[0]], default=0), hits[0]) if hits[0] else 0

    assert ex.check_smallest_k(rec).startswith("smallest_k: correct")


@pytest.mark.parametrize("wrong, hint", [
    (lambda f, ks, g: _bisect(f, ks, g, give_lo=True), "one below the answer"),
    (lambda f, ks, g: _bisect(f, ks, g, whole=True), "the curve is not monotone"),
    (lambda f, ks, g: next((k for k in range(ks[-1] + 1) if f(k) <= g), None), "counts off the grid"),
    (lambda f, ks, g: next((k for k in ks if f(k) <= g), None), "lies between two grid points"),
    (lambda f, ks, g: _bisect(f, ks, g - 1e-9), "written as `<`"),
    (lambda f, ks, g: _bisect(f, ks, g) or ks[-1], "return None"),
    (lambda f, ks, g: float(_bisect(f, ks, g) or 0), "should return an int"),
])
def test_smallest_k_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_smallest_k(wrong)
