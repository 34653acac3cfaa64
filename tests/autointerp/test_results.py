"""course_lib.autointerp.results: summaries, the sanity gates, and the headline that shows only scorers whose gates
passed."""

from __future__ import annotations

import math

from course_lib.autointerp import results


def _result(unit, kind, **scores):
    return results.Result(unit=unit, kind=kind, explainer="e", explanation="x", reason=None, scores=scores, records={})


def test_summarise_pools_units_per_kind_with_a_bootstrap_interval():
    rs = [_result(f"sae/{i}", "sae", correlation_keyword=0.5 + 0.1 * i) for i in range(4)]
    rs += [_result("random/0", "random", correlation_keyword=float("nan"))]
    s = results.summarise(rs)
    e = s["sae"]["correlation_keyword"]
    assert e["n"] == 4 and math.isclose(e["mean"], 0.65) and e["ci95"][0] <= 0.65 <= e["ci95"][1]
    assert s["random"]["correlation_keyword"]["mean"] is None  # NaN skipped, not averaged in


def test_a_scorer_passes_only_with_both_gates_and_the_headline_shows_only_those():
    planted = [_result("planted/def", "planted", correlation_keyword=1.0, detection_auroc=0.6)]
    summary = {"random": {"correlation_keyword": {"mean": 0.02, "ci95": [-0.05, 0.08]},
                          "detection_auroc": {"mean": 0.5, "ci95": [0.45, 0.55]}},
               "sae": {"correlation_keyword": {"mean": 0.4, "ci95": [0.3, 0.5]},
                       "detection_auroc": {"mean": 0.8, "ci95": [0.7, 0.9]}}}
    gates = results.sanity_gates(planted, summary, keys=("correlation_keyword", "detection_auroc"))
    assert gates["correlation_keyword"]["pass"] and not gates["detection_auroc"]["pass"]  # known answer 0.6 < 0.75
    rows = results.headline(summary, gates)
    assert len(rows) == 1 and "correlation_keyword" in rows[0].claim
    assert "sae 0.40" in rows[0].value and "sae [0.30, 0.50]" in rows[0].interval
    gates["correlation_keyword"]["pass"] = False
    (none,) = results.headline(summary, gates)
    assert none.value is None and not none.gates_passed and "no scorer" in none.note
