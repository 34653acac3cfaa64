"""course_lib.circuits.notebook: notebook 02's parameter checks, result records and report prose."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from course_lib import circuits, runtime, weight_sparsity
from course_lib.circuits import frontier as fr
from course_lib.circuits import notebook as nbk
from course_lib.circuits import reference_training as rt


def circ(valid: bool = True, n_nodes: int | None = 5, edges: int | None = 7, train_nodes: int | None = 5,
         full: float = 0.1, train: float = 0.2, test: float = 0.3, full_train: float = 0.05) -> circuits.Circuit:
    return circuits.Circuit(task="t", model_name="m", order=[], curve_k=[], curve_loss=[], n_nodes=n_nodes,
                            train_loss=train, test_loss=test, full_loss=full, edges=edges, kept={},
                            train_nodes=train_nodes, full_train_loss=full_train, valid=valid)


@pytest.fixture
def run(tmp_path):
    def make(profile: str = "smoke") -> runtime.Run:
        return runtime.start_run(profile, 0, str(tmp_path / profile), "cpu")
    return make


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("profile, target, steps, prompts, set_name, source", [
    ("smoke", 0.6, 20, 16, "smoke", "retrain"), ("workshop", 0.3, 150, 48, "reference", "shipped"),
    ("full", 0.15, 600, 128, "reference", "shipped")])
def test_settings_derive_the_profiles_sizes(run, profile, target, steps, prompts, set_name, source):
    s = nbk.settings(run(profile), False, "auto", "quote_close", "auto")
    assert (s.target_loss, s.prune_cfg.steps, s.n_prompts, s.set_name, s.source) == (target, steps, prompts,
                                                                                      set_name, source)
    assert s.prune_cfg.target_loss == s.prune_cfg.solved_loss == target and s.prune_cfg.train_target_ratio == 0.85
    assert dataclasses.is_dataclass(s) and type(s).__dataclass_params__.frozen
    assert nbk.settings_text(s, profile, torch.device("cpu")) == (
        f"profile={profile} device=cpu set={set_name} ({source}); {prompts} prompts per task and split; "
        f"target {target}; mask learning {steps} steps")


def test_settings_accept_numbers_and_a_folder_with_a_manifest(run, tmp_path):
    (tmp_path / rt.MANIFEST).write_text("{}")
    s = nbk.settings(run(), True, 0, "quote_close", str(tmp_path))
    assert s.target_loss == 0.0 and isinstance(s.target_loss, float) and s.source == str(tmp_path)
    assert nbk.settings(run(), False, 0.69, "quote_close", "retrain").source == "retrain"


@pytest.mark.parametrize("args, message", [
    (("yes", "auto", "quote_close", "auto"), "USE_REFERENCE_SOLUTIONS='yes' has type str; expected bool"),
    ((False, "fast", "quote_close", "auto"), "TARGET_LOSS='fast' is not valid; valid values: 'auto'"),
    ((False, None, "quote_close", "auto"), "TARGET_LOSS=None has type NoneType; valid values: 'auto' or a number in "
                                           "[0.0, 0.69]"),
    ((False, True, "quote_close", "auto"), "TARGET_LOSS=True has type bool"),
    ((False, 0.7, "quote_close", "auto"), "TARGET_LOSS=0.7 is out of range; valid values: [0.0, 0.69]"),
    ((False, "auto", "nope", "auto"), "DIAGRAM_TASK='nope' is not valid; valid values: 'quote_close'"),
    ((False, "auto", "quote_close", 3), "REFERENCE_SET=3 has type int; expected str"),
    ((False, "auto", "quote_close", "/no/such/set"), "REFERENCE_SET='/no/such/set' is not a folder with a "
                                                      "manifest.json; valid values: 'auto', 'retrain'"),
])
def test_settings_reject_bad_values_naming_the_valid_ones(run, args, message):
    with pytest.raises(runtime.ParameterError, match=re.escape(message)):
        nbk.settings(run(), *args)


# --------------------------------------------------------------------------- section 2


def tiny_model(seed: int = 0) -> circuits.SparseTransformer:
    torch.manual_seed(seed)
    cfg = circuits.SparseTransformerConfig(d_vocab=64, d_model=16, n_layers=1, d_head=16, d_mlp=8, n_ctx=8)
    return circuits.SparseTransformer(cfg).eval()


def entry(name: str, group: str, frac: float, width: int = 16, nonzero: int = 100) -> dict:
    return {"name": name, "group": group, "model": {"d_model": width}, "nonzero_weights": nonzero,
            "train": {"target_fraction": frac, "steps": 4, "anneal_start": 0.25, "anneal_end": 0.5, "seed": 0},
            "log": {"step": [0, 1, 3], "kept_fraction": [1.0, frac, frac]}}


def test_schedule_check_reports_the_largest_gap():
    entries = {"d": entry("d", "dense", 1.0), "s": entry("s", "sparse 0.5", 0.5)}
    exact = nbk.schedule_check(entries, weight_sparsity.kept_fraction)
    assert exact == nbk.ScheduleCheck(0.0, 6, 2)
    off = nbk.schedule_check(entries, lambda *a: weight_sparsity.kept_fraction(*a) - 0.25)
    assert off.max_gap == pytest.approx(0.25)
    assert nbk.training_checks_text(off, {}) == ("your kept_fraction vs the kept fraction logged while each model was "
                                                 "trained: max |difference| 0.25 over 6 logged steps of 2 models")


def test_prune_dense_once_prunes_the_best_dense_model_of_each_width():
    models = {"d0": tiny_model(0), "d1": tiny_model(1), "s0": tiny_model(2), "s1": tiny_model(3)}
    entries = {"d0": entry("d0", "dense", 1.0), "d1": entry("d1", "dense", 1.0),
               "s0": entry("s0", "sparse 0.5", 0.5), "s1": entry("s1", "sparse 0.5", 0.5)}
    val_loss = {"d0": 3.0, "d1": 2.5, "s0": 3.5, "s1": 3.7}
    val_w = torch.randint(0, 64, (4, 9), generator=torch.Generator().manual_seed(0))
    fractions = []

    def project(w: torch.Tensor, f: float) -> torch.Tensor:
        fractions.append(f)
        return weight_sparsity.project_topk(w, f)

    out = nbk.prune_dense_once(entries, models, val_loss, val_w, project, torch.device("cpu"))
    assert list(out) == [16] and list(out[16]) == [0.5] and set(fractions) == {0.5}
    r = out[16][0.5]
    assert (r.dense_model, r.dense, r.trained_sparse_mean) == ("d1", 2.5, pytest.approx(3.6))
    ref = tiny_model(9)
    ref.load_state_dict(models["d1"].state_dict())
    with torch.no_grad():
        for p in ref.sparsified_parameters().values():
            p.copy_(weight_sparsity.project_topk(p, 0.5))
    assert r.pruned_once == pytest.approx(circuits.eval_loss(ref.eval(), val_w))
    assert all(torch.equal(a, b) for a, b in zip(models["d1"].parameters(), tiny_model(1).parameters()))  # untouched
    text = nbk.training_checks_text(nbk.ScheduleCheck(0.0, 6, 4), out).splitlines()
    assert text[1] == (f"width 16, kept fraction 0.5: d1 (val 2.500) pruned once after training -> "
                       f"{r.pruned_once:.3f}; trained sparse (mean over seeds) 3.600")


# --------------------------------------------------------------------------- sections 3 and 4


def test_solved_summary_and_its_markdown():
    solved = {"a": ["x", "y"], "b": ["x"], "c": [], "random init": ["y"]}
    s = nbk.solved_summary(solved, ["x", "y", "z"], ["a", "b", "c"], 0.3)
    assert s.by_task == {"x": 2, "y": 1, "z": 0} and s.everyone == () and s.solve_none == ("c",)
    assert nbk.solved_markdown(s) == (
        "**Solved (held-out loss of the full model at most 0.3):** x by 2 of 3 models; y by 1 of 3 models; "
        "z by 0 of 3 models. Tasks every model solves: **none**. Models that solve no task: c. "
        "The random-init control solves 1.")
    everyone = nbk.solved_summary({"a": ["x"], "random init": []}, ["x"], ["a"], 0.3)
    assert "**x**" in nbk.solved_markdown(everyone) and "solve no task: none" in nbk.solved_markdown(everyone)


def test_search_summary_counts_valid_train_only_and_unreached():
    results = {"m1": {"x": circ(), "y": circ(valid=False, n_nodes=None, edges=None)},
               "m2": {"x": circ(valid=False, n_nodes=None, edges=None, train_nodes=None)}}
    s = nbk.search_summary(results)
    assert s == nbk.SearchSummary(3, 1, (("m1", "y"),))
    assert nbk.search_markdown(s) == ("**1 held-out-valid circuit(s)** from 3 solved (model, task) pairs. 1 node sets "
                                      "reached the target on the train prompts only and are not reported: m1/y; "
                                      "1 never reached it.")
    assert nbk.search_markdown(nbk.SearchSummary(0, 0, ())).endswith("not reported; 0 never reached it.")
    table = nbk.circuit_table(results, {"m1": tiny_model()}, 0.3).splitlines()
    assert table[0] == f"target 0.3 on held-out prompts; nodes per model: width 16: {circuits.total_nodes(tiny_model())}"
    assert table[2].split() == ["m1", "x", "0.050/0.100", "0.200/0.300", "5", "5", "7"]
    assert table[3].split()[-3:] == ["5", "None", "None"] and len(table) == 5


# --------------------------------------------------------------------------- section 5


def test_ratio_text():
    assert nbk.ratio_text({"geo_mean": None}) == "no matched pair"
    s = {"geo_mean": 2.5, "lo": 1.25, "hi": 4.0, "n_pairs": 4, "n_models": 2, "n_tasks": 2}
    assert nbk.ratio_text(s) == "**2.50x**, 95% CI [1.25, 4.00] (4 pairs, 2 models, 2 tasks)"
    assert nbk.ratio_text(s | {"lo": None}) == "**2.50x** (4 pairs, 2 models, 2 tasks)"


def frontier_case() -> tuple[dict, dict, dict]:
    d = [fr.FrontierModel("d1-s0", "dense", "d1", 3.0, {"a": 1000}, 1.0),
         fr.FrontierModel("d2-s0", "dense", "d2", 4.0, {"a": 100}, 1.0)]
    s = [fr.FrontierModel("s-s1", "sparse 0.1", "s", 3.5, {"a": int(math.sqrt(1e5) / 16)}, 0.1),
         fr.FrontierModel("t-s2", "sparse 0.1", "t", 3.8, {"a": 5}, 0.1),
         fr.FrontierModel("far-s0", "sparse 0.1", "far", 5.0, {"a": 1}, 0.1)]
    front = fr.analyse_per_task([*d, *s], ["a"], n_boot=50)
    entries = {m.name: {"train": {"seed": int(m.name[-1])}} for m in [*d, *s]}
    val_loss = {m.name: m.val_loss for m in [*d, *s]}
    return front, entries, val_loss


def test_frontier_summary_and_markdown():
    front, entries, val_loss = frontier_case()
    s = nbk.frontier_summary(front, entries, val_loss, ["d1-s0", "d2-s0"])
    assert list(s.groups) == ["sparse 0.1"] and s.seeds == (1, 2) and s.weaker == ()
    assert s.beyond == (("far-s0", "a"),) and (s.below_range, s.no_curve) == (0, 0)
    md = nbk.frontier_markdown(s)
    assert md.startswith("**Dense/sparse edge ratio at matched validation loss** (geometric mean over (model, task) "
                         "pairs): sparse 0.1: **")
    assert ", from seeds [1, 2]. The paper reports about 16x." in md
    assert " Only 1 task(s) and 2 seed(s) enter the comparison" in md
    assert md.endswith("1 sparse circuit(s) belong to models with a higher validation loss than every dense model, "
                       "beyond the dense curve (far-s0/a).")
    lines = nbk.frontier_text(front).splitlines()
    assert lines[0] == "a              dense curve (val loss: edges) 3.00: 1000, 4.00: 100"
    assert lines[-1].split() == ["far-s0", "val", "5.000,", "1", "edges;", "outside", "the", "dense", "range"]
    # a sparse model above the dense range with a dense model as weak (but no circuit) is "weaker"
    weak = nbk.frontier_summary(front, entries, val_loss | {"d3-s0": 6.0}, ["d1-s0", "d2-s0", "d3-s0"])
    assert weak.weaker == (("far-s0", "a"),) and weak.beyond == ()
    assert " **1 sparse circuit(s) have no dense counterpart at their loss:**" in nbk.frontier_markdown(weak)


def test_width_comparison_pairs_the_wide_group_with_the_closest_narrow_group():
    entries = {"s0": entry("s0", "sparse 0.5", 0.5, 16, 1000), "s1": entry("s1", "sparse 0.5", 0.5, 16, 1000),
               "t0": entry("t0", "sparse 0.1", 0.1, 16, 200), "w0": entry("w0", "wide sparse 0.05", 0.05, 32, 250),
               "w1": entry("w1", "wide sparse 0.05", 0.05, 32, 250)}
    models = {n: tiny_model(i) for i, n in enumerate(entries)}
    val_loss = {"s0": 3.0, "s1": 3.2, "t0": 3.5, "w0": 3.1, "w1": 3.3}
    reported = {"s0": {}, "s1": {}, "t0": {"x": circ(edges=40)}, "w0": {"x": circ(edges=10)}, "w1": {"x": circ(edges=40)}}
    ratio = {"geo_mean": 2.0, "lo": None, "hi": None, "n_pairs": 1, "n_models": 1, "n_tasks": 1}
    cmp = nbk.width_comparison(entries, models, val_loss, reported, {"sparse 0.1": ratio})
    assert list(cmp) == ["sparse 0.1", "wide sparse 0.05"]
    a, b = cmp["sparse 0.1"], cmp["wide sparse 0.05"]
    assert (a.width, a.models, a.nonzero_weights, a.circuits, a.ratio, a.val_sd) == (16, ["t0"], 200, 1, ratio, 0.0)
    assert b.val_mean == pytest.approx(3.2) and b.val_sd == pytest.approx(math.sqrt(0.02)) and b.ratio is None
    assert b.embedding_nonzero == sum(int((models[n].W_E != 0).sum() + (models[n].W_U != 0).sum())
                                      for n in ("w0", "w1")) / 2
    assert nbk.width_line("sparse 0.1", a).startswith("sparse 0.1        width  16: 200 nonzero weights; val loss 3.500")
    s = nbk.width_summary(cmp, reported, ["x", "y"])
    assert s.both == ("x",) and s.edge_ratio == pytest.approx(2.0) and s.margin == pytest.approx(2 * b.val_sd)
    md = nbk.width_markdown(s)
    assert md.startswith("At about the same number of nonzero weights (200 vs 250), the width-32 models reach")
    assert "**wider is more capable at the same weight budget**, as in the paper" in md and "have 2.00x the edges of the width-32" in md
    assert "Matched ratios: width 16 **2.00x** (1 pairs, 1 models, 1 tasks), width 32 n/a." in md
    assert nbk.width_summary({}, reported, ["x"]) is None
    assert nbk.width_markdown(None) == ("This set has no wide sparse group to compare (the smoke set is three tiny "
                                        "models).")
    assert nbk.width_comparison({"s0": entries["s0"]}, models, val_loss, reported, {}) == {}


# --------------------------------------------------------------------------- section 6


def test_controls_are_collected_and_rendered(monkeypatch):
    calls = []

    def fake_random(model, data, n_nodes, means, draws=8, seed=0):
        calls.append((n_nodes, draws, seed))
        return [0.5, 0.7]

    monkeypatch.setattr(circuits.pruning, "random_circuit_losses", fake_random)
    reported = {"m": {"x": circ(n_nodes=5, edges=7, test=0.3)}}
    jobs = nbk.control_jobs(["x", "y"], reported["m"])
    assert jobs == [("random_init", "x"), ("random_init", "y"), ("nonsense_task", "x"), ("nonsense_task", "y"),
                    ("zero_ablation", "x")]
    found = [circ(valid=False, n_nodes=None), circ(valid=False, n_nodes=None, train_nodes=None),
             circ(valid=True, train_nodes=3), circ(valid=False, n_nodes=None), circ(n_nodes=4, edges=6)]
    ctl = nbk.collect_controls("m", ["x", "y"], jobs, found, reported, {"m": None}, {"x": None}, {"m": {}}, seed=3)
    assert calls == [(5, 8, 3)]
    assert ctl.random_circuit == {"m/x": {"nodes": 5, "circuit_test": 0.3, "random_test_mean": 0.6,
                                          "random_test_min": 0.5}}
    assert ctl.zero_ablation == {"x": {"mean_nodes": 5, "mean_edges": 7, "zero_nodes": 4, "zero_edges": 6,
                                       "zero_test": 0.3, "zero_valid": True}}
    assert ctl.nonsense_task["x"] == {"full_test": 0.1, "pruned_train": 0.2, "pruned_test": 0.3, "train_nodes": 3,
                                      "valid": True}
    assert list(dataclasses.asdict(ctl)) == ["control_model", "tasks", "random_init", "nonsense_task",
                                             "zero_ablation", "random_circuit"]
    assert nbk.controls_text(ctl).splitlines() == [
        "random init, x: full 0.100, pruned train 0.200 / held-out 0.300 -> no held-out-valid circuit",
        "random init, y: full 0.100, pruned train 0.200 / held-out 0.300 -> no held-out-valid circuit",
        "nonsense x: full 0.100, pruned train 0.200 (k=3) / held-out 0.300 -> VALID circuit",
        "nonsense y: full 0.100, pruned train 0.200 (k=5) / held-out 0.300 -> no held-out-valid circuit",
        "x: mean ablation 5 nodes / 7 edges; zero ablation 4 nodes / 6 edges"]
    assert nbk.controls_markdown(ctl) == (
        "**Controls** (control model m, tasks x, y). Random init: **0 of 2** tasks give a held-out-valid circuit. "
        "Nonsense task: **1 of 2**. Size-matched random node sets: the found circuit beats the best of 8 random sets "
        "of its size on held-out prompts in **1 of 1** circuits; the random sets' mean held-out loss is higher by "
        "0.300 on average (range 0.300 to 0.300). Zero vs mean ablation: x 5 -> 4 nodes (7 -> 6 edges) (mean -> zero).")
    empty = nbk.Controls("m", ["x"], {}, {}, {}, {})
    assert nbk.controls_text(empty) == ""
    assert nbk.controls_markdown(empty).endswith("No reported circuit, so no size-matched comparison. ")


# --------------------------------------------------------------------------- sections 7 and 9


def test_diagram_markdown():
    assert nbk.diagram_markdown(None, 0.3) == ("No sparse model has a held-out-valid circuit in this run, so there is "
                                               "no diagram.")
    bis = circ(n_nodes=50, edges=90, test=0.25)
    core = circ(n_nodes=12, edges=20, test=0.28, full=0.05)
    md = nbk.diagram_markdown(nbk.DiagramChoice("m", "x", "sparse 0.1", 0.05, core, 30, bis), 0.3)
    assert md == ("Drawn: **x** in **m** (sparse 0.1). The bisection's circuit has 50 nodes and 90 edges (held-out loss "
                  "0.250); backward elimination on the train prompts leaves 30 nodes; its core through weights of "
                  "|w| >= 0.05 has **12 nodes and 20 edges** and reaches held-out loss 0.280 on its own (target 0.3, "
                  "full model 0.050). That core is drawn, with lines for the weights of |w| >= 0.05.")
    whole = nbk.diagram_markdown(nbk.DiagramChoice("m", "x", "sparse 0.1", 0.0, bis, None, bis), 0.3)
    assert whole.endswith("; backward elimination gave no held-out-valid circuit. No smaller node set is a valid "
                          "circuit on its own, so the whole circuit is drawn. It has more than 40 nodes, so the diagram "
                          "shows the 40 highest-ranked of them that connect to the answers; the explorer below lists all.")
    assert nbk.smallest_core([], {}, {}, {}, {}, {}, {}, 0.1, [0.0], circuits.weight_edges, circuits.accept_circuit,
                             "x") is None


def test_lesson_metrics_keep_the_metrics_json_layout(run, tmp_path):
    s = nbk.settings(run(), False, "auto", "quote_close", "auto")
    e = entry("d", "dense", 1.0) | {"steps": 4, "val_loss": 3.0, "nonzero_fraction": 1.0, "cpu_time_s": 1.0,
                                    "wall_time_s": 2.0}
    front, _, _ = frontier_case()
    bis = circ()
    m = nbk.lesson_metrics(
        s, Path("/x"), {"command": "c", "machine": {"cpu_count": 2}}, {"d": e}, {"d": tiny_model()}, {"d": 3.1},
        {"d": {"x": 0.1}}, {"d": ["x"]}, {"d": {"x": bis}}, front, {}, nbk.Controls("d", ["x"], {}, {}, {}, {}),
        nbk.DiagramChoice("d", "x", "dense", 0.0, bis, None, bis), {16: {0.5: nbk.PrunedOnce("d", 3.1, 4.0, 3.5)}})
    out = dataclasses.asdict(m)
    assert list(out) == ["target_loss", "n_prompts_per_split", "prune_config", "reference_set", "models",
                         "full_task_loss", "solved_tasks", "circuits", "frontier", "matched_ratio", "width_comparison",
                         "controls", "diagram", "total_nodes", "dense_pruned_after"]
    assert out["prune_config"] == dataclasses.asdict(s.prune_cfg)
    assert out["reference_set"] == {"source": "retrain", "folder": "/x", "command": "c", "machine": {"cpu_count": 2},
                                    "task_mix": [0.0]}
    assert out["models"]["d"]["val_loss"] == 3.1 and out["models"]["d"]["val_loss_recorded"] == 3.0
    assert out["circuits"]["d"]["x"]["edges"] == 7 and out["matched_ratio"] == front["summary"]
    assert out["diagram"] == {"model": "d", "task": "x", "nodes": 5, "edges": 7, "held_out_loss": 0.3,
                              "edge_threshold": 0.0, "bisection_nodes": 5, "bisection_edges": 7}
    assert out["dense_pruned_after"] == {"16": {"0.5": {"dense_model": "d", "dense": 3.1, "pruned_once": 4.0,
                                                        "trained_sparse_mean": 3.5}}}
    json.dumps(out)  # plain JSON types only
    none = nbk.lesson_metrics(s, Path("/x"), {"command": "c", "machine": {}}, {}, {}, {}, {}, {}, {}, front, {},
                              nbk.Controls("d", [], {}, {}, {}, {}), None, {})
    assert set(dataclasses.asdict(none)["diagram"].values()) == {None}


def test_notebook_module_is_reachable_from_the_package():
    assert circuits.notebook is nbk
