"""course_lib.circuits.frontier: the dense/sparse ratio at matched pretraining loss, with known answers."""

from __future__ import annotations

import math

import pytest

from course_lib.circuits import frontier as fr
from course_lib.circuits import plots


def dense(name, loss, edges, cfg=None):
    return fr.FrontierModel(name, "dense", cfg or name, loss, edges, 1.0)


def sparse(name, loss, edges, frac=0.1, group="sparse 0.1"):
    return fr.FrontierModel(name, group, group, loss, edges, frac)


def test_ratio_is_read_on_the_dense_curve_in_log_edges():
    # dense: 1000 edges at loss 3, 100 at loss 4; at loss 3.5 the curve is sqrt(1000 * 100) = 316.2
    models = [dense("d1", 3.0, {"a": 1000}), dense("d2", 4.0, {"a": 100}),
              sparse("s", 3.5, {"a": math.sqrt(1e5) / 16})]
    r = fr.analyse_per_task(models, ["a"], n_boot=10)["pairs"]
    assert r["s|a"] == pytest.approx(16.0)
    # at the ends of the curve the ratio uses the end points; beyond them it is not extrapolated
    at_end = fr.analyse_per_task([*models[:2], sparse("s", 4.0, {"a": 10})], ["a"], n_boot=10)["pairs"]
    assert at_end["s|a"] == pytest.approx(10.0)
    out = fr.analyse_per_task([*models[:2], sparse("s", 4.5, {"a": 10})], ["a"], n_boot=10)["pairs"]
    assert out["s|a"] is None


def test_seeds_of_a_dense_config_are_averaged_in_log_space():
    models = [dense("d1-s0", 3.0, {"a": 500}, "d1"), dense("d1-s1", 3.2, {"a": 2000}, "d1"),
              dense("d2", 4.0, {"a": 100})]
    curve = fr.dense_curve(models, "a")
    assert curve[0][0] == pytest.approx(3.1) and math.exp(curve[0][1]) == pytest.approx(1000)
    assert len(curve) == 2


def test_common_tasks_are_those_every_model_has_a_circuit_for():
    models = [dense("d1", 3.0, {"a": 1000, "b": 1000, "c": 50}), dense("d2", 4.0, {"a": 100, "b": None, "c": 5}),
              sparse("s", 3.5, {"a": 10, "b": 10, "c": None})]
    assert fr.common_tasks(models) == ["a"]
    assert fr.analyse_per_task(models, ["a", "b", "c"])["common_tasks"] == ["a"]


def test_summary_is_the_geometric_mean_with_a_bootstrap_ci():
    d = [dense("d1", 3.0, {"a": 1000, "b": 1000}), dense("d2", 4.0, {"a": 100, "b": 100})]
    mid = math.sqrt(1e5)
    # two seeds x two tasks: ratios 8, 32, 16, 16 -> geometric mean 16
    s = [sparse("s0", 3.5, {"a": mid / 8, "b": mid / 32}), sparse("s1", 3.5, {"a": mid / 16, "b": mid / 16})]
    res = fr.analyse_per_task([*d, *s], ["a", "b"], n_boot=500)
    summ = res["summary"]["sparse 0.1"]
    assert summ["geo_mean"] == pytest.approx(16.0)
    assert summ["n_models"] == 2 and summ["n_tasks"] == 2 and summ["n_pairs"] == 4
    assert 8.0 - 1e-9 <= summ["lo"] < 16.0 < summ["hi"] <= 32.0 + 1e-9
    assert res["pairs"]["s0|a"] == pytest.approx(8.0) and res["pairs"]["s0|b"] == pytest.approx(32.0)
    assert res["per_task"]["a"]["sparse"]["s0"]["matched_edges"] == pytest.approx(mid)
    # no spread when every pair has the same ratio
    same = fr.analyse_per_task([*d, sparse("s0", 3.5, {"a": mid / 4, "b": mid / 4}),
                                sparse("s1", 3.5, {"a": mid / 4, "b": mid / 4})], ["a", "b"], n_boot=200)
    assert same["summary"]["sparse 0.1"]["lo"] == pytest.approx(4.0) == same["summary"]["sparse 0.1"]["hi"]


def test_groups_are_summarised_separately_and_out_of_range_models_are_left_out():
    d = [dense("d1", 3.0, {"a": 1000}), dense("d2", 4.0, {"a": 100})]
    models = [*d, sparse("s", 3.5, {"a": math.sqrt(1e5) / 16}),
              sparse("w", 3.25, {"a": 1000 ** 0.75 * 100 ** 0.25 / 40}, 0.04, "wide sparse 0.04"),
              sparse("far", 5.0, {"a": 1}, 0.1, "sparse 0.1")]
    res = fr.analyse_per_task(models, ["a"], n_boot=100)
    assert res["summary"]["sparse 0.1"]["geo_mean"] == pytest.approx(16.0)  # "far" is outside the dense range
    assert res["summary"]["sparse 0.1"]["n_models"] == 1
    assert res["summary"]["wide sparse 0.04"]["geo_mean"] == pytest.approx(40.0)
    assert res["pairs"]["far|a"] is None and res["per_task"]["a"]["sparse"]["far"]["matched_edges"] is None


def test_model_from_manifest_entry_groups_seeds_into_one_config():
    def entry(seed, loss):
        return {"name": f"dense-d64-8k-s{seed}-mix5", "group": "dense", "val_loss": loss,
                "train": {"seed": seed, "target_fraction": 1.0}}
    a, b = fr.model_from_entry(entry(0, 3.0), {"t": 100}), fr.model_from_entry(entry(1, 3.2), {"t": 400})
    assert a.config == b.config == "dense-d64-8k-mix5" and a.dense and a.name != b.name
    curve = fr.dense_curve([a, b], "t")
    assert len(curve) == 1 and curve[0][0] == pytest.approx(3.1) and math.exp(curve[0][1]) == pytest.approx(200)


def test_per_task_matching_works_where_no_task_is_common():
    # d3 solves nothing, so no task is common; task by task, each sparse circuit reads its own dense curve
    mid = math.sqrt(1e5)
    models = [dense("d1", 3.0, {"a": 1000, "b": 400}), dense("d2", 4.0, {"a": 100, "b": 40}),
              dense("d3", 5.0, {"a": None, "b": None}),
              sparse("s0", 3.5, {"a": mid / 4, "b": None}), sparse("s1", 3.5, {"a": None, "b": math.sqrt(16000) / 2}),
              sparse("w", 4.5, {"a": 10, "b": None}, frac=0.04, group="wide")]
    res = fr.analyse_per_task(models, ["a", "b"], n_boot=200)
    assert res["common_tasks"] == []
    assert res["pairs"]["s0|a"] == pytest.approx(4.0)
    assert res["pairs"]["s1|b"] == pytest.approx(2.0)
    assert res["pairs"]["w|a"] is None  # loss 4.5 lies beyond the dense curve (3.0-4.0): not extrapolated
    assert res["unmatched"] == {"above_range": 1, "below_range": 0, "no_curve": 0}
    assert res["per_task"]["a"]["sparse"]["w"]["unmatched"] == "above_range"
    assert res["summary"]["sparse 0.1"]["geo_mean"] == pytest.approx(math.sqrt(8.0))
    assert res["summary"]["all sparse"]["n_pairs"] == 2 and res["summary"]["wide"]["n_pairs"] == 0
    assert [p[0] for p in res["per_task"]["a"]["dense"]] == [3.0, 4.0]


def test_per_task_matching_needs_two_dense_configurations():
    models = [dense("d1", 3.0, {"a": 1000}), dense("d2", 4.0, {"a": None}), sparse("s", 3.5, {"a": 10})]
    res = fr.analyse_per_task(models, ["a"])
    assert res["pairs"] == {"s|a": None} and res["unmatched"] == {"above_range": 0, "below_range": 0, "no_curve": 1}
    assert res["summary"]["all sparse"]["geo_mean"] is None


def test_plot_frontier_tasks_draws_a_panel_per_task_and_the_ratios():
    models = [dense("d1", 3.0, {"a": 1000, "b": 400}), dense("d2", 4.0, {"a": 100, "b": 40}),
              sparse("s0", 3.5, {"a": 50, "b": None})]
    fig = plots.plot_frontier_tasks(models, fr.analyse_per_task(models, ["a", "b"], n_boot=50))
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["a", "b", "dense / sparse edges at equal loss"]
    ratio_ax = fig.axes[2]
    assert ratio_ax.collections[0].get_offsets()[0][1] == pytest.approx(math.sqrt(1e5) / 50)


def test_headline_states_the_edge_ratio_with_its_interval_and_the_density_null():
    s = {"geo_mean": 1.5, "lo": 1.1, "hi": 2.0, "n_pairs": 12, "n_tasks": 4}
    (h,) = fr.headline({"all sparse": s})
    assert h.value == "1.5x (12 pairs, 4 tasks)" and h.interval == "[1.1, 2] (bootstrap)"
    assert "1/f" in h.note
    assert fr.headline({"all sparse": {"geo_mean": None}})[0].value is None
    assert fr.headline({})[0].value is None
