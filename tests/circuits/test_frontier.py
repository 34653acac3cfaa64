"""The frontier analysis: the monotone dense envelope, the three ratios against the density null, per-fraction
crossed bootstrap summaries and the slope against log(1/f)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from course_lib.circuits import frontier as fr


def model(name, loss, sizes, fraction=1.0, group=None, width=64):
    """sizes: {task: (nodes, edges, possible)}"""
    return fr.FrontierModel(name, group or ("dense" if fraction >= 1 else f"sparse {fraction:g}"), loss,
                            {t: v[0] for t, v in sizes.items()}, {t: v[1] for t, v in sizes.items()},
                            {t: v[2] for t, v in sizes.items()}, fraction, width)


def test_envelope_is_the_fewest_among_dense_models_at_least_as_capable():
    dense = [model("d1", 3.0, {"a": (60, 900, 900)}), model("d2", 3.5, {"a": (80, 700, 700)}),
             model("d3", 4.0, {"a": (30, 470, 480)})]
    assert fr.envelope(dense, "a", 2.9, "edges") is None  # more capable than every dense model
    assert fr.envelope(dense, "a", 3.2, "edges")[0] == 900
    assert fr.envelope(dense, "a", 3.7, "edges")[0] == 700  # never interpolated, never rises with L
    assert fr.envelope(dense, "a", 4.5, "edges")[0] == 470
    assert fr.envelope(dense, "a", 3.7, "nodes")[0] == 60  # nodes and edges have their own minima


def test_a_sparse_circuit_on_the_same_nodes_sits_at_the_density_null():
    dense = [model(f"d{i}", 3.0 + 0.1 * i, {"a": (50, 1000, 1000)}) for i in range(3)]
    # same nodes, a tenth of the weights: the edge ratio is 10x, all of it density
    s = model("s", 3.5, {"a": (50, 100, 1000)}, fraction=0.1)
    r = fr.pair_ratios(dense, s, "a")
    assert math.exp(r["edge"]) == pytest.approx(10) and math.exp(r["null"]) == pytest.approx(10)
    assert math.exp(r["node"]) == pytest.approx(1) and math.exp(r["excess"]) == pytest.approx(1)
    # half the nodes (and a quarter of the possible weights) at the same density: beyond the null
    s2 = model("s2", 3.5, {"a": (25, 25, 250)}, fraction=0.1)
    r2 = fr.pair_ratios(dense, s2, "a")
    assert math.exp(r2["excess"]) == pytest.approx(4) and math.exp(r2["node"]) == pytest.approx(2)


def test_groups_are_summarised_per_fraction_with_intervals_and_unmatched_are_named():
    dense = [model(f"d{i}", 3.0 + 0.2 * i, {"a": (50 + i, 1000 + 10 * i, 1000 + 10 * i),
                                              "b": (40 + i, 800, 800)}) for i in range(4)]
    sp = [model(f"s{f}-{k}", 3.7 + 0.01 * k, {"a": (50, 1000 * f, 1000), "b": (40, 800 * f, 800)}, fraction=f)
          for f in (0.1, 0.4) for k in range(3)]
    better = model("best", 2.5, {"a": (10, 10, 100)}, fraction=0.1)
    res = fr.analyse([*dense, *sp, better], ["a", "b"], n_boot=200)
    assert set(res["groups"]) == {"sparse 0.1", "sparse 0.4"}  # never pooled
    g1, g4 = res["groups"]["sparse 0.1"], res["groups"]["sparse 0.4"]
    assert g1["edge"]["value"] == pytest.approx(10, rel=0.05) and g4["edge"]["value"] == pytest.approx(2.5, rel=0.05)
    for g in (g1, g4):
        assert g["excess"]["value"] == pytest.approx(1, rel=0.05)
        assert g["edge"]["lo"] <= g["edge"]["value"] <= g["edge"]["hi"]
    assert res["unmatched"]["more_capable_than_dense"] == ["best|a"]
    # density alone: the edge ratio grows as 1/f (slope 1), nodes and the excess do not
    assert res["slopes"]["edge"]["value"] == pytest.approx(1, abs=0.05)
    assert res["slopes"]["node"]["value"] == pytest.approx(0, abs=0.05)


def test_a_task_no_capable_dense_model_has_a_circuit_for_is_unmatched_not_dropped_silently():
    dense = [model("d1", 3.0, {"a": (50, 1000, 1000), "b": (None, None, None)}),
             model("d2", 4.0, {"a": (50, 1000, 1000), "b": (None, None, None)})]
    s = model("s", 3.5, {"a": (20, 40, 400), "b": (20, 40, 400)}, fraction=0.1)
    res = fr.analyse([*dense, s], ["a", "b"], n_boot=50)
    assert res["pairs"]["s|b"] is None and res["unmatched"]["no_circuit_as_capable"] == ["s|b"]


def test_headline_states_the_null_and_nodes_beside_the_edges():
    dense = [model(f"d{i}", 3.0 + 0.2 * i, {"a": (50, 1000, 1000)}) for i in range(3)]
    sp = [model(f"s{k}", 3.5, {"a": (50, 100, 1000)}, fraction=0.1) for k in range(3)]
    h = fr.headline(fr.analyse([*dense, *sp], ["a"], n_boot=50))
    assert len(h) == 1 and "a density null of 10x" in h[0].value and "nodes 1x" in h[0].value


def test_the_frontier_is_over_widths_and_its_interval_can_move_both_ways():
    # width 32: three seeds with 100, 400 and 1600 edges (geometric mean 400); width 64 less capable, larger
    dense = [model(f"d32-s{i}", 3.5 + 0.01 * i, {"a": (10 * 2 ** i, 100 * 4 ** i, 100 * 4 ** i)}, width=32)
             for i in range(3)]
    dense += [model(f"d64-s{i}", 3.8, {"a": (90, 5000, 5000)}, width=64) for i in range(3)]
    w = fr.by_width(dense)
    assert [(p.name, p.width) for p in w] == [("dense w32", 32), ("dense w64", 64)]
    assert w[0].val_loss == pytest.approx(3.51) and w[0].edges["a"] == pytest.approx(400)
    assert w[0].nodes["a"] == pytest.approx(20)
    sp = [model(f"s{k}", 3.6, {"a": (20, 40, 400)}, fraction=0.1) for k in range(3)]
    res = fr.analyse([*dense, *sp], ["a"], n_boot=400)
    g = res["groups"]["sparse 0.1"]
    assert g["edge"]["value"] == pytest.approx(10)  # 400 / 40, not the luckiest seed's 100 / 40
    assert g["edge"]["lo"] < 10 < g["edge"]["hi"]  # resampling seeds within the width moves it both ways
    assert res["dense"]["a"] == [pytest.approx([3.51, 20, 400, 32]), pytest.approx([3.8, 90, 5000, 64])]


def test_the_null_comes_from_the_models_density_not_the_circuits():
    dense = [model(f"d{i}", 3.0, {"a": (50, 1000, 1000)}) for i in range(3)]
    # a sparse model whose edges are 10% of its weights, with a circuit wired 4x more densely (40%)
    s = dataclasses.replace(model("s", 3.5, {"a": (50, 400, 1000)}, fraction=0.1), density={"a": 0.1})
    r = fr.pair_ratios(fr.by_width(dense), s, "a")
    assert math.exp(r["null"]) == pytest.approx(10) and math.exp(r["edge"]) == pytest.approx(2.5)
    assert math.exp(r["excess"]) == pytest.approx(0.25)  # more edges than density alone predicts
    assert math.exp(r["concentration"]) == pytest.approx(4) and r["loss_gap"] == pytest.approx(0.5)
    # without a measured density, the kept fraction stands in
    assert model("t", 3.5, {}, fraction=0.2).model_density("a") == 0.2 and dense[0].model_density("a") == 1.0
