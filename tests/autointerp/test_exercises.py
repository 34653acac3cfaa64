"""course_lib.autointerp.exercises: the checkers accept the references and other correct answers, and name the
mistake in known wrong answers (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from course_lib.autointerp import exercises as ex
from course_lib.autointerp import records, scoring, simulator

CHECKS = {
    "discretise": (ex.check_discretise, records.discretise),
    "pooled_correlation": (ex.check_pooled_correlation, scoring.pooled_correlation),
    "auroc": (ex.check_auroc, scoring.auroc),
    "balanced_accuracy": (ex.check_balanced_accuracy, scoring.balanced_accuracy),
    "expected_activation": (ex.check_expected_activation, simulator.expected_values),
    "detection_questions": (ex.check_detection_questions, scoring.detection_questions),
}


def not_done(*args):
    raise NotImplementedError


@pytest.mark.parametrize("name", CHECKS)
def test_reference_passes_and_a_stub_is_not_attempted(name):
    check, reference = CHECKS[name]
    assert check(reference).startswith(f"{name}: correct")
    assert check(not_done) == ex.NOT_ATTEMPTED


# --------------------------------------------------------------------------- discretise


def _levels(acts, max_act, relu=True, own_max=False, clip=True, rounding=math.floor):
    m = max(acts) if own_max else max_act
    out = []
    for a in acts:
        v = rounding(10 * (max(a, 0.0) if relu else a) / m)
        out.append(min(10, v) if clip else v)
    return out


def test_other_correct_discretisations_pass():
    def in_torch(acts, max_act):  # float32 tensors, a tensor back
        if max_act <= 0:
            return torch.zeros(len(acts), dtype=torch.long)
        return torch.clamp(torch.floor(torch.relu(torch.tensor(acts)) / max_act * 10), max=10).long()

    def plain_python(acts, max_act):
        return [0 if max_act <= 0 else min(10, int(max(a, 0.0) * 10 / max_act)) for a in acts]

    assert "correct" in ex.check_discretise(in_torch)
    assert "correct" in ex.check_discretise(plain_python)


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, m: _levels(a, m, relu=False) if m > 0 else [0] * len(a), "negative activation must give level 0"),
    (lambda a, m: _levels(a, m, own_max=True) if m > 0 else [0] * len(a), "record's own maximum"),
    (lambda a, m: _levels(a, m, rounding=round) if m > 0 else [0] * len(a), "rounded to the nearest"),
    (lambda a, m: _levels(a, m, rounding=math.ceil) if m > 0 else [0] * len(a), "rounded up"),
    (lambda a, m: _levels(a, m, clip=False) if m > 0 else [0] * len(a), "must be clipped"),
    (lambda a, m: _levels(a, m, rounding=lambda x: x) if m > 0 else [0] * len(a), "no floor"),
    (lambda a, m: [math.floor(max(x, 0.0) / m) for x in a] if m > 0 else [0] * len(a), "factor 10"),
    (lambda a, m: _levels(a, m), "max_act = 0"),  # ZeroDivisionError on a dead unit
    (lambda a, m: np.minimum(10, np.floor(10 * np.maximum(np.asarray(a), 0) / m)),
     r"must give all zeros \(you divided by zero\?\)"),  # NaN
    (lambda a, m: _levels(a, 2 * m) if m > 0 else [0] * len(a), "wrong value for activation"),
    (lambda a, m: _levels(a, m)[:-1] if m > 0 else [0] * len(a), "one level per"),
    (lambda a, m: None, "returned None"),
])
def test_discretise_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_discretise(wrong)


# --------------------------------------------------------------------------- pooled_correlation


def _flat(rows):
    return np.concatenate([np.asarray(r, dtype=float) for r in rows])


def test_other_correct_correlations_pass():
    def corrcoef(real, sim):  # NaN (with a warning) when a side is constant
        return np.corrcoef(_flat(real), _flat(sim))[0, 1]

    def pure_python(real, sim):
        a = [x for r in real for x in r]
        s = [x for r in sim for x in r]
        ma, ms = sum(a) / len(a), sum(s) / len(s)
        cov = sum((x - ma) * (y - ms) for x, y in zip(a, s))
        va, vs = sum((x - ma) ** 2 for x in a), sum((y - ms) ** 2 for y in s)
        return None if va == 0 or vs == 0 else cov / math.sqrt(va * vs)

    def in_torch(real, sim):
        a, s = torch.tensor(_flat(real)), torch.tensor(_flat(sim))
        return torch.corrcoef(torch.stack([a, s]))[0, 1]

    for fn in (corrcoef, pure_python, in_torch):
        assert "correct" in ex.check_pooled_correlation(fn)


def _per_record(real, sim, mean=np.nanmean):
    with np.errstate(all="ignore"):
        return float(mean([np.corrcoef(a, s)[0, 1] for a, s in zip(real, sim)]))


def _centred_each(real, sim):
    a = np.concatenate([np.asarray(r) - np.mean(r) for r in real])
    s = np.concatenate([np.asarray(r) - np.mean(r) for r in sim])
    return float((a * s).sum() / np.sqrt((a * a).sum() * (s * s).sum()))


def _python_r(a, s):
    ma, ms = sum(a) / len(a), sum(s) / len(s)
    cov = sum((x - ma) * (y - ms) for x, y in zip(a, s))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - ms) ** 2 for y in s))


def _or_nan(f):
    def g(real, sim):
        with np.errstate(all="ignore"):
            a, s = _flat(real), _flat(sim)
            if np.ptp(a) == 0 or np.ptp(s) == 0:
                return float("nan")
            return f(real, sim)
    return g


@pytest.mark.parametrize("wrong, hint", [
    (_or_nan(_per_record), "averaged per-record correlations"),
    (_or_nan(lambda r, s: _per_record(r, s, np.mean)), "averaged per-record correlations"),
    (_or_nan(_centred_each), "centred each record on its own mean"),
    (_or_nan(lambda r, s: float((_flat(r) * _flat(s)).sum() / np.sqrt((_flat(r) ** 2).sum() * (_flat(s) ** 2).sum()))),
     "cosine similarity"),
    (_or_nan(lambda r, s: np.cov(_flat(r), _flat(s), bias=True)[0, 1]), "returned the covariance; divide"),
    (_or_nan(lambda r, s: np.cov(_flat(r), _flat(s))[0, 1]), r"covariance \(ddof=1\)"),
    (_or_nan(lambda r, s: scoring.pooled_correlation(r, s) ** 2), "r squared"),
    (_or_nan(lambda r, s: abs(scoring.pooled_correlation(r, s))), r"\|r\|"),
    (lambda r, s: np.nan_to_num(scoring.pooled_correlation(r, s)), "returned 0 when the simulation is constant"),
    (lambda r, s: _python_r(sum(r, []), sum(s, [])), "ZeroDivisionError"),  # Python floats: 0 / 0 raises
    (lambda r, s: np.corrcoef(np.array(r), np.array(s))[0, 1], "different lengths"),  # ragged arrays
    (_or_nan(lambda r, s: scoring.pooled_correlation(r[:1], s[:1])), "wrong value for case"),
    (lambda r, s: [scoring.pooled_correlation(r, s)], "one number"),
])
def test_pooled_correlation_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_pooled_correlation(wrong)


# --------------------------------------------------------------------------- auroc


def test_other_correct_aurocs_pass():
    def ranks(labels, scores):  # the Mann-Whitney form with scipy's average ranks
        y = np.asarray(labels, dtype=bool)
        n_pos, n_neg = y.sum(), (~y).sum()
        if n_pos == 0 or n_neg == 0:
            return None
        r = scipy.stats.rankdata(scores)
        return (r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)

    def roc_curve_area(labels, scores):  # the area under the curve through every threshold (trapezoids)
        y = np.asarray(labels, dtype=bool)
        s = np.asarray(scores, dtype=float)
        if y.all() or (~y).all():
            return float("nan")
        ts = np.r_[np.inf, np.unique(s)[::-1]]
        tpr = [(s[y] >= t).mean() for t in ts]
        fpr = [(s[~y] >= t).mean() for t in ts]
        return float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))

    for fn in (ranks, roc_curve_area):
        assert "correct" in ex.check_auroc(fn)


def _pairs(labels, scores):
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    if y.all() or (~y).all():
        return None
    return s[y][:, None], s[~y][None, :]


def _ordinal(labels, scores):
    y = np.asarray(labels, dtype=bool)
    r = np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 1.0
    n_pos, n_neg = y.sum(), (~y).sum()
    return float("nan") if not n_pos or not n_neg else (r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _u(labels, scores):
    p = _pairs(labels, scores)
    return float("nan") if p is None else float((p[0] > p[1]).sum() + 0.5 * (p[0] == p[1]).sum())


@pytest.mark.parametrize("wrong, hint", [
    (lambda y, s: float("nan") if _pairs(y, s) is None else float((_pairs(y, s)[0] > _pairs(y, s)[1]).mean()),
     "ties count 0"),
    (lambda y, s: float("nan") if _pairs(y, s) is None else float((_pairs(y, s)[0] >= _pairs(y, s)[1]).mean()),
     "ties count 1"),
    (_ordinal, "ties are not given average ranks"),
    (lambda y, s: float(np.mean((np.asarray(s) > 0.5) == np.asarray(y, dtype=bool))), "that is the accuracy at threshold 0.5"),
    (scoring.balanced_accuracy, "that is the balanced accuracy at threshold 0.5"),
    (lambda y, s: 1 - scoring.auroc(y, s), "inverted"),
    (_u, "Mann-Whitney U"),
    (lambda y, s: scoring.auroc(y, s) + sum(y) * (sum(y) + 1) / 2 / (sum(y) * (len(y) - sum(y)))
     if 0 < sum(y) < len(y) else float("nan"), "without first subtracting"),
    (lambda y, s: scoring.auroc(y, s) if 0 < sum(y) < len(y) else 0.5, "returned 0.5 when every label is 1"),
    (lambda y, s: _u(y, s) / (sum(y) * (len(y) - sum(y))) if 0 < sum(y) < len(y) else 1 / 0, "ZeroDivisionError"),
    (lambda y, s: float("nan") if _pairs(y, s) is None else float(
        (_pairs(y, s)[0] > _pairs(y, s)[1]).mean() + 0.25 * (_pairs(y, s)[0] == _pairs(y, s)[1]).mean()),
     "ties are not handled right"),
    (lambda y, s: 0.5, "wrong value for auroc"),
    (lambda y, s: None, "returned None"),
])
def test_auroc_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_auroc(wrong)


# --------------------------------------------------------------------------- balanced_accuracy


def test_other_correct_balanced_accuracies_pass():
    def counts(labels, scores, threshold):
        tp = sum(1 for y, s in zip(labels, scores) if y == 1 and s > threshold)
        tn = sum(1 for y, s in zip(labels, scores) if y == 0 and s <= threshold)
        pos, neg = sum(labels), len(labels) - sum(labels)
        return None if pos == 0 or neg == 0 else (tp / pos + tn / neg) / 2

    def in_torch(labels, scores, threshold):
        y, pred = torch.tensor(labels).bool(), torch.tensor(scores) > threshold
        return (pred[y].float().mean() + (~pred[~y]).float().mean()) / 2  # NaN for an empty class

    for fn in (counts, in_torch):
        assert "correct" in ex.check_balanced_accuracy(fn)


def _bacc(labels, pred):
    y = np.asarray(labels, dtype=bool)
    if y.all() or (~y).all():
        return float("nan")
    return 0.5 * ((pred & y).sum() / y.sum() + (~pred & ~y).sum() / (~y).sum())


@pytest.mark.parametrize("wrong, hint", [
    (lambda y, s, t: float(np.mean((np.asarray(s) > t) == np.asarray(y, dtype=bool))), "plain accuracy"),
    (lambda y, s, t: _bacc(y, np.asarray(s) >= t), "strict"),
    (lambda y, s, t: _bacc(y, np.asarray(s) > 0.5), "ignored the threshold"),
    (lambda y, s, t: float((np.asarray(s) > t)[np.asarray(y, dtype=bool)].mean()), r"true-positive rate \(recall\) only"),
    (lambda y, s, t: float((np.asarray(s) <= t)[~np.asarray(y, dtype=bool)].mean()), "true-negative rate only"),
    (lambda y, s, t: _bacc(y, np.asarray(s) < t), "inverted prediction"),
    (lambda y, s, t: _bacc(y, np.asarray(s) > t) if 0 < sum(y) < len(y) else 0.5, "returned 0.5 when every label is 0"),
    (lambda y, s, t: _bacc(y, np.asarray(s) > t) if 0 < sum(y) < len(y) else 1 / 0, "ZeroDivisionError"),
    (lambda y, s, t: _bacc(y, np.asarray(s) > t - 0.25), "wrong value for balanced_accuracy"),
])
def test_balanced_accuracy_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_balanced_accuracy(wrong)


# --------------------------------------------------------------------------- expected_activation


def _soft(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _values(ids):
    return np.arange(len(ids))


def test_other_correct_expected_values_pass():
    def torch_version(lp, ids):
        return (torch.softmax(torch.tensor(lp)[:, ids], dim=1) * torch.arange(len(ids))).sum(1)

    def loop_version(lp, ids):
        out = []
        for row in lp:
            e = [math.exp(row[i]) for i in ids]
            out.append(sum(v * x for v, x in enumerate(e)) / sum(e))
        return out

    for fn in (torch_version, loop_version):
        assert ex.check_expected_activation(fn).startswith("expected_activation: correct")


@pytest.mark.parametrize("wrong, hint", [
    (lambda lp, ids: _soft(np.asarray(lp))[:, ids] @ _values(ids), "softmax over the whole vocabulary"),
    (lambda lp, ids: np.exp(np.asarray(lp)[:, ids]) @ _values(ids), "forgot to renormalise"),
    (lambda lp, ids: (np.asarray(lp)[:, ids] / np.asarray(lp)[:, ids].sum(1, keepdims=True)) @ _values(ids),
     "as if they were probabilities"),
    (lambda lp, ids: np.asarray(lp)[:, ids] @ _values(ids), "by the log-probabilities themselves"),
    (lambda lp, ids: _soft(np.asarray(lp)[:, ids]) @ (_values(ids) + 1), "off by one"),
    (lambda lp, ids: np.argmax(np.asarray(lp)[:, ids], axis=1), "argmax"),
    (lambda lp, ids: _soft(np.asarray(lp)[:, ids]) @ np.arange(11), "not a fixed 11"),
    (lambda lp, ids: _soft(np.asarray(lp)[:, ids]) @ _values(ids) * 10 / (len(ids) - 1), "rescaled to 0-10"),
    (lambda lp, ids: _soft(np.asarray(lp)[:, ids], axis=0) @ _values(ids), "over the tokens"),
    (lambda lp, ids: _soft(np.asarray(lp)[:, ids]), "one expected value per token"),
])
def test_expected_activation_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_expected_activation(wrong)


# --------------------------------------------------------------------------- detection_questions


def test_other_correct_detection_questions_pass():
    def loops(explanation, ur):
        questions, labels = [], []
        for label, recs in ((1, ur.test_top), (1, ur.test_quantile), (0, ur.test_negative)):
            for r in recs:
                questions.append(scoring.DETECT_Q.format(explanation=explanation, text="".join(r.strings)))
                labels.append(label)
        return questions, np.array(labels)

    assert "correct" in ex.check_detection_questions(loops)


def _q(explanation, r, text=None):
    return scoring.DETECT_Q.format(explanation=explanation, text=scoring.record_text(r) if text is None else text)


@pytest.mark.parametrize("wrong, hint", [
    (lambda e, ur: ([_q(e, r) for r in ur.train + ur.test_random], [1] * len(ur.train) + [0] * len(ur.test_random)),
     "ur.train"),
    (lambda e, ur: ([_q(e, r) for r in ur.test_top], [1] * len(ur.test_top)), "only the top records"),
    (lambda e, ur: ([_q(e, r) for r in ur.contrast], [1 - y for y in ur.contrast_labels]), "inverted"),
    (lambda e, ur: ([_q(e, r) for r in ur.test_top + ur.test_negative], [1] * len(ur.test_top) + [0] * len(ur.test_negative)),
     "quantile records are missing"),
    (lambda e, ur: ([_q(e, r) for r in ur.contrast], [1] * len(ur.contrast)), "every label is 1"),
    (lambda e, ur: ([_q(e, r) for r in ur.test_negative + ur.test_quantile + ur.test_top],
                    [0] * len(ur.test_negative) + [1] * (len(ur.test_quantile) + len(ur.test_top))), "another order"),
    (lambda e, ur: ([_q(e, r, " ".join(r.strings)) for r in ur.contrast], scoring.detection_questions(e, ur)[1]),
     "joined the tokens with spaces"),
    (lambda e, ur: ([_q(e, r, scoring.record_text(r).strip()) for r in ur.contrast], scoring.detection_questions(e, ur)[1]),
     "stripped"),
    (lambda e, ur: ([scoring.DETECT_Q.format(explanation=scoring.record_text(r), text=e) for r in ur.contrast],
                    scoring.detection_questions(e, ur)[1]), "swapped"),
    (lambda e, ur: ([_q(e, r, scoring.record_text(r, [a > 0 for a in r.acts])) for r in ur.contrast],
                    scoring.detection_questions(e, ur)[1]), "marked tokens"),
    (lambda e, ur: ([_q(e, r, "".join(f"{s}\t{a}\n" for s, a in zip(r.strings, r.acts))) for r in ur.contrast],
                    scoring.detection_questions(e, ur)[1]), "show activations"),
    (lambda e, ur: ([f"Does this text match {e}? {scoring.record_text(r)}" for r in ur.contrast],
                    scoring.detection_questions(e, ur)[1]), "question 0 differs"),
    (lambda e, ur: (scoring.detection_questions(e, ur)[0], [1, 1, 0, 0, 0, 0]), "wrong labels"),
    (lambda e, ur: (scoring.detection_questions(e, ur)[0], [1, 0]), "one label per question"),
    (lambda e, ur: scoring.detection_questions(e, ur)[0], "pair"),
    (lambda e, ur: None, "returned None"),
    (lambda e, ur: ([_q(e, r) for r in ur.test], ur.test_labels), "negatives are the random records"),
])
def test_detection_questions_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_detection_questions(wrong)
