"""Checkers for notebook 05's exercises: each runs the learner's function on small made-up inputs and names the mistake.

Same contract as the other lessons' checkers: a success message, :data:`~course_lib.exercises.NOT_ATTEMPTED`
while the function still raises ``NotImplementedError``, else :class:`~course_lib.exercises.ExerciseError`
with the likely mistake (a known wrong variant it matches) or the first input where it differs.

- :func:`check_matched_width`: the dense width a sparse model meets at matched loss
  (reference :func:`course_lib.capstone.matching.matched_width`).
- :func:`check_orient`: the polarity of a signed unit (reference :func:`course_lib.capstone.units.orient`).
- :func:`check_top_token_share`: the share of a unit's activation mass on its top token
  (reference :func:`course_lib.capstone.activity.top_token_share`).
- :func:`check_token_weights`: the k-token explanation of a unit from its train records
  (reference :func:`course_lib.capstone.explain.token_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from course_lib.autointerp.records import Record, UnitRecords
from course_lib.capstone import activity, explain, matching, units
from course_lib.exercises import NOT_ATTEMPTED, ExerciseError

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "check_matched_width", "check_orient", "check_token_weights",
           "check_top_token_share"]


def _call(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; ``NotImplementedError`` passes through (the caller reports NOT_ATTEMPTED)."""
    out = fn(*args)
    if out is None:
        raise ExerciseError(f"{name} returned None: return the result (a missing `return`?)")
    return out


def _diagnose(name: str, got: list[Any], cases: list[Any], ref: Callable[..., Any],
              wrong: dict[str, Callable[..., Any]], describe: Callable[[Any], str],
              same: Callable[[Any, Any], bool]) -> None:
    want = [ref(*c) for c in cases]
    if all(same(g, w) for g, w in zip(got, want)):
        return
    for hint, variant in wrong.items():
        if all(same(g, variant(*c)) for g, c in zip(got, cases)):
            raise ExerciseError(f"{name}: {hint}")
    i = next(i for i, (g, w) in enumerate(zip(got, want)) if not same(g, w))
    raise ExerciseError(f"{name}: wrong value for {describe(cases[i])}: you return {got[i]!r}, the reference gives "
                        f"{want[i]!r}")


# --------------------------------------------------------------------------- exercise 1: the matched width

WIDTHS = [(16, 3.98), (32, 3.56), (48, 3.33), (64, 3.19)]
WIDTH_CASES = [(3.40, WIDTHS), (3.71, WIDTHS), (4.15, WIDTHS), (3.56, WIDTHS), (3.10, WIDTHS),
               (3.30, [(64, 3.19), (16, 3.98), (48, 3.33), (32, 3.56)])]  # the last: unsorted widths


def check_matched_width(fn: Callable[[float, list[tuple[int, float]]], int]) -> str:
    """``fn(sparse_loss, widths) -> width``: the least capable dense width at least as capable."""
    got = []
    for loss, widths in WIDTH_CASES:
        try:
            out = _call("matched_width", fn, loss, list(widths))
        except NotImplementedError:
            return NOT_ATTEMPTED
        if isinstance(out, float) and out.is_integer():
            out = int(out)
        if not isinstance(out, int) or isinstance(out, bool):
            raise ExerciseError(f"matched_width should return a width (an int), got {type(out).__name__} {out!r}")
        got.append(out)

    def nearest(loss: float, widths: list[tuple[int, float]]) -> int:
        return min(widths, key=lambda wl: abs(wl[1] - loss))[0]

    def most_capable(loss: float, widths: list[tuple[int, float]]) -> int:
        return min(widths, key=lambda wl: wl[1])[0]

    def strict(loss: float, widths: list[tuple[int, float]]) -> int:
        c = [(lo, w) for w, lo in widths if lo < loss]
        return max(c)[1] if c else min((lo, w) for w, lo in widths)[1]

    def first(loss: float, widths: list[tuple[int, float]]) -> int:
        return next((w for w, lo in widths if lo <= loss), widths[-1][0])

    def widest_capable(loss: float, widths: list[tuple[int, float]]) -> int:
        c = [w for w, lo in widths if lo <= loss]
        return max(c) if c else min((lo, w) for w, lo in widths)[1]

    _diagnose("matched_width", got, WIDTH_CASES, matching.matched_width, {
        "you took the width with the nearest loss: it can be *less* capable than the sparse model (higher loss), "
        "which flatters the sparse side; keep only widths with L_w <= L_s, then the closest of those": nearest,
        "you took the most capable width (lowest loss) every time: among the widths at least as capable, take the "
        "least capable one (the highest L_w that is still <= L_s), the closest match": most_capable,
        "a width with exactly the sparse model's loss is at least as capable: use L_w <= L_s, not <": strict,
        "you took the first width in the list whose loss is low enough; the list is not sorted, so compare the "
        "losses of every capable width and keep the highest": first,
        "you took the widest capable width; widths are matched by loss, not by size": widest_capable,
    }, lambda c: f"matched_width({c[0]}, {c[1]})", lambda a, b: a == b)
    return "matched_width: correct (the least capable dense width with L_w <= L_s; the most capable when none is)"


# --------------------------------------------------------------------------- exercise 2: polarity


def _orient_cases() -> list[tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4000, generator=g) * 0.2
    pos_tail = base.clone()
    pos_tail[:20] += 5.0  # a few strong positive values: +1
    neg_tail = base.clone()
    neg_tail[:20] -= 5.0  # a few strong negative values: -1
    neg_tail_pos_mean = neg_tail + 0.3  # mostly positive, but its strong tail is negative: -1
    pos_tail_neg_mean = pos_tail - 0.3  # mostly negative, strong positive tail: +1
    one_outlier = base.clone()
    one_outlier[0] = 9.0  # one value is no tail: the 0.999 quantile does not see it
    one_outlier[1:30] -= 4.0  # 29 strong negative values: -1
    grid = neg_tail.reshape(40, 100)  # any shape: [windows, pos]
    return [(x,) for x in (pos_tail, neg_tail, neg_tail_pos_mean, pos_tail_neg_mean, one_outlier, grid)]


ORIENT_CASES = _orient_cases()


def check_orient(fn: Callable[[torch.Tensor], int]) -> str:
    """``fn(acts) -> +1 or -1``: the sign whose strong tail (0.999 quantile) is larger."""
    got = []
    for (a,) in ORIENT_CASES:
        try:
            out = _call("orient", fn, a.clone())
        except NotImplementedError:
            return NOT_ATTEMPTED
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if out not in (1, -1) or isinstance(out, bool):
            raise ExerciseError(f"orient should return +1 or -1 (an int), got {type(out).__name__} {out!r}")
        got.append(int(out))
    _diagnose("orient", got, ORIENT_CASES, units.orient, {
        "you took the sign of the mean: a unit can sit slightly positive most of the time and fire strongly "
        "negative; the explainer reads the strong tail, so compare the 0.999 quantiles of a and of -a":
            lambda a: 1 if float(a.float().mean()) >= 0 else -1,
        "you compared the maximum and the minimum: one extreme value is not a tail; compare the 0.999 quantiles":
            lambda a: 1 if float(a.max()) >= float(-a.min()) else -1,
        "the sign is inverted: return +1 when the positive tail is the larger one":
            lambda a: -units.orient(a),
        "you counted positive and negative values; compare how far the tails reach (0.999 quantiles)":
            lambda a: 1 if int((a > 0).sum()) >= int((a < 0).sum()) else -1,
    }, lambda c: f"a tensor of shape {tuple(c[0].shape)}", lambda a, b: a == b)
    return "orient: correct (+1 when the 0.999 quantile of a is at least that of -a)"


# --------------------------------------------------------------------------- exercise 3: the top-token share

SHARE_CASES = [
    (torch.tensor([1.0, 0.0, 2.0, 1.0, 0.0]), torch.tensor([7, 3, 5, 7, 3])),  # tokens 7: 2, 5: 2 -> 0.5
    (torch.tensor([3.0, -5.0, 1.0, 0.5]), torch.tensor([4, 9, 4, 2])),  # negatives are no mass: 4/4.5
    (torch.tensor([0.2, 0.2, 0.2, 3.0]), torch.tensor([1, 1, 1, 2])),  # mass, not counts: 3/3.6
    (torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([1, 2, 3])),  # never fires: 0
    (torch.tensor([0.5, 0.5, 1.0, 0.0, 2.0, 1.0]), torch.tensor([1500, 3, 1500, 3, 2040, 2040])),  # large ids
]


def check_top_token_share(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> str:
    """``fn(acts, ids) -> float``: the share of ``relu(acts)``'s mass on the heaviest id."""
    got = []
    for a, ids in SHARE_CASES:
        try:
            out = _call("top_token_share", fn, a.clone(), ids.clone())
        except NotImplementedError:
            return NOT_ATTEMPTED
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if not isinstance(out, (int, float)) or isinstance(out, bool):
            raise ExerciseError(f"top_token_share should return a float, got {type(out).__name__} {out!r}")
        if math.isnan(float(out)):
            raise ExerciseError("top_token_share returned NaN: a unit that never fires has share 0 (no mass)")
        got.append(float(out))

    def no_relu(a: torch.Tensor, ids: torch.Tensor) -> float:
        tot = float(a.sum())
        if tot == 0:
            return 0.0
        return max(float(a[ids == v].sum()) for v in ids.unique()) / tot

    def counts(a: torch.Tensor, ids: torch.Tensor) -> float:
        m = a.clamp(min=0)
        if float(m.sum()) <= 0:
            return 0.0
        active = ids[m > 0]
        return max(int((active == v).sum()) for v in active.unique()) / int(active.numel())

    def top_position(a: torch.Tensor, ids: torch.Tensor) -> float:
        m = a.clamp(min=0)
        return float(m.max()) / float(m.sum()) if float(m.sum()) > 0 else 0.0

    def unnormalised(a: torch.Tensor, ids: torch.Tensor) -> float:
        m = a.clamp(min=0)
        return max(float(m[ids == v].sum()) for v in ids.unique())

    _diagnose("top_token_share", got, SHARE_CASES, activity.top_token_share, {
        "negative activations are no mass: take relu(acts) (acts.clamp(min=0)) before summing": no_relu,
        "you counted positions where the unit fires; weight each position by its activation (its mass)": counts,
        "you took the single largest activation over the total; add up the mass of every position with the same "
        "token first": top_position,
        "divide the top token's mass by the unit's total mass (a share, at most 1)": unnormalised,
    }, lambda c: f"acts={c[0].tolist()}, ids={c[1].tolist()}", lambda a, b: abs(a - b) < 1e-5)
    return "top_token_share: correct (relu mass summed per token, the top token's share of the total)"


# --------------------------------------------------------------------------- exercise 4: the k-token explanation


def _unit(rows: list[list[tuple[str, float]]]) -> UnitRecords:
    recs = [Record(i, "top", list(range(len(r))), [s for s, _ in r], [a for _, a in r]) for i, r in enumerate(rows)]
    return UnitRecords("u", "neuron", max((a for r in rows for _, a in r), default=0.0), recs, [], [])


TOKEN_CASES = [
    # "(" carries most mass (3.0 over 4 occurrences: mean 0.75); " def" 2.0 over 1 (mean 2.0); "x" 1.0 over 5
    (_unit([[("(", 1.0), ("x", 0.2), (" def", 2.0), ("(", 0.0)], [("(", 1.0), ("x", 0.2), ("x", 0.2), ("(", 1.0)],
            [("x", 0.2), ("x", 0.2), ("y", 0.0)]]), 2),
    (_unit([[("a", 0.5), ("b", 0.4), ("c", 0.3)], [("a", 0.5), ("d", 0.0)]]), 1),
    (_unit([[("a", 0.5), ("b", 0.4), ("c", 0.3)], [("a", 0.5), ("d", 0.0)]]), 5),  # only 3 tokens ever fire
    (_unit([[("a", 0.3)] * 5 + [("b", 0.9)]]), 1),  # a: mass 1.5, mean 0.3; b: mass 0.9, mean 0.9 -> a
    (_unit([[("a", 0.0), ("b", 0.0)]]), 3),  # never fires: the empty explanation
]


def check_token_weights(fn: Callable[[UnitRecords, int], dict[str, float]]) -> str:
    """``fn(ur, k) -> {token string: weight}``: the ``k`` heaviest tokens by mass, each with its mean activation."""
    got = []
    for ur, k in TOKEN_CASES:
        try:
            out = _call("token_weights", fn, ur, k)
        except NotImplementedError:
            return NOT_ATTEMPTED
        if not isinstance(out, dict):
            raise ExerciseError(f"token_weights should return a dict {{token string: weight}}, got {type(out).__name__}")
        got.append({str(s): round(float(v), 6) for s, v in out.items()})

    def variant(rank: str = "mass", weight: str = "mean", k_shift: int = 0, zeros: bool = False
                ) -> Callable[[UnitRecords, int], dict[str, float]]:
        def f(ur: UnitRecords, k: int) -> dict[str, float]:
            mass: dict[str, float] = {}
            count: dict[str, int] = {}
            active: dict[str, int] = {}
            for r in ur.train:
                for s, a in zip(r.strings, r.acts):
                    count[s] = count.get(s, 0) + 1
                    mass[s] = mass.get(s, 0.0) + float(a)
                    active[s] = active.get(s, 0) + int(a > 0)
            key = {"mass": lambda s: mass[s], "mean": lambda s: mass[s] / count[s], "count": lambda s: count[s]}[rank]
            names = [s for s in mass if zeros or mass[s] > 0]
            top = sorted(names, key=lambda s: -key(s))[:max(0, k + k_shift)]
            val = {"mean": lambda s: mass[s] / count[s], "sum": lambda s: mass[s],
                   "active": lambda s: mass[s] / max(active[s], 1)}[weight]
            return {s: round(val(s), 6) for s in top}
        return f

    def same(a: dict[str, float], b: dict[str, float]) -> bool:
        return a.keys() == b.keys() and all(abs(a[s] - b[s]) < 1e-5 for s in a)

    ref = lambda ur, k: {s: round(v, 6) for s, v in explain.token_weights(ur, k).items()}  # noqa: E731
    _diagnose("token_weights", got, TOKEN_CASES, ref, {
        "you ranked the tokens by their mean activation; rank them by their activation mass (the sum), which is what "
        "the explainer names, then give each its mean": variant(rank="mean"),
        "you ranked the tokens by how often they occur; rank them by activation mass": variant(rank="count"),
        "the weights are sums of activation; each listed token's weight is its mean over all its occurrences "
        "(mass / count)": variant(weight="sum"),
        "you averaged only over the occurrences where the unit fires; divide the mass by every occurrence of the "
        "token, silent ones included (the simulator predicts w_t at every occurrence)": variant(weight="active"),
        "a token that never fires (mass 0) is not part of an explanation: keep only tokens with positive mass":
            variant(zeros=True),
        "you kept k + 1 tokens": variant(k_shift=1),
        "you kept k - 1 tokens": variant(k_shift=-1),
    }, lambda c: f"a unit with train records {[list(zip(r.strings, r.acts)) for r in c[0].train]}, k={c[1]}", same)
    return "token_weights: correct (the k tokens of largest activation mass, each with its mean activation)"
