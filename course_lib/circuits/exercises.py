"""Checkers for notebook 02's exercises: each runs the learner's function on small made-up inputs and names the mistake.

Same contract as :mod:`course_lib.toy.exercises`: a success message, :data:`~course_lib.exercises.NOT_ATTEMPTED`
while the function still raises ``NotImplementedError``, else :class:`~course_lib.exercises.ExerciseError`
with the likely mistake (a known wrong variant it matches) or the first input where it differs.

- :func:`check_kept_fraction`: the annealing schedule of the kept fraction
  (reference :func:`course_lib.weight_sparsity.kept_fraction`).
- :func:`check_project_topk`: the top-k projection of one weight tensor
  (reference :func:`course_lib.weight_sparsity.project_topk`).
- :func:`check_hard_mask`: the node mask, hard 0/1 forward and sigmoid-derivative backward
  (reference :func:`course_lib.circuits.pruning.hard_mask`).
- :func:`check_weight_edges`: nonzero weights between kept nodes
  (reference :func:`course_lib.circuits.edges.weight_edges`).
- :func:`check_accept_circuit`: a circuit counts only if its held-out loss reaches the target
  (reference :func:`course_lib.circuits.pruning.accept_circuit`).
- :func:`check_smallest_k`: the bisection for the smallest kept-node count reaching the goal
  (reference :func:`course_lib.circuits.pruning.smallest_k`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from course_lib import weight_sparsity
from course_lib.circuits import edges, pruning
from course_lib.exercises import NOT_ATTEMPTED, ExerciseError, close, diagnose, tensor_of

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "check_accept_circuit", "check_hard_mask", "check_kept_fraction",
           "check_project_topk", "check_smallest_k", "check_weight_edges"]


def _first_wrong(name: str, got: torch.Tensor, ref: torch.Tensor, wrong: dict[str, torch.Tensor],
                 describe: Callable[[int], str]) -> None:
    """Like :func:`course_lib.exercises.diagnose` over a list of cases, naming the first case that differs."""
    if close(got, ref):
        return
    for hint, variant in wrong.items():
        if close(got, variant):
            raise ExerciseError(f"{name}: {hint}")
    i = int(torch.nonzero(~torch.isclose(got.float(), ref.float(), rtol=1e-4, atol=1e-4))[0])
    raise ExerciseError(f"{name}: wrong value for {describe(i)}: you return {float(got[i]):.4g}, "
                        f"the reference gives {float(ref[i]):.4g}")


# --------------------------------------------------------------------------- exercise 1: the schedule

SCHEDULE_CASES = [  # (step, total_steps, target_fraction, anneal_start, anneal_end)
    *[(s, 100, 0.1, 0.01, 0.5) for s in (0, 1, 10, 30, 48, 49, 60, 99)],
    *[(s, 50, 0.25, 0.2, 0.6) for s in (0, 5, 9, 10, 20, 29, 30, 49)],
    *[(s, 40, 1.0, 0.01, 0.5) for s in (0, 20, 39)],  # a dense model stays dense
]


def _schedule(step: int, total: int, target: float, start: float, end: float, *, offset: int = 1,
              hold: bool = True, clamp: bool = True) -> float:
    """The schedule and its likely mistakes: ``offset=0`` (t = step / total), no hold before ``start``, no clamp."""
    t = (step + offset) / total
    if hold and t <= start:
        return 1.0
    if clamp and t >= end:
        return target
    return 1.0 + (t - start) / (end - start) * (target - 1.0)


def check_kept_fraction(fn: Callable[[int, int, float, float, float], float]) -> str:
    """``fn(step, total_steps, target_fraction, anneal_start, anneal_end) -> kept fraction after that step``."""
    got = []
    for case in SCHEDULE_CASES:
        try:
            out = fn(*case)
        except NotImplementedError:
            return NOT_ATTEMPTED
        got.append(tensor_of("kept_fraction", out, (), "one number, the kept fraction").float())
    got_t = torch.stack(got)

    def each(f: Callable[..., float]) -> torch.Tensor:
        return torch.tensor([float(f(*c)) for c in SCHEDULE_CASES])

    ref = each(weight_sparsity.kept_fraction)
    _first_wrong("kept_fraction", got_t, ref, {
        "you return target_fraction from the first step: the kept fraction starts at 1 (dense) and only falls "
        "between anneal_start and anneal_end": each(lambda s, n, f, a, b: f),
        "off by one: after optimizer step `step` (0-based) the fraction of training done is "
        "t = (step + 1) / total_steps": each(lambda *c: _schedule(*c, offset=0)),
        "your fraction rises from target_fraction to 1; it must fall from 1 to target_fraction":
            1.0 + each(lambda s, n, f, a, b: f) - ref,
        "after anneal_end the fraction must stay at target_fraction; yours keeps falling (clamp u at 1)":
            each(lambda *c: _schedule(*c, clamp=False)),
        "before anneal_start the fraction must be 1; yours is above 1 there (hold it at 1 until t > anneal_start)":
            each(lambda *c: _schedule(*c, hold=False)),
        "you annealed over the whole run (u = t); the fall starts at anneal_start and ends at anneal_end: "
        "u = (t - anneal_start) / (anneal_end - anneal_start)": each(lambda s, n, f, a, b: _schedule(s, n, f, 0.0, 1.0)),
        "your fraction falls to 0, not to target_fraction: interpolate 1 + u * (target_fraction - 1)":
            each(lambda s, n, f, a, b: weight_sparsity.kept_fraction(s, n, 0.0, a, b) if f < 1 else 1.0),
    }, lambda i: f"kept_fraction{SCHEDULE_CASES[i]}")
    return "kept_fraction: correct (dense until anneal_start, linear to the target by anneal_end, then held)"


# --------------------------------------------------------------------------- exercise 2: the projection


def _project_cases() -> list[tuple[torch.Tensor, float]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(6, 7, generator=g), 0.2),  # k = ceil(8.4) = 9
        (torch.randn(5, generator=g), 0.1),  # a bias: k = ceil(0.5) = 1
        (torch.randn(3, 4, 5, generator=g), 0.3),  # any shape: k = 18
        (torch.randn(6, 7, generator=g), 1.0),  # dense: unchanged
    ]


def _keep_by(w: torch.Tensor, k: int, score: torch.Tensor) -> torch.Tensor:
    flat = torch.zeros(w.numel(), dtype=torch.bool)
    if k > 0:
        flat[score.reshape(-1).topk(k).indices] = True
    return w * flat.view_as(w)


def _per_row(w: torch.Tensor, fraction: float) -> torch.Tensor:
    if w.ndim < 2:
        return weight_sparsity.project_topk(w, fraction)
    k = weight_sparsity.keep_count(w.shape[-1], fraction)
    idx = w.abs().topk(k, dim=-1).indices
    return w * torch.zeros_like(w, dtype=torch.bool).scatter_(-1, idx, True)


def check_project_topk(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> str:
    """``fn(w, fraction) -> w'``: the ``ceil(fraction * numel)`` entries of largest ``|w|`` kept, the rest 0."""
    for w, f in _project_cases():
        try:
            got = fn(w.clone(), f)
        except NotImplementedError:
            return NOT_ATTEMPTED
        got = tensor_of("project_topk", got, tuple(w.shape), "same shape as w")
        ref = weight_sparsity.project_topk(w, f)
        k, n = weight_sparsity.keep_count(w.numel(), f), w.numel()
        case = f"w of shape {tuple(w.shape)} at fraction {f}"
        if close(got, ref):
            continue
        if got.dtype == torch.bool or close(got, (ref != 0).float()):
            raise ExerciseError("project_topk: you returned the mask; return the projected weights, w * mask "
                                "(kept entries keep their values)")
        for hint, variant in {
            f"k is rounded down ({case}: fraction * numel = {f * n:g}); keep k = ceil(fraction * numel) entries, "
            "at least 1 (math.ceil)": _keep_by(w, math.floor(f * n), w.abs()),
            "you ranked within each row (topk along one dimension); rank the whole tensor: "
            "w.abs().flatten().topk(k)": _per_row(w, f),
            "you kept the largest values, not the largest magnitudes: rank by w.abs()": _keep_by(w, k, w),
            "you kept the smallest magnitudes; keep the largest (topk, not topk(largest=False))":
                _keep_by(w, k, -w.abs()),
        }.items():
            if close(got, variant):
                raise ExerciseError(f"project_topk: {hint}")
        count = int((got != 0).sum())
        if count != k:
            raise ExerciseError(f"project_topk: {case} must keep exactly k = ceil({f} * {n}) = {k} entries; "
                                f"yours keeps {count}")
        raise ExerciseError(f"project_topk: {case}: right number of entries, but not the ones of largest |w| "
                            "(or their values changed)")
    return "project_topk: correct (exactly ceil(fraction * numel) entries kept, the largest |w|, values unchanged)"


# --------------------------------------------------------------------------- exercise 3: the hard mask


def check_hard_mask(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> str:
    """``fn(logits, temperature) -> mask``: forward ``1[logits > 0]``, backward ``sigmoid'(logits / T) / T``."""
    s0 = torch.tensor([-3.0, -0.8, -0.2, 0.1, 0.6, 2.5])
    T = 0.5
    upstream = torch.tensor([0.3, -1.2, 0.7, 1.1, -0.4, 0.9])
    s = s0.clone().requires_grad_(True)
    try:
        out = fn(s, T)
    except NotImplementedError:
        return NOT_ATTEMPTED
    out = tensor_of("hard_mask", out, tuple(s0.shape), "one mask value per logit")
    fwd = out.detach().float()
    hard = (s0 > 0).float()
    sig = torch.sigmoid(s0 / T)
    if close(fwd, 1 - hard):
        raise ExerciseError("hard_mask: the mask is inverted: a node is kept (1) where its logit is positive")
    if close(fwd, sig) or close(fwd, torch.sigmoid(s0)):
        raise ExerciseError("hard_mask: the forward pass returns the sigmoid (a soft mask); it must be exactly 0 or 1, "
                            "1[logits > 0]: the sigmoid only shapes the gradient")
    if not close(fwd, hard):
        raise ExerciseError(f"hard_mask: the forward pass must be 1[logits > 0] = {hard.tolist()}; "
                            f"yours gives {[round(v, 4) for v in fwd.tolist()]}")
    bool_note = " (your mask is a bool tensor: make it float)" if out.dtype == torch.bool else ""
    if not out.requires_grad:
        raise ExerciseError("hard_mask: no gradient reaches the logits: (logits > 0) has none. Add the surrogate "
                            "with the straight-through trick, hard + (soft - soft.detach()), soft = "
                            "torch.sigmoid(logits / temperature)" + bool_note)
    (out * upstream).sum().backward()
    grad = s.grad if s.grad is not None else torch.zeros_like(s0)
    if not bool(grad.abs().gt(0).any()):
        raise ExerciseError("hard_mask: the gradient of the logits is zero: the backward pass must be the "
                            "derivative of the soft mask sigmoid(logits / temperature)")
    ref = upstream * sig * (1 - sig) / T
    plain = torch.sigmoid(s0)
    diagnose("hard_mask (gradient)", grad, ref, {
        "the gradient passes through unchanged (gradient 1, the plain straight-through estimator); it must be "
        "the soft mask's derivative, sigmoid'(logits / T) / T": upstream,
        "the temperature is missing: the soft mask is sigmoid(logits / temperature)": upstream * plain * (1 - plain),
        "the chain-rule factor 1 / temperature is missing: d/ds sigmoid(s / T) = sigmoid'(s / T) / T":
            upstream * sig * (1 - sig),
        "the gradient has the wrong sign: use hard + (soft - soft.detach()), not hard - soft + soft.detach()": -ref,
        "the gradient is sigmoid(logits / T) itself; it must be its derivative: let autograd differentiate soft, "
        "hard + (soft - soft.detach())": upstream * sig,
    })
    return "hard_mask: correct (hard 0/1 forward, sigmoid-derivative gradient)"


# --------------------------------------------------------------------------- exercise 4: edges


def _edge_cases() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)

    def sparse(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * (torch.rand(*shape, generator=g) < 0.5)

    def kept(n: int) -> torch.Tensor:
        return torch.rand(n, generator=g) < 0.6

    return [
        (sparse(6, 6), kept(6), kept(6)),  # square
        (sparse(5, 8), torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool), kept(8)),  # [n_src, n_dst]
        (torch.eye(5), torch.tensor([1, 1, 0, 1, 0], dtype=torch.bool),
         torch.tensor([0, 1, 1, 1, 0], dtype=torch.bool)),  # a residual link: an identity weight
        (sparse(4, 7), torch.tensor([0, 1, 1, 0], dtype=torch.bool), kept(7)),
    ]


def check_weight_edges(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], int]) -> str:
    """``fn(W [n_src, n_dst], src_kept [n_src] bool, dst_kept [n_dst] bool) -> number of edges``."""
    cases = _edge_cases()
    got = []
    for W, a, b in cases:
        try:
            out = fn(W.clone(), a.clone(), b.clone())
        except NotImplementedError:
            return NOT_ATTEMPTED
        except (IndexError, RuntimeError) as e:
            raise ExerciseError(f"weight_edges raised {type(e).__name__} ({e}) on W of shape {tuple(W.shape)}: W is "
                                "[n_src, n_dst], so src_kept selects rows and dst_kept columns") from None
        got.append(tensor_of("weight_edges", out, (), "one number, the edge count").float())
    got_t = torch.stack(got)

    def each(f: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object]) -> torch.Tensor:
        return torch.tensor([float(f(W, a, b)) for W, a, b in cases])

    _first_wrong("weight_edges", got_t, each(edges.weight_edges), {
        "you counted every nonzero weight of W; an edge needs both of its nodes kept":
            each(lambda W, a, b: (W != 0).sum()),
        "you counted every pair of kept nodes; an edge also needs a nonzero weight between them":
            each(lambda W, a, b: a.sum() * b.sum()),
        "only the source node (row) is required to be kept; the destination (column) must be kept too":
            each(lambda W, a, b: (W[a] != 0).sum()),
        "only the destination node (column) is required to be kept; the source (row) must be kept too":
            each(lambda W, a, b: (W[:, b] != 0).sum()),
        "you counted weights where either node is kept; an edge needs both (and, not or)":
            each(lambda W, a, b: ((W != 0) & (a[:, None] | b[None, :])).sum()),
        "you summed the weights; count the nonzero ones (!= 0)": each(lambda W, a, b: W[a][:, b].sum()),
        "you summed |W|; count the nonzero weights (!= 0)": each(lambda W, a, b: W[a][:, b].abs().sum()),
    }, lambda i: f"case {i} (W of shape {tuple(cases[i][0].shape)})")
    return "weight_edges: correct (nonzero weights whose source and destination nodes are both kept)"


# --------------------------------------------------------------------------- exercise 5: held-out acceptance

ACCEPT_CASES = [  # (train_nodes, train_loss, test_loss, target_loss), consistent with find_circuit
    (12, 0.20, 0.25, 0.3),  # reaches the target on both
    (12, 0.20, 0.35, 0.3),  # train only: fits the train prompts, fails held-out
    (None, 0.45, 0.28, 0.3),  # no node set reached the target on train prompts
    (7, 0.30, 0.30, 0.3),  # exactly at the target
    (0, 0.10, 0.12, 0.3),  # zero nodes: the mean prediction already does it
    (None, 0.50, 0.60, 0.3),
]


def check_accept_circuit(fn: Callable[[int | None, float, float, float], bool]) -> str:
    """``fn(train_nodes, train_loss, test_loss, target_loss) -> bool``: is the node set a circuit?"""
    got = []
    for case in ACCEPT_CASES:
        try:
            out = fn(*case)
        except NotImplementedError:
            return NOT_ATTEMPTED
        except TypeError as e:
            raise ExerciseError(f"accept_circuit{case} raised TypeError ({e}): train_nodes is None when the "
                                "bisection found no node set; check that before comparing it") from None
        if out is None:
            raise ExerciseError("accept_circuit returned None: return True or False (a missing `return`?)")
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if type(out).__name__ not in ("bool", "bool_"):
            raise ExerciseError(f"accept_circuit should return True or False, got {type(out).__name__} {out!r}")
        got.append(float(bool(out)))
    got_t = torch.tensor(got)

    def each(f: Callable[[int | None, float, float, float], bool]) -> torch.Tensor:
        return torch.tensor([float(bool(f(*c))) for c in ACCEPT_CASES])

    _first_wrong("accept_circuit", got_t, each(pruning.accept_circuit), {
        "you accepted on the train loss: the train prompts chose the nodes, so they always look good; a circuit "
        "counts only if its held-out (test) loss reaches the target":
            each(lambda n, tr, te, t: n is not None and tr <= t),
        "a node set that never reached the target on the train prompts (train_nodes is None) is no circuit, "
        "even if its test loss happens to be low": each(lambda n, tr, te, t: te <= t),
        "reaching the target means test_loss <= target_loss (equal counts), not <": each(
            lambda n, tr, te, t: n is not None and te < t),
        "train_nodes = 0 is a circuit (zero nodes: the mean prediction does the task); test `train_nodes is not "
        "None`, not its truth value": each(lambda n, tr, te, t: bool(n) and te <= t),
        "the comparison is inverted: lower loss is better, so accept when test_loss <= target_loss":
            each(lambda n, tr, te, t: n is not None and te > t),
    }, lambda i: f"accept_circuit{ACCEPT_CASES[i]}")
    return "accept_circuit: correct (found on the train prompts and at most the target on held-out prompts)"


# --------------------------------------------------------------------------- exercise 6: the bisection on k


def _curve(n: int, cross: int, dip: int | None = None) -> list[float]:
    """A loss curve over ``k = 0..n``: 1.0 below ``cross``, 0.1 from it on, and (``dip``) a lone 0.1 at ``dip``
    (a non-monotone curve: a prefix that happens to reach the goal, as the real curves do)."""
    out = [1.0 if k < cross else 0.1 for k in range(n + 1)]
    if dip is not None:
        out[dip] = 0.1
    return out


SEARCH_CASES = [  # (curve, grid, goal, what the case tests)
    (_curve(64, 23), [0, 1, 2, 4, 8, 16, 32, 64], 0.2, "a crossing between two grid points"),
    (_curve(64, 50, dip=32), [0, 10, 20, 40, 64], 0.2, "a dip below the goal that no grid point sees"),
    (_curve(64, 70), [0, 1, 2, 4, 8, 16, 32, 64], 0.2, "no grid point reaches the goal"),
    (_curve(64, 16), [0, 1, 2, 4, 8, 16, 32, 64], 0.1, "the goal reached exactly at a grid point"),
    (_curve(64, 0), [0, 1, 2, 4, 8, 16, 32, 64], 0.2, "every k reaches the goal, even 0"),
    (_curve(1000, 731), [0, 10, 100, 600, 1000], 0.2, "a wide last interval"),
]


def check_smallest_k(fn: Callable) -> str:
    """``fn(loss_at, ks, goal) -> int | None``: the first grid interval that reaches the goal, halved down to the
    smallest ``k``; at most about ``log2`` of the interval's width evaluations besides the grid."""
    for curve, ks, goal, what in SEARCH_CASES:
        calls: list[int] = []

        def loss_at(k: int, curve: list[float] = curve, calls: list[int] = calls) -> float:
            calls.append(int(k))
            return curve[int(k)]

        try:
            got = fn(loss_at, list(ks), goal)
        except NotImplementedError:
            return NOT_ATTEMPTED
        ref = pruning.smallest_k(lambda k, curve=curve: curve[k], ks, goal)
        case = f"{what} (grid {ks}, goal {goal})"
        if ref is None:
            if got is not None:
                raise ExerciseError(f"smallest_k: for {case} return None (no grid point reaches the goal, so there "
                                    f"is no interval to bisect), not {got!r}")
            continue
        if got is None:
            raise ExerciseError(f"smallest_k returned None for {case}; the answer is {ref} (a missing `return`, or "
                                "the comparison `loss <= goal` written as `<`?)")
        if isinstance(got, torch.Tensor):
            got = got.item()
        if not isinstance(got, int) or isinstance(got, bool):
            raise ExerciseError(f"smallest_k should return an int (a number of nodes), got {type(got).__name__}")
        if got == ref - 1:
            raise ExerciseError(f"smallest_k: for {case} you return {got}, one below the answer {ref}: return `hi`, "
                                "the end of the interval whose loss reaches the goal, not `lo`")
        if got in ks and got != ref and got > ref:
            raise ExerciseError(f"smallest_k: for {case} you return the grid point {got}; the answer {ref} lies "
                                "between two grid points, so halve the interval [previous grid point, first grid point "
                                "reaching the goal] until it has width 1")
        if got != ref:
            hint = (" You bisected from k = 0 or across the whole range: the curve is not monotone, so start from "
                    "the first grid interval that reaches the goal." if "dip" in what else "")
            raise ExerciseError(f"smallest_k: for {case} you return {got}, the reference gives {ref}.{hint}")
        extra = len(set(calls) - set(ks))
        hits = [k for k in ks if curve[k] <= goal]
        width = hits[0] - max([k for k in ks if k < hits[0]], default=0) if hits else 1
        if extra > math.ceil(math.log2(max(width, 2))) + 1:
            raise ExerciseError(f"smallest_k: for {case} you evaluated {extra} counts off the grid; a bisection needs "
                                f"about log2({width}) = {math.log2(max(width, 2)):.1f} (each evaluation is a forward pass "
                                "on every prompt: scan k one by one and the search gets slow)")
    return "smallest_k: correct (the first grid interval reaching the goal, halved down to the smallest k)"
