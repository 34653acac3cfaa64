"""Plots and HTML cards from synthetic results (no model needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_lib.autointerp import plots, records, results  # noqa: E402


def _results():
    rec = records.Record(0, "top", [1, 2, 3], ["a", "\n", "<b>"], [0.0, 1.0, 2.0])
    rnd = records.Record(1, "random", [4, 5, 6], ["c", "d", "e"], [0.0, 0.0, 0.0])
    ur = records.UnitRecords("sae/1", "sae", 2.0, [rec], [rec], [rnd])
    out = []
    for i, kind in enumerate(("sae", "neuron", "random")):
        for ex in ("baseline:token-stats", "local:smollm2"):
            scores = {k: 0.1 * i for k in results.SCORE_KEYS}
            d = ur.to_dict() | {"kind": kind, "unit": f"{kind}/{i}"}
            out.append(results.Result(f"{kind}/{i}", kind, ex, "the token a." if i else None,
                                      None if i else "empty", scores if i else dict.fromkeys(scores),
                                      d, {"simulated": [[0, 5, 10], [0, 0, 1]]}))
    return out, ur


def test_figures_and_html():
    res, ur = _results()
    for fig in (plots.plot_score_distributions(res, "local:smollm2"),
                plots.plot_explainer_comparison(res),
                plots.plot_unit_card(res[2]), plots.plot_unit_card(res[0])):
        assert isinstance(fig, Figure) and fig.axes
    html = plots.records_html(ur, [[0, 5, 10]], which="test")
    assert "&lt;b&gt;" in html and "rgba(30,100,255" in html  # escaped, simulated row present


def test_bootstrap_ci_and_summary():
    import numpy as np

    v = np.random.default_rng(0).normal(0.3, 0.1, 40)
    lo, hi = results.bootstrap_ci(v)
    assert lo < v.mean() < hi and hi - lo < 0.1
    assert results.bootstrap_ci(v) == (lo, hi)  # deterministic
    lo4, hi4 = results.bootstrap_ci(v[:4])
    assert hi4 - lo4 > hi - lo  # fewer units, wider interval
    assert results.bootstrap_ci([0.5]) is None
    assert results.bootstrap_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2))
    res, _ = _results()
    s = results.summarise(res, "local:smollm2")
    assert s["neuron"]["correlation_llm"]["ci95"] is None  # one unit
    assert s["sae"]["correlation_llm"]["n"] == 0 and s["sae"]["n_missing"] == 1


def test_sanity_gates_decide_the_conclusions():
    def res(unit, kind, **scores):
        sc = dict.fromkeys(results.SCORE_KEYS) | scores
        return results.Result(unit, kind, "ex", "the token x.", None, sc, {})

    known = res("token/ def", "token", correlation_keyword=1.0, correlation_llm=0.05, embedding_auroc=0.9)
    rows = [res(f"sae/{i}", "sae", correlation_keyword=0.8 + 0.01 * i, correlation_llm=0.0,
                embedding_auroc=0.9) for i in range(6)]
    rows += [res(f"random/{i}", "random", correlation_keyword=0.0 + 0.01 * i, correlation_llm=0.0,
                 embedding_auroc=0.95) for i in range(6)]
    summary = results.summarise(rows)
    gates = results.sanity_gates(known, summary)
    assert gates["correlation_keyword"]["pass"]
    assert not gates["correlation_llm"]["known_pass"] and gates["correlation_llm"]["control_pass"]
    assert gates["embedding_auroc"]["known_pass"] and not gates["embedding_auroc"]["control_pass"]
    assert not gates["detection_auroc"]["pass"]  # no data fails
    md = results.gates_markdown(gates, summary)
    assert "~~correlation_llm~~" in md and "excluded: failed known answer" in md
    assert "excluded: failed control" in md and "SAE latents are explained better" in md
    assert "**correlation_keyword**" in md and "**embedding_auroc**" not in md
    none_pass = {k: g | {"pass": False} for k, g in gates.items()}
    assert "supports no comparison" in results.gates_markdown(none_pass, summary)


def test_explainer_markdown_is_written_from_the_run():
    def res(unit, ex, text, **scores):
        sc = dict.fromkeys(results.SCORE_KEYS) | scores
        return results.Result(unit, "sae", ex, text, None, sc, {})

    rows = [res(f"sae/{i}", "base", '"x"', correlation_keyword=0.8 + 0.01 * i) for i in range(8)]
    rows += [res(f"sae/{i}", "llm", "the activation values of the neuron." if i < 5 else "commas.",
                 correlation_keyword=0.1 + 0.01 * i) for i in range(8)]
    known = res("token/ def", "base", 'the token " def".', correlation_keyword=1.0, correlation_llm=0.07)
    gates = {"correlation_keyword": {"pass": True}, "correlation_llm": {"pass": False}}
    md = results.explainer_markdown(rows, "base", "llm", known, gates)
    assert "8 explanations for 8 units; 5 of them" in md
    assert "r = 0.07 (far below" in md and "cannot simulate" in md
    assert "correlation_keyword: baseline 0.84" in md and "baseline is better" in md
    assert "correlation_llm:" not in md  # failed its gate: no comparison
    good = res("token/ def", "base", 'the token " def".', correlation_keyword=1.0, correlation_llm=0.9)
    flipped = [r if r.explainer == "base" else results.Result(r.unit, r.kind, r.explainer, r.explanation, None,
                                                              r.scores | {"correlation_keyword": 0.95}, {})
               for r in rows]
    md2 = results.explainer_markdown(flipped, "base", "llm", good, gates)
    assert "at or above" in md2 and "the LLM explainer is better" in md2
    assert "No scorer passed" in results.explainer_markdown(rows, "base", "llm", known, {"x": {"pass": False}})
    assert "The local all-at-once" in md
    assert "The server's (gpt-4o) all-at-once" in results.explainer_markdown(rows, "base", "llm", known, gates,
                                                                          simulator="server's (gpt-4o)")


def _gated_results():
    """Scores where the embedding scorer fails its known-answer gate and keyword correlation passes."""
    rec = records.Record(0, "top", [1, 2], ["a", "b"], [0.0, 1.0])
    rnd = records.Record(1, "random", [3, 4], ["c", "d"], [0.0, 0.0])
    ur = records.UnitRecords("sae/1", "sae", 1.0, [rec], [rec], [rnd])
    rows = []
    for kind in ("sae", "neuron", "random"):
        for i in range(4):
            sc = dict.fromkeys(results.SCORE_KEYS) | {"correlation_keyword": (0.8 if kind == "sae" else 0.0) + 0.01 * i,
                                                      "embedding_auroc": 0.5 + 0.01 * i}
            rows.append(results.Result(f"{kind}/{i}", kind, "ex", "the token a.", None, sc, ur.to_dict()))
    planted = [results.Result(u, "token", "planted:true", "x", None,
                              dict.fromkeys(results.SCORE_KEYS) | {"correlation_keyword": 1.0, "embedding_auroc": e}, {})
               for u, e in (("token/ def", 0.95), ("token/digits", 0.55))]  # digits fails the embedding gate
    gates = results.sanity_gates(planted, results.summarise(rows))
    return rows, gates


def _is_grey(c):
    return matplotlib.colors.to_hex(c[:3] if len(c) > 3 else c) == matplotlib.colors.to_hex(plots.FAILED_COLOR)


def test_failed_gate_panels_are_grey_and_say_why():
    rows, gates = _gated_results()
    assert gates["correlation_keyword"]["pass"] and not gates["embedding_auroc"]["pass"]
    assert gates["embedding_auroc"]["known"] == pytest.approx(0.55)  # the lowest planted unit decides
    assert gates["embedding_auroc"]["known_units"] == {"token/ def": 0.95, "token/digits": 0.55}
    keys = ("correlation_keyword", "embedding_auroc")
    fig = plots.plot_score_distributions(rows, "ex", keys=keys, gates=gates)
    ok_ax, bad_ax = fig.axes[:2]
    assert "failed gate" in bad_ax.get_title() and "known answer 0.55 < 0.75" in bad_ax.get_title()
    assert "failed gate" not in ok_ax.get_title()
    assert bad_ax.patches and all(_is_grey(p.get_facecolor()) for p in bad_ax.patches)
    assert all(_is_grey(c) for coll in bad_ax.collections for c in coll.get_facecolors())
    assert not any(_is_grey(p.get_facecolor()) for p in ok_ax.patches)
    ungated = plots.plot_score_distributions(rows, "ex", keys=keys)
    assert not any(_is_grey(p.get_facecolor()) for p in ungated.axes[1].patches)
    cmp = plots.plot_explainer_comparison(rows, keys=keys, gates=gates)
    ax = cmp.axes[0]
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert len(bars) == 2 and not _is_grey(bars[0].get_facecolor()) and _is_grey(bars[1].get_facecolor())
    assert "failed gate" in ax.get_title() and "embedding_auroc" in ax.get_title()
    assert "(failed gate)" in ax.get_xticklabels()[1].get_text()


def test_gates_missing_planted_score_fails():
    rows, _ = _gated_results()
    planted = [results.Result("token/ def", "token", "planted:true", "x", None,
                              dict.fromkeys(results.SCORE_KEYS) | {"correlation_keyword": 1.0}, {}),
               results.Result("token/digits", "token", "planted:true", "x", None,
                              dict.fromkeys(results.SCORE_KEYS), {})]  # no score for digits
    gates = results.sanity_gates(planted, results.summarise(rows))
    assert not gates["correlation_keyword"]["known_pass"] and gates["correlation_keyword"]["known"] is None
    assert results.gate_failure(gates["correlation_keyword"]).startswith("failed gate: known answer missing")
    assert set(results.GATE_KEYS) >= {"intruder_accuracy", "surprisal_auroc"}
    md = results.gates_markdown(gates, results.summarise(rows))
    assert "token/digits n/a" in md and "~~intruder_accuracy~~" in md


def test_per_quantile_groups_and_markdown():
    def rec(w, kind, q=None):
        return records.Record(w, kind, [1], ["a"], [1.0 if kind != "random" else 0.0], q)

    ur = records.UnitRecords("sae/1", "sae", 1.0, [], [rec(0, "top"), rec(1, "top")], [rec(2, "random"), rec(3, "random")],
                             test_quantile=[rec(4, "quantile", 0), rec(5, "quantile", 1)])
    # similarity: top 0.9, q0 0.6 (above the randoms 0.5, 0.2), q1 0.3 (between them)
    r = results.Result("sae/1", "sae", "ex", "a.", None, dict.fromkeys(results.SCORE_KEYS), ur.to_dict(),
                       {"embedding_similarity": [0.9, 0.9, 0.6, 0.3, 0.5, 0.2]})
    t = results.per_quantile([r, r], "embedding_auroc")
    assert list(t) == ["top", "q0", "q1"]
    assert t["top"]["mean"] == 1.0 and t["q0"]["mean"] == 1.0 and t["q1"]["mean"] == 0.5
    assert t["top"]["n_units"] == 2 and t["top"]["n_records"] == 4
    md = results.per_quantile_markdown({"embedding_auroc": t}, {"embedding_auroc": {"pass": False}})
    assert "~~embedding_auroc~~" in md and "| top | q0 | q1 |" in md
