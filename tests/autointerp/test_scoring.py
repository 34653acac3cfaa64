"""Scoring metrics against numpy / brute force (no model needed)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from course_lib.autointerp import records, scoring, simulator


def test_pooled_correlation_agrees_with_numpy():
    rng = np.random.default_rng(0)
    real = [rng.normal(size=n) for n in (5, 9, 3)]
    sim = [r * 0.5 + rng.normal(size=r.size) for r in real]
    expected = np.corrcoef(np.concatenate(real), np.concatenate(sim))[0, 1]
    assert scoring.pooled_correlation(real, sim) == pytest.approx(expected, abs=1e-12)
    # pooled != mean of per-record correlations
    per = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(real, sim)])
    assert abs(per - expected) > 1e-6
    assert math.isnan(scoring.pooled_correlation([[1.0, 1.0]], [[0.0, 2.0]]))
    with pytest.raises(ValueError):
        scoring.pooled_correlation([[1.0, 2.0]], [[1.0]])


def _brute_auroc(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])


def test_auroc_perfect_constant_and_brute_force():
    labels = [1, 1, 1, 0, 0, 0, 0]
    assert scoring.auroc(labels, [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.0]) == 1.0
    assert scoring.auroc(labels, [0.5] * 7) == 0.5
    assert scoring.auroc(labels, [0.0, 0.0, 0.0, 1, 1, 1, 1]) == 0.0
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.integers(0, 2, 20)
        s = rng.integers(0, 4, 20).astype(float)  # many ties
        if 0 < y.sum() < 20:
            assert scoring.auroc(y, s) == pytest.approx(_brute_auroc(y, s))
    assert math.isnan(scoring.auroc([1, 1], [0.2, 0.3]))


def test_balanced_accuracy():
    assert scoring.balanced_accuracy([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert scoring.balanced_accuracy([1, 1, 0, 0], [0.9] * 4) == 0.5
    assert scoring.balanced_accuracy([1, 0, 0, 0], [0.9, 0.9, 0.1, 0.1]) == pytest.approx(0.5 * (1 + 2 / 3))


def _record(strings, acts, kind="top", w=0):
    return records.Record(w, kind, list(range(len(strings))), strings, acts)


def test_keyword_simulator_and_constant_simulation():
    top = [_record(["x", " def", " f", " def"], [0, 2.0, 0, 1.5], w=0)]
    rnd = [_record([" a", " b", " c", " d"], [0.0] * 4, "random", w=1)]
    ur = records.UnitRecords("token/def", "token", 2.0, [], top, rnd)
    r, sim = scoring.correlation_score(simulator.KeywordSimulator(), 'the token " def".', ur)
    assert sim[0].tolist() == [0, 10, 0, 10] and r > 0.9
    r0, _ = scoring.correlation_score(simulator.KeywordSimulator(), "nothing quoted", ur)
    assert r0 == 0.0
    assert simulator.quoted_strings('the tokens " def", `class`') == [" def", "class"]


def test_record_text_marks_tokens():
    r = _record(["a", "b", "c"], [0, 1, 0])
    assert scoring.record_text(r) == "abc"
    assert scoring.record_text(r, [False, True, False]) == "a<<b>>c"
