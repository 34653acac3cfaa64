"""Checkers for notebook 04's exercises: each runs the learner's function on small made-up inputs and names the mistake.

Same contract as :mod:`course_lib.toy.exercises`: a success message, :data:`~course_lib.exercises.NOT_ATTEMPTED`
while the function still raises ``NotImplementedError``, else :class:`~course_lib.exercises.ExerciseError`
with the likely mistake (a known wrong variant it matches) or the first input where it differs. The inputs
are plain Python lists, as the notebook passes them (a record's ``acts``, a result's stored predictions).

- :func:`check_discretise`: the explainer's 0-10 scale, ``min(10, floor(10 * relu(a) / max_act))``
  (reference :func:`course_lib.autointerp.records.discretise`).
- :func:`check_pooled_correlation`: Pearson r over all tokens of all records pooled, NaN when undefined
  (reference :func:`course_lib.autointerp.scoring.pooled_correlation`).
- :func:`check_auroc`: P(score of a positive > score of a negative), ties counting 1/2
  (reference :func:`course_lib.autointerp.scoring.auroc`).
- :func:`check_balanced_accuracy`: ``(TPR + TNR) / 2`` of ``score > threshold``
  (reference :func:`course_lib.autointerp.scoring.balanced_accuracy`).
- :func:`check_expected_activation`: the all-at-once simulator's prediction, the expected value of the softmax of
  the value tokens' log-probabilities renormalised over the values ``0 .. S``
  (reference :func:`course_lib.autointerp.simulator.expected_values`).
- :func:`check_detection_questions`: the detection scorer's questions and labels for a unit's test records
  (reference :func:`course_lib.autointerp.scoring.detection_questions`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from course_lib.autointerp import records, scoring, simulator
from course_lib.exercises import NOT_ATTEMPTED, ExerciseError

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "check_auroc", "check_balanced_accuracy", "check_detection_questions",
           "check_discretise", "check_expected_activation", "check_pooled_correlation"]


def _quiet(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` without numpy's warnings (0/0 is expected in the undefined cases)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args)


def _number(name: str, out: object, *, undefined_ok: bool = False) -> float:
    """The learner's return value as a float; None is NaN where the value is undefined (``undefined_ok``)."""
    if out is None:
        if undefined_ok:
            return math.nan
        raise ExerciseError(f"{name} returned None: return the number (a missing `return`?)")
    if hasattr(out, "numel") and out.numel() == 1:  # a one-element torch tensor
        out = out.item()
    if isinstance(out, np.ndarray) and out.size == 1:
        out = out.item()
    if isinstance(out, (bool, np.bool_)) or not isinstance(out, (int, float, np.integer, np.floating)):
        raise ExerciseError(f"{name} should return one number (a float), got {type(out).__name__} {str(out)[:60]}")
    return float(out)


def _same(a: Sequence[float], b: Sequence[float], tol: float = 1e-6) -> bool:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=tol, atol=tol, equal_nan=True))


def _diagnose(name: str, got: list[float], ref: list[float], wrong: dict[str, list[float]],
              describe: Callable[[int], str], wrong_where: tuple[list[bool], str] | None = None) -> None:
    """Return if ``got`` matches ``ref`` case by case; else the hint of the wrong variant it matches, or the
    first case that differs. ``wrong_where = (flags, hint)``: ``hint`` when only flagged cases differ."""
    if _same(got, ref):
        return
    for hint, variant in wrong.items():
        if _same(got, variant):
            raise ExerciseError(f"{name}: {hint}")
    if wrong_where is not None:
        flags, hint = wrong_where
        if all(f or _same([g], [r]) for f, g, r in zip(flags, got, ref)):
            raise ExerciseError(f"{name}: {hint}")
    i = next(i for i, (g, r) in enumerate(zip(got, ref)) if not _same([g], [r]))
    raise ExerciseError(f"{name}: wrong value for {describe(i)}: you return {got[i]:.4g}, the reference gives {ref[i]:.4g}")


def _undefined(name: str, fn: Callable[..., Any], args: tuple[Any, ...], why: str) -> None:
    """The learner's value on an input where the metric is undefined must be NaN (or None)."""
    try:
        out = _quiet(fn, *args)
    except (ZeroDivisionError, FloatingPointError, ValueError, IndexError, RuntimeError) as e:
        raise ExerciseError(f"{name} raised {type(e).__name__} ({e}) when {why}: check for that case and return "
                            "float('nan') (or None)") from None
    v = _number(name, out, undefined_ok=True)
    if not math.isnan(v):
        raise ExerciseError(f"{name} returned {v:.4g} when {why}: the value is undefined there; return float('nan') "
                            "(or None), which the summaries count as missing. A number would be averaged in as a "
                            "real score")


def _describe_args(*args: Any) -> str:
    return ", ".join(repr(a) if not isinstance(a, list) or len(a) < 12 else f"[{len(a)} values]" for a in args)


# --------------------------------------------------------------------------- exercise 1: discretisation

DISCRETISE_CASES = [  # (acts, max_act): the unit's largest activation over all its windows
    ([-1.5, 0.0, 0.21, 0.55, 1.0, 1.39, 1.99, 2.0], 2.0),  # negatives, level edges, the maximum itself
    ([0.0, 0.3, 1.0, 0.6, 0.05], 4.0),  # a weak record: its own maximum is far below the unit's
    ([0.5, 3.0, 6.0, -0.2], 2.0),  # new text can go above max_act: clip at 10
]
DEAD = ([0.0, -0.3, 0.0, -1.2], 0.0)  # a dead unit: max_act 0


def _levels(acts: list[float], max_act: float, *, relu: bool = True, own_max: bool = False, clip: bool = True,
            rounding: Callable[[np.ndarray], np.ndarray] = np.floor) -> np.ndarray:
    """The scale and its likely mistakes."""
    a = np.asarray(acts, dtype=np.float64)
    if relu:
        a = np.maximum(a, 0.0)
    m = max(acts) if own_max else max_act
    d = rounding(10.0 * a / m)
    return np.minimum(10, d) if clip else d


def check_discretise(fn: Callable[[list[float], float], Any]) -> str:
    """``fn(acts, max_act) -> levels``: one whole number 0..10 per activation (a list, array or tensor)."""
    got, cases = [], []
    for acts, max_act in DISCRETISE_CASES:
        try:
            out = _quiet(fn, list(acts), max_act)
        except NotImplementedError:
            return NOT_ATTEMPTED
        if out is None:
            raise ExerciseError("discretise returned None: return the levels (a missing `return`?)")
        try:
            levels = np.asarray(out.tolist() if hasattr(out, "tolist") else list(out), dtype=np.float64)
        except (TypeError, ValueError):
            raise ExerciseError(f"discretise should return one level per activation (a list or an array), got "
                                f"{type(out).__name__}") from None
        if levels.shape != (len(acts),):
            raise ExerciseError(f"discretise returned {levels.size} values for {len(acts)} activations: one level per "
                                "activation")
        got += levels.tolist()
        cases += [(a, max_act) for a in acts]
    ref = np.concatenate([records.discretise(a, m) for a, m in DISCRETISE_CASES]).astype(np.float64).tolist()

    def each(**kw: Any) -> list[float]:
        return np.concatenate([_levels(a, m, **kw) for a, m in DISCRETISE_CASES]).tolist()

    if min(got) < 0:
        raise ExerciseError("discretise: a negative activation must give level 0, not a negative level: apply the "
                            "ReLU first, max(a, 0) (the scale only says how strongly the unit fires)")
    _diagnose("discretise", got, ref, {
        "you divided by the record's own maximum; divide by max_act, the unit's largest activation over all its "
        "windows, so that a weak record shows low levels (the explainer compares records on one scale)":
            each(own_max=True),
        "you rounded to the nearest level; the scale floors: floor(10 * a / max_act)": each(rounding=np.round),
        "you rounded up; the scale floors: floor(10 * a / max_act)": each(rounding=np.ceil),
        "levels above 10: an activation above max_act (on new text) must be clipped, min(10, ...)": each(clip=False),
        "no floor: levels are whole numbers, floor(10 * a / max_act)": each(rounding=lambda x: x),
        "you forgot the factor 10: the scale runs from 0 to 10, floor(10 * a / max_act)":
            np.concatenate([np.floor(np.maximum(np.asarray(a), 0) / m) for a, m in DISCRETISE_CASES]).tolist(),
    }, lambda i: f"activation {cases[i][0]} with max_act {cases[i][1]}")
    acts, max_act = DEAD
    try:
        out = _quiet(fn, list(acts), max_act)
        dead = np.asarray(out.tolist() if hasattr(out, "tolist") else list(out), dtype=np.float64)
    except (ZeroDivisionError, FloatingPointError, ValueError, TypeError) as e:
        raise ExerciseError(f"discretise raised {type(e).__name__} ({e}) for max_act = 0: a dead unit (it never fires) "
                            "must give all zeros; check max_act <= 0 before dividing") from None
    if dead.shape != (len(acts),) or not np.array_equal(dead, np.zeros(len(acts))):
        raise ExerciseError(f"discretise({acts}, max_act=0.0) gave {dead.tolist()}: a dead unit (max_act <= 0) must "
                            "give all zeros (you divided by zero?)")
    return "discretise: correct (ReLU, the unit's max_act, times 10, floor, clipped at 10; a dead unit gives zeros)"


# --------------------------------------------------------------------------- exercise 2: pooled correlation

CORRELATION_CASES = [  # (real, simulated): one list per test record, records of different lengths
    ([[0.0, 0.1, 2.5, 4.0, 0.0], [0.0, 0.3, 0.0], [0.2, 0.0, 0.1, 0.0]],
     [[0.0, 1.0, 6.0, 9.0, 1.0], [3.0, 2.0, 2.5], [0.0, 1.0, 0.0, 2.0]]),
    ([[0.0, 1.2, 3.1, 0.0], [0.0, 0.0, 0.0]],  # the unit is silent on the random record: no per-record r there
     [[1.0, 3.0, 8.0, 0.0], [0.0, 2.0, 1.0]]),
    ([[0.0, 2.0, 0.5], [1.5, 0.0, 0.0, 3.0]],  # an explanation that predicts the opposite: r < 0
     [[7.0, 1.0, 5.0], [2.0, 6.0, 8.0, 0.0]]),
]
CONSTANT_SIMULATION = ([[0.0, 2.0, 0.5], [1.5, 0.0]], [[5.0, 5.0, 5.0], [5.0, 5.0]])
CONSTANT_REAL = ([[0.0, 0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0, 3.0], [0.0, 2.0]])


def _flat(rows: list[list[float]]) -> np.ndarray:
    return np.concatenate([np.asarray(r, dtype=np.float64) for r in rows])


def _pearson(a: np.ndarray, s: np.ndarray) -> float:
    a, s = a - a.mean(), s - s.mean()
    return float((a * s).sum() / np.sqrt((a * a).sum() * (s * s).sum()))


def check_pooled_correlation(fn: Callable[[list[list[float]], list[list[float]]], Any]) -> str:
    """``fn(real, simulated) -> r``: lists of per-record lists; NaN (or None) when either side is constant."""
    got = []
    for real, sim in CORRELATION_CASES:
        try:
            out = _quiet(fn, [list(r) for r in real], [list(s) for s in sim])
        except NotImplementedError:
            return NOT_ATTEMPTED
        except (ValueError, TypeError, IndexError) as e:
            raise ExerciseError(f"pooled_correlation raised {type(e).__name__} ({e}) on records of different lengths "
                                f"({', '.join(str(len(r)) for r in real)} tokens): concatenate all records into one "
                                "sequence of tokens first, for real and for simulated") from None
        got.append(_number("pooled_correlation", out, undefined_ok=True))

    def each(f: Callable[[list[list[float]], list[list[float]]], float]) -> list[float]:
        return [float(_quiet(f, real, sim)) for real, sim in CORRELATION_CASES]

    def per_record(real: list[list[float]], sim: list[list[float]]) -> list[float]:
        return [_pearson(np.asarray(a, dtype=np.float64), np.asarray(s, dtype=np.float64)) for a, s in zip(real, sim)]

    def centred_per_record(real: list[list[float]], sim: list[list[float]]) -> float:
        a = np.concatenate([np.asarray(r) - np.mean(r) for r in real])
        s = np.concatenate([np.asarray(r) - np.mean(r) for r in sim])
        return float((a * s).sum() / np.sqrt((a * a).sum() * (s * s).sum()))

    def cosine(real: list[list[float]], sim: list[list[float]]) -> float:
        a, s = _flat(real), _flat(sim)
        return float((a * s).sum() / np.sqrt((a * a).sum() * (s * s).sum()))

    ref = each(lambda r, s: scoring.pooled_correlation(r, s))
    averaged = "you averaged per-record correlations; pool instead: concatenate all tokens of all records and compute " \
               "one Pearson r (a record where the unit is silent has no r of its own, and short records would weigh " \
               "as much as long ones)"
    if any(math.isnan(g) for g in got) and not any(math.isnan(r) for r in ref):
        i = next(i for i, g in enumerate(got) if math.isnan(g))
        if i == 1:
            raise ExerciseError(f"pooled_correlation: NaN on case {i}, where the pooled tokens vary on both sides: {averaged}")
        raise ExerciseError(f"pooled_correlation: NaN on case {i}, where the pooled tokens vary on both sides and r is "
                            "defined")
    _diagnose("pooled_correlation", got, ref, {
        averaged: each(lambda r, s: float(np.nanmean(per_record(r, s)))),
        "you centred each record on its own mean before pooling; pooled Pearson r subtracts one mean over all tokens "
        "(a record that is active on average is part of the signal)": each(centred_per_record),
        "you did not subtract the means (that is the cosine similarity); r = sum (a - a_bar)(s - s_bar) / "
        "sqrt(sum (a - a_bar)^2 sum (s - s_bar)^2)": each(cosine),
        "you returned the covariance; divide by both standard deviations (r is between -1 and 1)":
            each(lambda r, s: float(np.cov(_flat(r), _flat(s), bias=True)[0, 1])),
        "you returned the covariance (ddof=1); divide by both standard deviations (r is between -1 and 1)":
            each(lambda r, s: float(np.cov(_flat(r), _flat(s))[0, 1])),
        "you returned r squared; the score is r itself (its sign says whether the explanation predicts the "
        "activations or their opposite)": [v * v for v in ref],
        "you returned |r|; the score keeps the sign (an explanation that predicts the opposite scores below 0)":
            [abs(v) for v in ref],
    }, lambda i: f"case {i} ({len(CORRELATION_CASES[i][0])} records)")
    for (real, sim), why in ((CONSTANT_SIMULATION, "the simulation is constant"),
                             (CONSTANT_REAL, "the real activations are constant (the unit is silent)")):
        _undefined("pooled_correlation", fn, ([list(r) for r in real], [list(s) for s in sim]), why)
    return "pooled_correlation: correct (one Pearson r over all tokens pooled; NaN when a side is constant)"


# --------------------------------------------------------------------------- exercise 3: AUROC

AUROC_CASES = [  # (labels, scores): label 1 for a top-activating record, 0 for a random one
    ([1, 0, 1, 1, 0, 0, 1, 0], [0.9, 0.3, 0.7, 0.4, 0.6, 0.1, 0.8, 0.35]),  # no ties
    ([1, 1, 0, 0, 1, 0], [0.9, 0.5, 0.5, 0.2, 0.5, 0.1]),  # ties between top and random records
    ([1, 1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5, 0.5]),  # a constant predictor: exactly 0.5
    ([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2]),  # every random record above every top one: 0
    ([0, 1, 0, 0, 0, 1, 0], [0.2, 0.6, 0.6, 0.1, 0.6, 0.3, 0.05]),  # 2 top vs 5 random, with ties
]
ONE_CLASS = ([1, 1, 1], [0.2, 0.5, 0.9])  # no random record


def _pairs(labels: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    return s[y][:, None], s[~y][None, :]  # [n_pos, 1], [1, n_neg]


def _has_ties(labels: list[int], scores: list[float]) -> bool:
    pos, neg = _pairs(labels, scores)
    return bool((pos == neg).any())


def check_auroc(fn: Callable[[list[int], list[float]], Any]) -> str:
    """``fn(labels, scores) -> AUROC``: P(a positive scores above a negative), ties 1/2; NaN (or None) for one class."""
    got = []
    for y, s in AUROC_CASES:
        try:
            out = _quiet(fn, list(y), list(s))
        except NotImplementedError:
            return NOT_ATTEMPTED
        got.append(_number("auroc", out))

    def each(f: Callable[[list[int], list[float]], float]) -> list[float]:
        return [float(_quiet(f, y, s)) for y, s in AUROC_CASES]

    def ordinal(y: list[int], s: list[float]) -> float:  # ranks without averaging ties
        ranks = np.argsort(np.argsort(np.asarray(s), kind="stable"), kind="stable") + 1.0
        yy = np.asarray(y, dtype=bool)
        n_pos, n_neg = int(yy.sum()), int((~yy).sum())
        return float((ranks[yy].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

    def u(y: list[int], s: list[float]) -> float:
        pos, neg = _pairs(y, s)
        return float((pos > neg).sum() + 0.5 * (pos == neg).sum())

    def n_pairs(y: list[int]) -> int:
        return sum(y) * (len(y) - sum(y))

    def accuracy(y: list[int], s: list[float]) -> float:
        return float(np.mean((np.asarray(s) > 0.5) == np.asarray(y, dtype=bool)))

    ref = each(lambda y, s: scoring.auroc(y, s))
    ties = "ties are not handled right: where a top and a random record score the same, the pair counts 1/2 " \
           "(average ranks in the Mann-Whitney form), so that a constant predictor scores exactly 0.5 (chance)"
    _diagnose("auroc", got, ref, {
        "ties count 0: a tie between a top and a random record must count 1/2 (average ranks in the Mann-Whitney "
        "form), so that a constant predictor scores exactly 0.5 (chance)":
            each(lambda y, s: float((_pairs(y, s)[0] > _pairs(y, s)[1]).mean())),
        "ties count 1: a tie between a top and a random record must count 1/2 (average ranks), so that a constant "
        "predictor scores exactly 0.5 (chance)": each(lambda y, s: float((_pairs(y, s)[0] >= _pairs(y, s)[1]).mean())),
        "ties are not given average ranks: tied scores must share the mean of their ranks (scipy.stats.rankdata's "
        "default), else the order of the records decides a tie": each(ordinal),
        "that is the accuracy at threshold 0.5, not the area under the ROC curve: compare every top record's score "
        "with every random record's, P(top > random) + 1/2 P(tie); AUROC needs no threshold": each(accuracy),
        "that is the balanced accuracy at threshold 0.5, not the area under the ROC curve: compare every top "
        "record's score with every random record's; AUROC needs no threshold":
            each(lambda y, s: scoring.balanced_accuracy(y, s)),
        "inverted: AUROC is the probability that a top record (label 1) scores above a random one (label 0); yours "
        "is the other way round": [1.0 - v for v in ref],
        "you returned the Mann-Whitney U (a count of pairs); divide it by n_pos * n_neg": each(u),
        "you divided the rank sum of the positives by n_pos * n_neg without first subtracting n_pos (n_pos + 1) / 2 "
        "(the smallest rank sum they can have)": [v + sum(y) * (sum(y) + 1) / 2 / n_pairs(y) for v, (y, _)
                                                  in zip(ref, AUROC_CASES)],
    }, lambda i: f"auroc({_describe_args(*AUROC_CASES[i])})", ([_has_ties(*c) for c in AUROC_CASES], ties))
    _undefined("auroc", fn, (list(ONE_CLASS[0]), list(ONE_CLASS[1])), "every label is 1 (no random record to compare)")
    return "auroc: correct (P(top > random) with ties counting 1/2; NaN with one class)"


# --------------------------------------------------------------------------- exercise 4: balanced accuracy

BACC_CASES = [  # (labels, scores, threshold)
    ([1, 1, 0, 0, 0, 0, 0, 0], [0.9, 0.4, 0.6, 0.1, 0.2, 0.3, 0.45, 0.05], 0.5),  # 2 top vs 6 random
    ([1, 0, 1, 0, 0, 1], [0.5, 0.2, 0.7, 0.4, 0.1, 0.3], 0.5),  # a top record exactly at the threshold
    ([1, 1, 0, 0, 0], [0.35, 0.2, 0.1, 0.32, 0.25], 0.3),  # another threshold
]
BACC_ONE_CLASS = ([0, 0, 0], [0.2, 0.7, 0.1], 0.5)


def check_balanced_accuracy(fn: Callable[[list[int], list[float], float], Any]) -> str:
    """``fn(labels, scores, threshold) -> (TPR + TNR) / 2`` of the prediction ``score > threshold``."""
    got = []
    for y, s, t in BACC_CASES:
        try:
            out = _quiet(fn, list(y), list(s), t)
        except NotImplementedError:
            return NOT_ATTEMPTED
        got.append(_number("balanced_accuracy", out))

    def each(f: Callable[[np.ndarray, np.ndarray, float], float]) -> list[float]:
        return [float(_quiet(f, np.asarray(y, dtype=bool), np.asarray(s, dtype=np.float64), t))
                for y, s, t in BACC_CASES]

    def bacc(y: np.ndarray, pred: np.ndarray) -> float:
        return 0.5 * ((pred & y).sum() / y.sum() + (~pred & ~y).sum() / (~y).sum())

    ref = [float(scoring.balanced_accuracy(y, s, t)) for y, s, t in BACC_CASES]
    _diagnose("balanced_accuracy", got, ref, {
        "that is the plain accuracy; balanced accuracy averages the accuracy on each class, (TPR + TNR) / 2, so "
        "that a predictor that says No to everything scores 0.5 however few top records there are":
            each(lambda y, s, t: float(((s > t) == y).mean())),
        "a score equal to the threshold must predict No: the prediction is score > threshold (strict)":
            each(lambda y, s, t: bacc(y, s >= t)),
        "you ignored the threshold argument (0.5 hard-coded?): predict score > threshold":
            each(lambda y, s, t: bacc(y, s > 0.5)),
        "that is the true-positive rate (recall) only; average it with the true-negative rate":
            each(lambda y, s, t: float((s > t)[y].mean())),
        "that is the true-negative rate only; average it with the true-positive rate":
            each(lambda y, s, t: float((~(s > t))[~y].mean())),
        "inverted prediction: a score above the threshold means Yes (label 1)": each(lambda y, s, t: bacc(y, s < t)),
    }, lambda i: f"balanced_accuracy({_describe_args(*BACC_CASES[i])})")
    _undefined("balanced_accuracy", fn, (list(BACC_ONE_CLASS[0]), list(BACC_ONE_CLASS[1]), BACC_ONE_CLASS[2]),
               "every label is 0 (no top record: the true-positive rate is 0/0)")
    return "balanced_accuracy: correct ((TPR + TNR) / 2 of score > threshold; NaN with one class)"


# --------------------------------------------------------------------------- exercise 5: the simulator's expected value


def _expected_cases() -> list[tuple[np.ndarray, list[int]]]:
    """(logprobs [n_tokens, vocab], value_ids): a vocabulary of 16 tokens with the values "0".."10" at shuffled ids;
    normalised log-probabilities with 25-90% of the mass on the values, the same shifted by a constant per token
    (logits), and a tokenizer with values "0".."9" only."""
    rng = np.random.default_rng(4)
    ids11 = [int(i) for i in rng.permutation(16)[:11]]
    logits = rng.normal(0.0, 1.5, (4, 16))
    logits[:, [i for i in range(16) if i not in ids11]] += np.array([[2.5], [0.5], [1.5], [-1.0]])  # mass elsewhere
    lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    shifted = lp[:3] + np.array([[4.0], [-3.0], [1.5]])
    ids10 = [int(i) for i in rng.permutation(16)[:10]]
    lp10 = rng.normal(0.0, 1.0, (2, 16))
    lp10 -= np.log(np.exp(lp10).sum(1, keepdims=True))
    return [(lp, ids11), (shifted, ids11), (lp10, ids10)]


def _expectations(variant: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[float]:
    """``variant(logprobs, value_ids)`` on every case, concatenated."""
    return np.concatenate([variant(lp, np.asarray(ids)) for lp, ids in _expected_cases()]).tolist()


def _softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def check_expected_activation(fn: Callable[[np.ndarray, list[int]], Any]) -> str:
    """``fn(logprobs [n_tokens, vocab], value_ids) -> [n_tokens]`` expected values on the scale 0..S."""
    got = []
    cases = _expected_cases()
    for c, (lp, ids) in enumerate(cases):
        try:
            out = _quiet(fn, lp.copy(), list(ids))
        except NotImplementedError:
            return NOT_ATTEMPTED
        except (ValueError, IndexError) as e:
            hint = ("the values are 0, 1, ..., S, one per value token: np.arange(len(value_ids)), not a fixed 11 "
                    "(a tokenizer that splits \"10\" has the 10 values 0..9)" if c == 2 else
                    "one value per value token, 0 for value_ids[0] up to S for the last: np.arange(len(value_ids))")
            raise ExerciseError(f"expected_activation raised {type(e).__name__} ({e}): {hint}") from None
        if out is None:
            raise ExerciseError("expected_activation returned None: return one expected value per token "
                                "(a missing `return`?)")
        try:
            v = np.asarray(out.tolist() if hasattr(out, "tolist") else list(out), dtype=np.float64)
        except (TypeError, ValueError):
            raise ExerciseError(f"expected_activation should return one number per token, got {type(out).__name__}") from None
        if v.shape != (lp.shape[0],):
            raise ExerciseError(f"expected_activation returned shape {v.shape} for {lp.shape[0]} tokens: one expected "
                                "value per token (sum over the values, not a distribution per token)")
        got += v.tolist()
    ref = _expectations(lambda lp, ids: simulator.expected_values(lp, ids))
    flags = [c == 1 for c, (lp, _) in enumerate(cases) for _ in range(lp.shape[0])]

    def vals(ids: np.ndarray) -> np.ndarray:
        return np.arange(len(ids), dtype=np.float64)

    _diagnose("expected_activation", got, ref, {
        "a softmax over the whole vocabulary, then the values' probabilities: they sum to less than 1 (the other "
        "tokens hold the rest), so the expectation shrinks; renormalise over the S + 1 values only, "
        "softmax(logprobs[:, value_ids])": _expectations(lambda lp, ids: _softmax(lp)[:, ids] @ vals(ids)),
        "you forgot to renormalise: exp(log-probability) of the values does not sum to 1; divide by its sum over the "
        "S + 1 values (a softmax over logprobs[:, value_ids])": _expectations(lambda lp, ids: np.exp(lp[:, ids]) @ vals(ids)),
        "you used the log-probabilities as if they were probabilities: exponentiate first, p = softmax(logprobs[:, "
        "value_ids])": _expectations(lambda lp, ids: (lp[:, ids] / lp[:, ids].sum(1, keepdims=True)) @ vals(ids)),
        "you weighted the values by the log-probabilities themselves: they are logs, exponentiate and renormalise, "
        "p = softmax(logprobs[:, value_ids])": _expectations(lambda lp, ids: lp[:, ids] @ vals(ids)),
        "off by one: the values run from 0 (value_ids[0] is the token \"0\") to S, np.arange(len(value_ids))":
            _expectations(lambda lp, ids: _softmax(lp[:, ids]) @ (vals(ids) + 1)),
        "the values are 0..S, and value_ids[v] is the token of value v: you reversed them":
            _expectations(lambda lp, ids: _softmax(lp[:, ids]) @ vals(ids)[::-1]),
        "the argmax (the most likely value) instead of the expectation sum_v v p(v): the expectation keeps the "
        "simulator's uncertainty, and a correlation needs graded predictions":
            _expectations(lambda lp, ids: np.argmax(lp[:, ids], axis=1).astype(np.float64)),
        "you rescaled to 0-10: return the expectation on the 0..S scale of the value tokens (the simulator "
        "rescales by 10 / S itself)": _expectations(lambda lp, ids: _softmax(lp[:, ids]) @ vals(ids) * 10.0 / (len(ids) - 1)),
        "the softmax ran over the tokens (axis 0) instead of over the values of each token (axis 1)":
            _expectations(lambda lp, ids: _softmax(lp[:, ids], axis=0) @ vals(ids)),
    }, lambda i: f"token {i} of the check's cases", wrong_where=(flags, (
        "right on normalised log-probabilities, wrong on logits (the same shifted by a constant per token): the "
        "softmax over the values removes any shift, a plain exp() does not; p = softmax(logprobs[:, value_ids])")))
    return ("expected_activation: correct (the value tokens' log-probabilities, softmax over the S + 1 values only, "
            "expectation of 0..S)")


# --------------------------------------------------------------------------- exercise 6: detection questions


def _detection_unit() -> records.UnitRecords:
    def rec(w: int, kind: str, strings: list[str], acts: list[float]) -> records.Record:
        return records.Record(w, kind, list(range(100 + 10 * w, 100 + 10 * w + len(strings))), strings, acts)

    train = [rec(0, "top", ["\n", "def", " main", "():"], [0.0, 5.0, 0.4, 0.0]),
             rec(1, "top", [" def", " __", "init", "__"], [4.2, 0.0, 0.0, 0.1])]
    top = [rec(2, "top", [" def", " area", "(", "r", "):"], [4.0, 0.3, 0.0, 0.0, 0.0]),
           rec(3, "top", ["\n", "    ", "def", " f", "(", "x"], [0.0, 0.0, 3.5, 0.2, 0.0, 0.0]),
           rec(4, "top", ["  ", " def", " run", "(self"], [0.0, 2.9, 0.0, 0.0])]
    rnd = [rec(5, "random", [" import", " os", "\n"], [0.0, 0.0, 0.0]),
           rec(6, "random", [" x", " =", " 1", "\n"], [0.0, 0.1, 0.0, 0.0])]
    quant = [dataclasses.replace(rec(7, "quantile", ["    ", "def", " g", "():"], [0.0, 1.2, 0.0, 0.0]), quantile=1)]
    neg = [rec(8, "negative", [" print", "(x", ")"], [0.0, 0.0, 0.0]),
           rec(9, "negative", [" the", " cat"], [0.0, 0.2])]
    return records.UnitRecords("token/ def", "token", 5.0, train, top, rnd, test_quantile=quant, test_negative=neg)


EXPLANATION = 'the keyword " def" that starts a function definition'


def _question(text: str, explanation: str = EXPLANATION) -> str:
    return scoring.DETECT_Q.format(explanation=explanation, text=text)


def check_detection_questions(fn: Callable[[str, records.UnitRecords], Any]) -> str:
    """``fn(explanation, ur) -> (questions, labels)``: one question per contrast record, label 1 activating /
    0 non-activating."""
    ur = _detection_unit()
    try:
        out = fn(EXPLANATION, ur)
    except NotImplementedError:
        return NOT_ATTEMPTED
    if out is None:
        raise ExerciseError("detection_questions returned None: return (questions, labels) (a missing `return`?)")
    if not isinstance(out, (tuple, list)) or len(out) != 2 or isinstance(out[0], str):
        raise ExerciseError(f"detection_questions should return a pair (questions, labels), got {type(out).__name__}"
                            + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    questions, labels = out
    if isinstance(questions, str) or not all(isinstance(q, str) for q in questions):
        raise ExerciseError("detection_questions: questions must be a list of strings, one question per test record")
    questions = list(questions)
    try:
        labels = [int(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    except (TypeError, ValueError):
        raise ExerciseError(f"detection_questions: labels must be a list of 0/1 numbers, got {labels!r:.80}") from None
    if len(questions) != len(labels):
        raise ExerciseError(f"detection_questions: {len(questions)} questions but {len(labels)} labels: one label per "
                            "question")
    ref_q, ref_y = scoring.detection_questions(EXPLANATION, ur)
    if questions == ref_q and labels == ref_y:
        return ("detection_questions: correct (each held-out record's plain text, label 1 for top and quantile, "
                "0 for non-activating)")
    if sorted(zip(questions, labels)) == sorted(zip(ref_q, ref_y)):
        raise ExerciseError("detection_questions: the right questions and labels in another order: keep the order "
                                "top, quantile, negative (ur.contrast)")
    text = scoring.record_text
    if any(q in {_question(text(r)) for r in ur.train} for q in questions):
        raise ExerciseError("detection_questions: you asked about ur.train, the records the explainer was shown; "
                            "score on the held-out test records (top, quantile and negative: ur.contrast)")
    if any("<<" in q for q in questions):
        raise ExerciseError("detection_questions: you marked tokens with << >>: detection shows the plain text (marking "
                            "the active tokens is the fuzzing scorer, and it would give the answer away)")
    if any("\t" in q or "<start>" in q for q in questions):
        raise ExerciseError("detection_questions: your questions show activations; detection shows the plain text "
                            "only (the activations are what the model must guess from the explanation)")
    if questions[: len(ref_q) - len(ur.test_negative)] == ref_q[: len(ref_q) - len(ur.test_negative)] and \
            questions[len(ref_q) - len(ur.test_negative):] == [_question(text(r)) for r in ur.test_random]:
        raise ExerciseError("detection_questions: the negatives are the random records: a random window often "
                            "activates the unit somewhere; delphi's negatives are non-activating, ur.test_negative")
    if questions == [_question(text(r)) for r in [*ur.test_top, *ur.test_negative]]:
        raise ExerciseError("detection_questions: the quantile records are missing: ur.test_quantile holds activating "
                            "records of middling strength, label 1, between the top and the negative ones")
    if questions == [_question(text(r)) for r in ur.test_top]:
        raise ExerciseError("detection_questions: only the top records: AUROC needs negatives too, the non-activating "
                            "records ur.test_negative with label 0")
    for hint, variant in {
        "you joined the tokens with spaces: each token string already holds its own spaces, join with '' "
        "(scoring.record_text does that)": [_question(" ".join(r.strings)) for r in ur.contrast],
        "you stripped the record's text: keep it as the tokens spell it (scoring.record_text)":
            [_question(text(r).strip()) for r in ur.contrast],
        "the explanation and the text are swapped: DETECT_Q.format(explanation=explanation, text=<the record's text>)":
            [scoring.DETECT_Q.format(explanation=text(r), text=EXPLANATION) for r in ur.contrast],
    }.items():
        if questions == variant:
            raise ExerciseError(f"detection_questions: {hint}")
    if questions == ref_q:
        if labels == [1 - v for v in ref_y]:
            raise ExerciseError("detection_questions: the labels are inverted: an activating (top or quantile) "
                                "record is label 1, a non-activating record label 0")
        if set(labels) == {1}:
            raise ExerciseError("detection_questions: every label is 1; the non-activating records are the negatives, label 0")
        raise ExerciseError(f"detection_questions: right questions, wrong labels {labels}; expected {ref_y} (1 for "
                            "each record of ur.test_top and ur.test_quantile, then 0 for each of ur.test_negative)")
    if len(questions) != len(ref_q):
        raise ExerciseError(f"detection_questions: {len(questions)} questions for {len(ref_q)} test records "
                            f"({len(ur.test_top)} top + {len(ur.test_quantile)} quantile + {len(ur.test_negative)} negative): one "
                            "question per test record")
    i = next(i for i, (q, r) in enumerate(zip(questions, ref_q)) if q != r)
    j = next((k for k, (a, b) in enumerate(zip(questions[i], ref_q[i])) if a != b),
             min(len(questions[i]), len(ref_q[i])))
    raise ExerciseError(f"detection_questions: question {i} differs from DETECT_Q.format(explanation=..., text=...) "
                        f"at character {j}: yours has {questions[i][max(0, j - 20): j + 20]!r}, expected "
                        f"{ref_q[i][max(0, j - 20): j + 20]!r}")
