"""course_lib.circuits.notebook: notebook 02's parameter checks, result records and report prose."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from course_lib import circuits, corpus, runtime, weight_sparsity
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


@pytest.mark.parametrize("profile, target, steps, prompts, set_name, source, subset, lr, batch", [
    ("smoke", 0.6, 20, 16, "smoke", "retrain", "all", 0.05, 0),
    ("workshop", 0.3, 80, 96, "reference", "shipped", "five", 0.1, 48),
    ("full", 0.15, 600, 128, "reference", "shipped", "all", 0.05, 0)])
def test_settings_derive_the_profiles_sizes(run, profile, target, steps, prompts, set_name, source, subset, lr, batch):
    s = nbk.settings(run(profile), False, "auto", "quote_close", "auto")
    assert (s.target_loss, s.prune_cfg.steps, s.n_prompts, s.set_name, s.source) == (target, steps, prompts,
                                                                                      set_name, source)
    # "solved" is stricter than the circuit target, so near-threshold pairs are not counted as solved
    assert s.solved_loss == s.prune_cfg.solved_loss == pytest.approx(nbk.SOLVED_RATIO * target)
    assert s.solved_loss < target
    assert s.prune_cfg.target_loss == target and s.prune_cfg.train_target_ratio == 0.85
    assert (s.mask_seeds, s.noise_subset, s.prune_cfg.lr, s.prune_cfg.batch_size) == (3, subset, lr, batch)
    assert dataclasses.is_dataclass(s) and type(s).__dataclass_params__.frozen
    text = nbk.settings_text(s, profile, torch.device("cpu"))
    assert text.startswith(f"profile={profile} device=cpu set={set_name} ({source}); {prompts} prompts per task and "
                           f"split (solve / fit / report); solved at full loss <= {s.solved_loss:.3g}; circuit target "
                           f"{target}; mask learning {steps} steps at lr {lr:g} on ")
    assert text.endswith(("on every model", "sparse 0.4, 0.1 and 0.05)"))


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


def test_matching_losses_read_the_manifest_unless_told_to_measure():
    m = tiny_model()
    stream = torch.randint(0, 64, (200,), generator=torch.Generator().manual_seed(0))
    entries = {"a": {"val_loss_full": 3.25}, "b": {}}
    got = nbk.matching_losses(entries, {"a": m, "b": m}, stream, recompute=False)
    measured = circuits.eval_loss(m, corpus.windows(stream, m.cfg.n_ctx + 1))
    assert got["a"] == 3.25 and got["b"] == pytest.approx(measured)  # absent from the manifest: measured
    assert nbk.matching_losses(entries, {"a": m, "b": m}, stream, recompute=True)["a"] == pytest.approx(measured)


def planted(n: int, seed: int) -> circuits.TaskData:
    """One-token prompts for tiny_model: token 1 -> answer 3, token 2 -> answer 4."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randperm(n, generator=g) % 2
    answers = torch.stack([torch.where(cls == 0, 3, 4), torch.where(cls == 0, 4, 3)], 1)
    return circuits.TaskData("planted", (1 + cls)[:, None], torch.zeros(n, dtype=torch.long), answers,
                             [str(int(c)) for c in cls])


def test_full_losses_are_per_split_model_and_task():
    splits = {"x": {k: planted(8, i) for i, k in enumerate(circuits.SPLITS)}}
    out = nbk.full_losses({"m": tiny_model()}, splits)
    assert list(out) == list(circuits.SPLITS) == ["solve", "fit", "report"]
    for k in circuits.SPLITS:
        assert out[k]["m"]["x"] == pytest.approx(circuits.task_loss(tiny_model(), splits["x"][k]))


def test_solved_summary_and_its_markdown():
    solved = {"a": ["x", "y"], "b": ["x"], "c": [], "random init": ["y"]}
    s = nbk.solved_summary(solved, ["x", "y", "z"], ["a", "b", "c"], 0.24)
    assert s.by_task == {"x": 2, "y": 1, "z": 0} and s.everyone == () and s.solve_none == ("c",)
    assert nbk.solved_markdown(s).startswith("**Solved (held-out loss of the full model at most 0.24):** x by 2 of 3 "
                                             "models; y by 1 of 3 models; z by 0 of 3 models.")
    assert nbk.solved_markdown(s).endswith("Models that solve no task: c. The random-init control solves 1.")


def test_search_summary_counts_valid_fit_only_and_unreached():
    results = {"m1": {"x": circ(), "y": circ(valid=False, n_nodes=None, edges=None)},
               "m2": {"x": circ(valid=False, n_nodes=None, edges=None, train_nodes=None)}}
    s = nbk.search_summary(results)
    assert s == nbk.SearchSummary(3, 1, (("m1", "y"),))
    md = nbk.search_markdown(s)
    assert md.startswith("**1 held-out-valid circuit(s)** from 3 solved (model, task) pairs. 1 node set(s) reached")
    assert "have no size in the comparison below" in md and "(m1/y)" in md
    assert md.endswith("1 never reached the goal on the fit prompts.")
    table = nbk.circuit_table(results, {"m1": tiny_model()}, 0.3).splitlines()
    assert table[0] == f"target 0.3 on held-out prompts; nodes per model: width 16: {circuits.total_nodes(tiny_model())}"
    assert table[2].split() == ["m1", "x", "0.050/0.100", "0.200/0.300", "5", "5", "7"]
    assert table[3].split()[-3:] == ["5", "None", "None"] and len(table) == 5


def entry16k(name: str, group: str, frac: float, seed: int, steps: int = 16000, width: int = 16) -> dict:
    e = entry(name, group, frac, width)
    return e | {"steps": steps, "task_mix": 0.05, "train": e["train"] | {"seed": seed}}


def test_frontier_models_keep_dense_models_trained_on_the_same_data_and_the_jobs_follow():
    entries = {"d-1k": entry16k("d-1k", "dense", 1.0, 0, steps=1000), "d-s0": entry16k("d-s0", "dense", 1.0, 0),
               "d-s1": entry16k("d-s1", "dense", 1.0, 1), "s-s0": entry16k("s-s0", "sparse 0.1", 0.1, 0),
               "s-s1": entry16k("s-s1", "sparse 0.1", 0.1, 1)}
    names = nbk.frontier_models(entries)
    assert names == ["d-s0", "d-s1", "s-s0", "s-s1"]  # the 1k-step dense model saw 1/16 of the task text
    assert nbk.noise_models(entries, names, "seed 0") == ["d-s0", "s-s0"]
    assert nbk.noise_models(entries, names, "all") == names
    assert nbk.noise_models(entries, names, "five") == ["d-s0", "s-s0"]  # none of the five: seed 0 of each
    five = {n: e | {"group": "dense, equal data", "model": {"d_model": 32}} if n.startswith("d") else e
            for n, e in entries.items()}
    assert nbk.noise_models(five, names, "five") == ["d-s0"]
    solved = {"d-s0": ["x"], "d-s1": ["x", "y"], "s-s0": [], "s-s1": ["y"]}
    jobs = nbk.search_jobs(names, solved, ["d-s0"], 3)
    J = nbk.SearchJob
    assert jobs == [J("d-s0", "x"), J("d-s1", "x"), J("d-s1", "y"), J("s-s1", "y"),
                    J("d-s0", "x", 1), J("d-s0", "x", 2), J("d-s0", "x", 0, "zero")]


# --------------------------------------------------------------------------- section 5


def frontier_case():
    """Two dense widths (3 seeds) and two sparse groups; task "a" everywhere, "b" only in some models."""
    entries, searches, loss = {}, {}, {}

    def add(name, group, frac, width, seed, val, sizes):
        entries[name] = entry16k(name, group, frac, seed, width=width)
        loss[name] = val
        for t, (n, e, p) in sizes.items():
            searches[nbk.SearchJob(name, t)] = circ(n_nodes=n, edges=e) if n else circ(valid=False, n_nodes=None,
                                                                                        edges=None)
            searches[nbk.SearchJob(name, t)] = dataclasses.replace(searches[nbk.SearchJob(name, t)],
                                                                   possible_edges=p if n else None)
    for s in range(3):
        add(f"d16-s{s}", "dense, equal data", 1.0, 16, s, 4.1 + 0.01 * s, {"a": (40, 400, 400), "b": (30, 300, 300)})
        add(f"d32-s{s}", "dense, equal data", 1.0, 32, s, 3.5 + 0.01 * s, {"a": (60, 900, 900), "b": (0, 0, 0)})
        # sparse 0.2: the same nodes as the width-16 dense models, a fifth of the weights: on the density null
        add(f"sp2-s{s}", "sparse 0.2", 0.2, 64, s, 3.9 + 0.01 * s, {"a": (60, 180, 900), "b": (30, 60, 300)})
        # sparse 0.1: half the nodes and a tenth of the density; on "b", dense models as capable have no circuit
        add(f"sp1-s{s}", "sparse 0.1", 0.1, 64, s, 3.6 + 0.01 * s, {"a": (30, 30, 300), "b": (10, 6, 60)})
    return entries, searches, loss


def test_frontier_inputs_summary_and_markdown_report_three_ratios_per_fraction():
    entries, searches, loss = frontier_case()
    names = list(entries)
    fm = nbk.frontier_inputs(searches, entries, names, loss, ["a", "b"])
    by = {m.name: m for m in fm}
    assert (by["sp2-s0"].nodes, by["sp2-s0"].edges, by["sp2-s0"].possible) == ({"a": 60, "b": 30}, {"a": 180, "b": 60},
                                                                               {"a": 900, "b": 300})
    assert by["d32-s1"].edges == {"a": 900, "b": None} and by["d32-s1"].width == 32 and by["sp1-s0"].fraction == 0.1
    front = fr.analyse(fm, ["a", "b"], n_boot=100)
    s = nbk.frontier_summary(front, fm)
    assert (s.n_dense, s.dense_widths) == (6, (16, 32)) and list(s.groups) == ["sparse 0.2", "sparse 0.1"]
    g2 = s.groups["sparse 0.2"]
    # sparse 0.2 at loss 3.9: the envelope over d32 (3.5) gives 60 nodes, 900 edges on "a"; "b": d16 only (4.1 > 3.9)
    assert g2["n_pairs"] == 3 and g2["node"]["value"] == pytest.approx(1.0) and g2["edge"]["value"] == pytest.approx(5)
    assert g2["excess"]["value"] == pytest.approx(1.0)  # all of the edge ratio is density
    md = nbk.frontier_markdown(s)
    assert md.startswith("**Finding:** node ratios 1.00-2.00x over the 2 kept fractions; the interval lies above 1 "
                         "(sparse circuits smaller) in 1, below 1 (sparse circuits larger) in 0, and contains 1 in 1.")
    assert "Edges / null 1.00-3.00x" in md and "no sign that" not in md
    assert "| sparse 0.1 | 3 (3, 1) | 2.00x [2.00, 2.00] | 30.00x [30.00, 30.00] | 10.00x [10.00, 10.00] | 3.00x" in md
    assert "**Matching is conservative:**" in md
    assert "\n\nDense frontier: 6 dense models of widths 16, 32, trained on the sparse models' data, one point per width" in md
    # only the density null at work: the finding says so
    flat = nbk.FrontierSummary({"sparse 0.2": s.groups["sparse 0.2"]}, s.slopes, (), (), 6, (16, 32))
    assert "**no sign that weight-sparse circuits are smaller in nodes**" in nbk.finding_text(flat)
    assert "allow a factor of 2 either way" in nbk.finding_text(flat)
    assert "| sparse 0.2 | 3 (3, 1) | 1.00x [1.00, 1.00] | 5.00x [5.00, 5.00] |" in md
    assert "sparse 0.2: no difference in nodes can be claimed; no difference in edges beyond density can be claimed" in md
    assert "**The paper's ~16x is an edge ratio**" in md
    g1 = s.groups["sparse 0.1"]  # sp1 on "a" against d32: nodes 2x, edges 30x = density 10x times 3x fewer possible
    assert [g1[k]["value"] for k in ("node", "edge", "null", "excess")] == pytest.approx([2, 30, 10, 3])
    assert "sparse 0.1: nodes smaller in the sparse models; edges beyond density smaller in the sparse models" in md
    # on "b" the dense models at least as capable (width 32) have no circuit: unmatched, named
    assert s.no_circuit_as_capable == ("sp2-s0|b", "sp1-s0|b", "sp2-s1|b", "sp1-s1|b", "sp2-s2|b", "sp1-s2|b")
    assert s.more_capable == () and "6 sparse circuit(s) have no match" in md
    lines = nbk.frontier_text(front).splitlines()
    assert lines[0] == "a              dense widths (width, val loss: nodes/edges) w32 3.51: 60/900, w16 4.11: 40/400"
    assert lines[1].split()[:3] == ["sp2-s0", "nodes", "1.00x,"]
    assert nbk.interval_text({"value": None}) == "n/a" and nbk.interval_text({"value": 2.0, "lo": None}) == "2.00x"


def test_noise_summary_measures_the_spread_over_mask_seeds_and_the_ablation():
    entries, searches, loss = frontier_case()
    names = list(entries)
    noise = [n for n in names if n.endswith("s0")]
    for n in noise:  # mask seeds 1 and 2: the same circuits twice as large; zero ablation: half the edges
        for t in ("a", "b"):
            c = searches[nbk.SearchJob(n, t)]
            for k in (1, 2):
                searches[nbk.SearchJob(n, t, k)] = dataclasses.replace(
                    c, n_nodes=c.n_nodes and c.n_nodes * k, edges=c.edges and c.edges * k)
            searches[nbk.SearchJob(n, t, 0, "zero")] = dataclasses.replace(c, edges=c.edges and c.edges // 2)
    s = nbk.noise_summary(searches, entries, noise, loss, ["a", "b"], 3, 50, 0)
    assert s.models == tuple(noise) and len(s.sizes) == 8 and s.sizes["sp2-s0|a"]["edges"] == [180, 180, 360]
    assert s.valid_share == pytest.approx(21 / 24)  # d32-s0 has no circuit for "b" in any seed
    assert s.edge_spread == pytest.approx(2.0) and s.node_spread == pytest.approx(2.0)
    assert s.zero_vs_mean_edges == pytest.approx(0.5) and list(s.by_seed) == [0, 1, 2]
    md = nbk.noise_markdown(s)
    assert md.startswith("**Noise floor** (4 models, 8 solved pairs, 3 mask seeds each): 88% of the searches")
    assert "**2.00x** the smallest in edges" in md and "multiplies a circuit's edges by 0.50" in md
    assert md.count("\n| sparse 0.") == 2  # one row per kept fraction


def width_entries():
    es = {"s0": entry("s0", "sparse 0.1", 0.1, 16, 1000), "s1": entry("s1", "sparse 0.1", 0.1, 16, 1000),
          "t0": entry("t0", "sparse 0.4", 0.4, 16, 4000), "w0": entry("w0", "wide sparse 0.04", 0.04, 32, 1100),
          "w1": entry("w1", "wide sparse 0.04", 0.04, 32, 1100)}
    return es


def test_width_comparison_pairs_the_wide_group_with_the_closest_narrow_group_and_names_the_confound():
    entries = width_entries()
    models = {n: tiny_model(i) for i, n in enumerate(entries)}
    val_loss = {"s0": 3.0, "s1": 3.2, "t0": 3.5, "w0": 3.1, "w1": 3.3}
    reported = {"s0": {"x": circ(edges=40)}, "s1": {}, "t0": {}, "w0": {"x": circ(edges=10)}, "w1": {"x": circ(edges=40)}}
    groups = {"sparse 0.1": {"edge": {"value": 2.0, "lo": 1.5, "hi": 3.0}, "node": {"value": 1.1, "lo": 0.9, "hi": 1.3}}}
    cmp = nbk.width_comparison(entries, models, val_loss, reported, groups)
    assert list(cmp) == ["sparse 0.1", "wide sparse 0.04"]
    a, b = cmp["sparse 0.1"], cmp["wide sparse 0.04"]
    assert (a.width, a.models, a.nonzero_weights, a.circuits, a.ratio) == (16, ["s0", "s1"], 1000, 1, groups["sparse 0.1"])
    assert b.val_mean == pytest.approx(3.2) and b.val_sd == pytest.approx(math.sqrt(0.02)) and b.ratio is None
    assert b.embedding_nonzero == sum(int((models[n].W_E != 0).sum() + (models[n].W_U != 0).sum())
                                      for n in ("w0", "w1")) / 2
    assert nbk.ratio_line(a.ratio) == "matched edge ratio 2.00x [1.50, 3.00], node ratio 1.10x [0.90, 1.30]"
    assert nbk.ratio_line(None) == "no matched circuit"
    assert nbk.width_line("sparse 0.1", a).startswith("sparse 0.1        width  16: 1,000 nonzero weights; val loss "
                                                      "3.000, 3.200 (mean 3.100")
    s = nbk.width_summary(cmp, reported, ["x", "y"])
    assert s.both == ("x",) and s.edge_ratio == pytest.approx(2.0) and s.margin == pytest.approx(2 * b.val_sd)
    md = nbk.width_markdown(s)
    assert md.startswith("At about the same number of nonzero weights (1,000 vs 1,100), the width-32 models reach")
    assert "no clear capability difference at this scale" in md and "**The budget is not matched where it matters:**" in md
    assert nbk.width_summary({}, reported, ["x"]) is None
    assert nbk.width_markdown(None).startswith("This set has no wide sparse group")
    assert nbk.width_comparison({"s0": entries["s0"]}, models, val_loss, reported, {}) == {}


# --------------------------------------------------------------------------- section 6


def test_control_plan_and_controls_that_can_fail():
    names = ["d", "s"]
    entries = {"d": entry("d", "dense", 1.0), "s": entry("s", "sparse 0.5", 0.5)}
    solved = {"d": ["x", "y"], "s": ["x"]}
    m = tiny_model()
    data = planted(16, 0)
    kept = {h: torch.zeros_like(k) for h, k in circuits.all_kept(m).items()}
    kept["hook_final_in"][:3] = True
    good = dataclasses.replace(circ(n_nodes=3, test=0.01), kept=kept)  # 0.01: better than any random set
    bad = dataclasses.replace(circ(n_nodes=3, test=9.0), kept=kept)  # worse than all of them
    reported = {"d": {"x": bad, "y": bad}, "s": {"x": good}}
    plan = nbk.control_plan(names, entries, solved, reported, {"d": 3.0, "s": 3.5}, ["x", "y", "z"], 1)
    assert (plan.control_model, plan.dense_model, plan.unsolved_by_all) == ("s", "d", ("z",))
    assert plan.jobs == (("random_init", "random init", "x"), ("flipped", "s", "x"), ("flipped", "d", "x"),
                         ("unsolved", "s", "z"))
    found = [circ(valid=False, n_nodes=None), circ(valid=True), circ(valid=False, n_nodes=None),
             circ(valid=False, n_nodes=None)]
    means = {n: circuits.node_means(m, data.tokens.repeat(1, 8)) for n in names}
    ctl = nbk.collect_controls(plan, found, {"d": {"x": bad}, "s": {"x": good}}, {"d": m, "s": m},
                               {"x": data}, means, seed=3)
    assert ctl.passed == {"random_init": [1, 1], "flipped": [1, 2], "unsolved": [1, 1], "random_sets": [1, 2]}
    rnd = circuits.composition_matched_losses(m, data, kept, means["s"],
                                              circuits.edges.answer_connected(m, data.answer_ids), 8, 3)
    assert ctl.random_sets["s/x"]["random_min"] == pytest.approx(min(rnd)) and ctl.random_sets["s/x"]["passed"]
    assert not ctl.random_sets["d/x"]["passed"]
    lines = nbk.controls_text(ctl).splitlines()
    assert lines[1].startswith("flipped s/x: full 0.100, pruned fit 0.200 (k=5) / report 0.300 -> FAIL")
    md = nbk.controls_markdown(ctl)
    assert "- **random init (an untrained model of the same shape; pass: no held-out-valid circuit)**: 1 of 1 passed" in md
    assert "Tasks no frontier model solves: z." in md and "**Failed:** flipped, random_sets" in md
    assert ("The manufactured node sets keep 5-5 nodes; where the model has a real circuit for the same task, "
            "1.7-1.7x its nodes (1 case(s))") in md
    assert lines[1].endswith("(the real circuit for the task: 3 nodes)")
    assert list(dataclasses.asdict(ctl)) == ["control_model", "searches", "random_sets", "passed", "unsolved_by_all"]


# --------------------------------------------------------------------------- sections 7 and 9


def test_diagram_markdown_and_notes():
    assert nbk.diagram_markdown(None, 0.3) == ("No sparse model has a held-out-valid circuit in this run, so there is "
                                               "no diagram.")
    bis = circ(n_nodes=50, edges=90, test=0.25)
    core = circ(n_nodes=12, edges=20, test=0.28, full=0.05)
    md = nbk.diagram_markdown(nbk.DiagramChoice("m", "x", "sparse 0.1", 0.05, core, 30, bis), 0.3)
    assert md.startswith("Drawn: **x** in **m** (sparse 0.1). The bisection's circuit has 50 nodes and 90 edges "
                         "(held-out loss 0.250); backward elimination on the fit prompts leaves 30 nodes; its core "
                         "through weights of |w| >= 0.05")
    assert "on the report prompts it reaches 0.280 on its own (target 0.3, full model 0.050: a held-out-valid" in md
    whole = nbk.diagram_markdown(nbk.DiagramChoice("m", "x", "sparse 0.1", 0.0, bis, None, bis), 0.3)
    assert "so the whole circuit is drawn." in whole and "`query mean-ablated`" in whole
    assert nbk.smallest_core([], {}, {}, {}, {}, {}, {}, 0.1, [0.0], circuits.weight_edges, circuits.accept_circuit,
                             "x") is None
    m = tiny_model()
    kept = {h: torch.zeros_like(k) for h, k in circuits.all_kept(m).items()}
    kept["blocks.0.attn.hook_v"][1] = True
    c = dataclasses.replace(circ(), kept=kept, order=[("blocks.0.attn.hook_v", 1)])
    notes = nbk.diagram_notes(m, c, {("blocks.0.attn.hook_v", 1): {"act_diff": 1.234, "ablation": 0.5}})
    assert notes == {("blocks.0.attn.hook_v", 1): "vote +1.23 | ablate +0.50 | query mean-ablated"}


def test_lesson_metrics_keep_the_metrics_json_layout(run):
    s = nbk.settings(run(), False, "auto", "quote_close", "auto")
    entries, searches, loss = frontier_case()
    e = {n: v | {"val_loss": 3.0, "nonzero_fraction": 1.0, "cpu_time_s": 1.0, "wall_time_s": 2.0} for n, v in entries.items()}
    names = list(entries)
    fm = nbk.frontier_inputs(searches, entries, names, loss, ["a", "b"])
    front = fr.analyse(fm, ["a", "b"], n_boot=20)
    noise = nbk.noise_summary(searches, entries, [], loss, ["a"], 1, 20, 0)
    results = {n: {j.task: c for j, c in searches.items() if j.model == n} for n in names}
    bis = circ()
    models = {n: tiny_model() for n in names}
    m = nbk.lesson_metrics(
        s, Path("/x"), {"command": "c", "machine": {"cpu_count": 2}}, e, models, loss, {"solve": {}}, {"d16-s0": ["a"]},
        names, results, front, noise, {}, nbk.Controls("sp1-s0", {}, {}, {}, ()),
        nbk.DiagramChoice("sp1-s0", "a", "sparse 0.1", 0.0, bis, None, bis), {16: {0.5: nbk.PrunedOnce("d", 3.1, 4.0, 3.5)}})
    out = dataclasses.asdict(m)
    assert list(out) == ["target_loss", "solved_loss", "n_prompts_per_split", "prune_config", "reference_set", "models",
                         "frontier_models", "full_task_loss", "solved_tasks", "circuits", "frontier", "noise",
                         "width_comparison", "controls", "diagram", "total_nodes", "dense_pruned_after"]
    assert out["prune_config"] == dataclasses.asdict(s.prune_cfg)
    assert out["reference_set"]["task_mix"] == [0.05] and out["models"]["d16-s0"]["val_loss"] == 4.1
    assert out["circuits"]["sp2-s0"]["a"]["possible_edges"] == 900 and out["frontier"] == front
    assert out["diagram"]["model"] == "sp1-s0" and out["diagram"]["bisection_edges"] == 7
    assert out["dense_pruned_after"] == {"16": {"0.5": {"dense_model": "d", "dense": 3.1, "pruned_once": 4.0,
                                                        "trained_sparse_mean": 3.5}}}
    json.dumps(out)  # plain JSON types only
    heads = fr.headline(front)
    assert [h.claim.split(":")[0] for h in heads] == ["sparse 0.2", "sparse 0.1"]
    assert heads[0].value.startswith("nodes 1x; edges 5x against a density null of 5x; edges / null 1x")
    assert fr.headline(front, ["b"])[0].claim.endswith("(without b: a control produced a circuit there)")


def test_failed_controls_name_their_tasks_and_the_frontier_is_repeated_without_them():
    ok = {"kind": "flipped", "model": "m", "task": "x", "passed": True}
    ctl = nbk.Controls("m", {"a": ok, "b": ok | {"task": "y", "passed": False},
                             "c": ok | {"kind": "unsolved", "task": "z", "passed": False}}, {}, {}, ())
    assert nbk.failed_control_tasks(ctl) == ("y", "z")
    assert nbk.robustness_markdown((), None).startswith("No search control produced a circuit")
    entries, searches, loss = frontier_case()
    fm = nbk.frontier_inputs(searches, entries, list(entries), loss, ["a"])
    s = nbk.frontier_summary(fr.analyse(fm, ["a"], n_boot=50), fm)
    md = nbk.robustness_markdown(("b",), s)
    assert md.startswith("**The frontier without the tasks where a control produced a circuit** (b)")
    assert "| sparse 0.1 | 3 | 2.00x" in md and "**Finding:**" in md


def test_noise_verdict_compares_the_node_difference_with_the_search_spread():
    entries, searches, loss = frontier_case()
    fm = nbk.frontier_inputs(searches, entries, list(entries), loss, ["a", "b"])
    s = nbk.frontier_summary(fr.analyse(fm, ["a", "b"], n_boot=50), fm)
    wide = nbk.NoiseSummary((), {}, 1.0, 3.0, 2.5, {}, {}, None)
    assert "within the noise of the search" in nbk.noise_verdict(wide, s)  # node ratios 1x and 2x, spread 2.5x
    narrow = dataclasses.replace(wide, node_spread=1.5)
    assert "exceeds the search's spread" in nbk.noise_verdict(narrow, s)
    assert nbk.noise_verdict(dataclasses.replace(wide, node_spread=None), s) == ""


def test_notebook_module_is_reachable_from_the_package():
    assert circuits.notebook is nbk
