"""Scoring metrics against numpy / brute force (no model needed)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

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


# Independent restatement of openai/automated-interpretability's definitions
# (neuron_explainer/explanations/scoring.py and calibrated_simulator.py): every record's true
# activations and expected values are concatenated, then
#   ev_correlation_score = np.corrcoef(real, expected)[0, 1]
#   rsquared_score = 1 - mse(real, pred) / mse(real, zeros)      pred = linearly calibrated expected
#   absolute_dev_explained_score = 1 - mae(real, pred) / mae(real, zeros)
# with the calibration a least-squares line fitted from expected values to real activations.
def _reference_scores(real, expected):
    a = np.concatenate([np.asarray(x, float) for x in real])
    e = np.concatenate([np.asarray(x, float) for x in expected])
    slope, intercept = np.polyfit(e, a, 1)
    p = slope * e + intercept
    return {
        "correlation": np.corrcoef(a, e)[0, 1],
        "rsquared": 1 - np.mean((a - p) ** 2) / np.mean((a - 0.0) ** 2),
        "absolute_dev_explained": 1 - np.mean(np.abs(a - p)) / np.mean(np.abs(a - 0.0)),
    }


def test_simulation_scores_match_openai_definitions_on_fixed_inputs():
    real = [[0.0, 0.0, 3.2, 0.1, 5.0], [0.0, 1.5, 0.0], [0.2, 0.0, 0.0, 4.4]]
    expected = [[0.5, 1.0, 7.0, 0.0, 9.5], [1.0, 3.0, 0.0], [0.0, 0.5, 2.0, 8.0]]
    ours = scoring.simulation_scores(real, expected)
    ref = _reference_scores(real, expected)
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-12), k
    # R^2's denominator is the mean of squares, not the variance
    a = np.concatenate([np.asarray(x) for x in real])
    assert ours["rsquared"] != pytest.approx(ref["correlation"] ** 2, abs=1e-3)
    # uncalibrated metrics on their own
    assert scoring.rsquared([[1.0, 2.0]], [[1.0, 2.0]]) == 1.0
    assert scoring.rsquared([[1.0, 2.0]], [[0.0, 0.0]]) == 0.0
    assert scoring.absolute_dev_explained([[2.0, -2.0]], [[1.0, -1.0]]) == pytest.approx(0.5)
    assert math.isnan(scoring.rsquared([[0.0, 0.0]], [[1.0, 0.0]]))
    # calibration is invariant to affine changes of the simulation (the 0-9 vs 0-10 scale)
    scaled = scoring.simulation_scores(real, [[3 * v + 1 for v in x] for x in expected])
    for k in ref:
        assert scaled[k] == pytest.approx(ours[k], abs=1e-9)
    assert a.size == 12


def test_constant_simulation_gives_nan_for_calibrated_scores():
    out = scoring.simulation_scores([[0.0, 1.0, 2.0]], [[4.0, 4.0, 4.0]])
    assert all(math.isnan(v) for v in out.values())
    top = [_record(["x", " def"], [0.0, 2.0])]
    ur = records.UnitRecords("token/def", "token", 2.0, [], top, [])
    sc, _ = scoring.simulation_score(simulator.KeywordSimulator(), "nothing quoted", ur)
    assert sc["correlation"] == 0.0 and math.isnan(sc["rsquared"]) and math.isnan(sc["absolute_dev_explained"])
    sc, _ = scoring.simulation_score(simulator.KeywordSimulator(), 'the token " def"', ur)
    assert sc["rsquared"] == pytest.approx(1.0) and sc["absolute_dev_explained"] == pytest.approx(1.0)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("bfloat16", 0.05)])
def test_p_yes_of_a_question_does_not_depend_on_its_neighbours_or_the_prefix_cache(dtype, tol, monkeypatch):
    """A question's P(yes) alone, in a batch (either order) and without the shared-prefix cache: equal in
    float32; in bfloat16 the kernels round differently for other batch shapes (measured: up to 0.02)."""
    from course_lib.autointerp import localmodel

    sc = scoring.YesNoScorer(localmodel.load_local_lm("smollm2", dtype=dtype))
    qs = [scoring.DETECT_Q.format(explanation='the keyword " def".', text=t) for t in
          ["def f(x):\n    return x", "import os\nprint(os.getcwd())", "class A:\n    def g(self): pass",
           "x = [1, 2, 3]\nfor i in x:\n    print(i)  # a longer record, so the batch is padded"]]
    alone = np.array([sc.p_yes([q])[0] for q in qs])
    np.testing.assert_allclose(sc.p_yes(qs), alone, atol=tol)
    np.testing.assert_allclose(sc.p_yes(qs[::-1])[::-1], alone, atol=tol)
    monkeypatch.setattr(localmodel, "MIN_SHARED_PREFIX", 10**9)  # one padded forward, no cached prefix
    np.testing.assert_allclose(sc.p_yes(qs), alone, atol=tol)


def test_detection_alone_equals_detection_asked_with_fuzzing_in_float32():
    """The notebook's planted " def" unit: detection asked alone (as the exercise-5 cell does) and in one
    batch with the fuzzing questions (as the pipeline does) give the same P(yes) in float32."""
    from course_lib.autointerp import localmodel

    sc = scoring.YesNoScorer(localmodel.load_local_lm("smollm2", dtype="float32"))
    top = [_record([" def", " f", "(x):"], [1.0, 0.0, 0.0]), _record(["x", " =", " def"], [0.0, 0.0, 1.0])]
    rnd = [_record(["The", " cat", " sat"], [0.0, 0.0, 0.0]), _record(["a", " b", " c"], [0.0, 0.0, 0.0])]
    ur = records.UnitRecords("token/def", "token", 1.0, [], top, rnd)
    alone = sc.detection('the token " def".', ur)["p_yes"]
    together, _ = sc.detection_and_fuzzing('the token " def".', ur, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(together["p_yes"], alone, atol=1e-4)


def test_auroc_known_value_with_ties_and_one_class():
    assert scoring.auroc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == 0.875
    assert np.isnan(scoring.auroc([1, 1], [0.1, 0.2]))
