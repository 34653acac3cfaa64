"""Figures, the side-by-side explorer and notebook 05's prose and checks, on one small real pair."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from course_lib import runtime
from course_lib.capstone import compare, explain, notebook, plots, units, widgets
from course_lib.capstone.circuit_view import CircuitUnits


@pytest.fixture(scope="module")
def measured(pair_study):
    p, st, scores = pair_study
    gates = explain.gates(scores)
    means = {k: compare.class_means(scores, lambda r, k=k: r.own.get(k), units.CLASSES, 50)
             for k in explain.SCORERS}
    diffs = notebook.differences(scores, "keyword_r", [p.fraction], 50, 0)
    return p, st, scores, gates, means, diffs


def test_figures_are_figures(measured):
    p, st, scores, gates, means, diffs = measured
    crow = CircuitUnits(p.label, p.fraction, "sparse", p.sparse, "quote_close", 40, 10, 3, ("a",), (0.1,) * 10)
    figs = [plots.plot_pairs([p]), plots.plot_class_scores(scores, means, gates),
            plots.plot_r_against_k(explain.r_against_k(st.records, ks=(1, 3))),
            plots.plot_differences(diffs, "t"), plots.plot_activity(st.activity), plots.plot_circuits([crow])]
    for f in figs:
        assert isinstance(f, Figure)
        plt.close(f)


def test_explorer_shows_three_columns_headless(measured, monkeypatch):
    _, st, scores, gates, _, _ = measured
    monkeypatch.setenv(runtime.HEADLESS_ENV, "1")
    ex = widgets.units_explorer([st], scores, gates)
    assert ex.html.count("<td style='vertical-align:top") == 3
    assert "dense neuron" in ex.html and "sae latent" in ex.html and "explanation:" in ex.html
    ex.render(st.pair.label, "sparse channel", "worst")
    assert "sparse channel" in ex.html
    box = ex.build()  # the live controls build without a front end
    assert box.children


def test_prose_is_rendered_from_the_measurements(measured):
    p, st, scores, gates, means, diffs = measured
    key = notebook.primary_scorer(gates) or "keyword_r"  # three units per class may pass no gate
    text = notebook.conclusion_markdown(key, diffs, means[key], {s: notebook.differences(
        st.activity, s, [p.fraction], 50, 0, attr=s) for s in ("active_fraction", "top_token_share",
                                                                "top_bigram_share")}, None, None, [p])
    d = diffs["sparse neuron - dense neuron"]["all"]
    assert f"{d['diff']:+.3g}" in text and "random directions" in text and "Notebook 01" in text
    heads = notebook.headline(key, gates, diffs, means[key], 1)
    assert len(heads) == 3 and all(h.gates_passed == gates[key]["pass"] for h in heads)
    assert notebook.headline(None, gates, {}, {}, 1)[0].gates_passed is False
    assert "| f=0.4 seed 0 |" in notebook.pairs_markdown([p])
    assert "passed" in notebook.gates_markdown(gates) or "failed" in notebook.gates_markdown(gates)


def test_toy_result_is_read_from_notebook_01s_metrics_beside(tmp_path):
    out = tmp_path / "05_capstone"
    assert notebook.toy_result(out) is None
    (tmp_path / "01_superposition_toy_models").mkdir()
    rows = [{"kept_fraction": 1.0, "features_per_neuron": 8.75}, {"kept_fraction": 0.05, "features_per_neuron": 1.35}]
    (tmp_path / "01_superposition_toy_models" / "metrics.json").write_text(json.dumps({"weight_sparse_comparison": rows}))
    toy = notebook.toy_result(out)
    assert toy == {"dense_fraction": 1.0, "dense": 8.75, "sparse_fraction": 0.05, "sparse": 1.35}


def test_parameters_fail_with_the_valid_values(tmp_path):
    run = runtime.start_run("smoke", 0, tmp_path)
    s = notebook.settings(run, False, "auto", 0, -1)
    assert s.fractions == (0.4,) and s.study.n_units == 6 and s.circuit_tasks == 1
    assert notebook.settings(run, False, [0.1, 0.4], 8, 0).fractions == (0.4, 0.1)
    for args, words in (((False, [0.3], 0, -1), "0.4"), ((False, "all", 0, -1), "auto"), ((False, [], 0, -1), "list"),
                        ((False, "auto", -1, -1), "UNITS_PER_CLASS"), ((False, "auto", 0, 9), "CIRCUIT_TASKS"),
                        (("yes", "auto", 0, -1), "USE_REFERENCE_SOLUTIONS")):
        with pytest.raises(runtime.ParameterError, match=words):
            notebook.settings(run, *args)
