"""course_lib.autointerp.gates: the swap of explanations within a kind, paired differences, differences of kind
means, and the gates they feed (own vs another's explanation, cross explanation; random directions reported only)."""

from __future__ import annotations

from course_lib.autointerp import gates, results


def _r(unit, kind, text="x", explainer="e", **scores):
    return results.Result(unit=unit, kind=kind, explainer=explainer, explanation=text, reason=None, scores=scores,
                          records={})


def test_swapped_explanations_stay_within_a_kind_and_use_each_once():
    rs = [_r("sae/1", "sae", "a"), _r("sae/2", "sae", "b"), _r("sae/3", "sae", "c"), _r("neuron/1", "neuron", "n"),
          _r("random/1", "random", "p"), _r("random/2", "random", None)]
    sw = gates.swapped_explanations(rs)
    assert [(e.unit, e.text) for e in sw] == [("sae/1", "b"), ("sae/2", "c"), ("sae/3", "a")]  # one neuron: none
    assert all(e.explainer == "e/swapped" for e in sw)


def test_paired_differences_and_a_scorer_that_ignores_the_explanation():
    own = [_r(f"u/{i}", "sae", correlation_keyword=0.5 + 0.01 * i, intruder_accuracy=0.5) for i in range(6)]
    other = [_r(f"u/{i}", "sae", correlation_keyword=0.1, intruder_accuracy=0.5) for i in range(6)]
    d = gates.paired_differences(own, other, ["correlation_keyword", "intruder_accuracy"])
    assert d["correlation_keyword"]["n"] == 6 and d["correlation_keyword"]["ci95"][0] > 0.3
    assert d["intruder_accuracy"]["mean"] == 0.0 and d["intruder_accuracy"]["ci95"] == [0.0, 0.0]
    planted = [_r("token/a", "token", correlation_keyword=1.0, intruder_accuracy=0.9)]
    cross = [_r("token/a", "token", correlation_keyword=0.0, intruder_accuracy=0.9)]
    control = {"random": {"correlation_keyword": {"mean": 0.3, "ci95": [0.25, 0.35]}}}  # far above chance
    g = results.sanity_gates(planted, control, keys=("correlation_keyword", "intruder_accuracy"),
                             specificity=d, cross=cross)
    assert g["correlation_keyword"]["pass"] and not g["correlation_keyword"]["control_pass"]  # control: reported only
    assert not g["intruder_accuracy"]["pass"] and not g["intruder_accuracy"]["specific_pass"]
    assert not g["intruder_accuracy"]["cross_pass"]  # the wrong explanation scores as high as the right one
    assert "own - other explanation" in results.gate_failure(g["intruder_accuracy"])


def test_kind_differences_have_intervals_and_the_headline_shows_them():
    rs = [_r(f"sae/{i}", "sae", correlation_keyword=0.6 + 0.01 * i) for i in range(5)]
    rs += [_r(f"neuron/{i}", "neuron", correlation_keyword=0.2 + 0.01 * i) for i in range(5)]
    rs += [_r(f"random/{i}", "random", correlation_keyword=0.58 + 0.01 * i) for i in range(5)]
    d = gates.kind_differences(rs, ["correlation_keyword"])
    sn, sr = d["correlation_keyword"]["sae-neuron"], d["correlation_keyword"]["sae-random"]
    assert abs(sn["diff"] - 0.4) < 1e-9 and sn["ci95"][0] > 0.3 and sn["n"] == (5, 5)
    assert sr["ci95"][0] < 0.02 < sr["ci95"][1] or sr["ci95"][0] > 0
    summary = results.summarise(rs)
    g = {"correlation_keyword": {"pass": True}}
    h = results.headline(summary, g, d)
    assert len(h) == 1 and "SAE - neuron +0.40" in h[0].value and "SAE - random" in h[0].value


def test_planted_gates_hold_the_keyword_scorer_to_the_units_it_can_read():
    keys = ("correlation_keyword", "correlation_llm")
    true = [_r("planted/ def", "planted", correlation_keyword=0.95, correlation_llm=0.7),
            _r("planted/string", "planted", correlation_keyword=0.0, correlation_llm=0.2)]
    cross = [_r(u.unit, "planted", correlation_keyword=0.0, correlation_llm=0.1) for u in true]
    spec = {k: {"mean": 0.3, "ci95": [0.1, 0.5], "n": 5} for k in keys}
    g = gates.planted_gates(true, cross, {}, spec, {"planted/ def": True, "planted/string": False}, keys=keys)
    kw, lm = g["correlation_keyword"], g["correlation_llm"]
    assert kw["pass"] and kw["known"] == 0.95 and kw["reported_units"] == {"planted/string": 0.0}
    assert not lm["pass"] and lm["known"] == 0.2 and lm["reported_units"] == {}  # an LM reads any explanation
    high_cross = [_r("planted/ def", "planted", correlation_keyword=0.9, correlation_llm=0.1)]
    assert not gates.planted_gates(true, high_cross, {}, spec, {"planted/string": False}, keys=keys)[
        "correlation_keyword"]["cross_pass"]
