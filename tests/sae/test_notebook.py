"""course_lib.sae.notebook: notebook 03's settings, section summaries, their Markdown and its metrics."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from course_lib import runtime, sae
from course_lib.sae import controls, notebook
from course_lib.sae.dashboards import Codes

KNOBS = {"layer": 15, "k": 32, "n_dashboards": 3, "use_reference_solutions": False}


# --------------------------------------------------------------------------- settings


def test_smoke_settings_apply_the_knobs_and_the_profile_sizes():
    s = notebook.lesson_settings("smoke", 7, **{**KNOBS, "layer": 3, "k": 8})
    harvest, main, train = sae.default_configs("smoke", 7)
    assert s.harvest == dataclasses.replace(harvest, layer=3) and s.harvest.hook_name == "blocks.3.hook_resid_post"
    assert s.main == dataclasses.replace(main, k=8) and s.train == train
    assert s.val == dataclasses.replace(s.harvest, split="val", n_tokens=1_024)
    assert (s.sweep_width, s.sweep_ks, s.sweep_l1, s.sweep_widths) == (256, (8, 32), (6e-3, 2e-2), (128, 256, 512))
    assert s.sweep_train == dataclasses.replace(train, n_tokens=4_096, lr=2e-3, log_every=1)
    assert s.control_seeds == (7, 8) and s.synth_seeds == (7,) and s.synth_train.seed == 7
    assert s.control_train == dataclasses.replace(train, n_tokens=4_096, log_every=1)
    assert (s.ce_windows, s.ce_seq_len, s.synth_l1) == (2, 32, 0.05)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sweep_width = 1  # type: ignore[misc]


@pytest.mark.parametrize("profile", runtime.PROFILES)
def test_every_profile_sizes_sae_configs_that_accept_k(profile):
    s = notebook.lesson_settings(profile, 0, **{**KNOBS, "k": 128})
    assert s.sweep_lr == (s.train.lr if profile == "full" else 2e-3)
    for width in (s.main.n_latents, s.sweep_width, s.control_width, *s.sweep_widths):
        sae.SAEConfig(d_in=576, n_latents=width, k=128)


@pytest.mark.parametrize("override, message", [
    ({"layer": 30}, r"LAYER=30 is out of range; valid values: \[0, 29\]"),
    ({"layer": 1.5}, r"LAYER=1.5 has type float; expected int"),
    ({"k": True}, r"K=True has type bool; expected int"),
    ({"k": 257}, r"K=257 is out of range; valid values: \[1, 256\]"),
    ({"k": 200}, r"K=200 is out of range; valid values: \[1, 128\]"),  # smoke: the smallest sweep SAE
    ({"n_dashboards": 21}, r"N_DASHBOARDS=21 is out of range; valid values: \[0, 20\]"),
    ({"use_reference_solutions": 1}, r"USE_REFERENCE_SOLUTIONS=1 has type int; expected bool"),
])
def test_invalid_knobs_raise_a_parameter_error_naming_the_valid_values(override, message):
    with pytest.raises(runtime.ParameterError, match=message):
        notebook.lesson_settings("smoke", 0, **{**KNOBS, **override})


# --------------------------------------------------------------------------- one sweep SAE


def test_evaluate_sae_trains_scores_and_caches(tmp_path):
    x = torch.randn(1_024, 8, generator=torch.Generator().manual_seed(3))
    store = sae.write_store(tmp_path / "s", x, shard_tokens=512, meta={"config": {"test": "notebook.evaluate_sae"}})
    tc = sae.SAETrainConfig(n_tokens=2_048, batch_size=128, lr=1e-2, buffer_tokens=512, log_every=1)
    cfg = sae.SAEConfig(d_in=8, n_latents=32, kind="jumprelu", dead_tokens=512)
    row = notebook.evaluate_sae(store, x[:256], cfg, tc, "JumpReLU l0=0.001")
    assert row["label"] == "l0=0.001" and row["kind"] == "jumprelu" and row["n_latents"] == 32
    assert 0 < row["nmse"] and 0 <= row["dead_fraction"] <= 1 and row["theta_moved"] > 0
    assert set(notebook.FRONTIER_KEYS) <= set(row) and len(row["history"]["nmse"]) == 16
    again = notebook.evaluate_sae(store, x[:256], cfg, tc, "JumpReLU l0=0.001")  # from the cache
    assert again["nmse"] == row["nmse"]
    topk = notebook.evaluate_sae(store, x[:256], dataclasses.replace(cfg, kind="topk", k=4), tc, "TopK k=4")
    assert topk["theta_moved"] is None and topk["l0"] == pytest.approx(4)


# --------------------------------------------------------------------------- section summaries


def _row(kind: str, label: str, l0: float, nmse: float, fall: float = 0.0, **kw) -> dict:
    return {"kind": kind, "label": label, "k": kw.get("k"), "l1_coef": 1e-3, "l0_coef": 1e-3, "l0": l0, "nmse": nmse,
            "late_fall": fall, "theta_moved": kw.get("theta_moved"), "dead_fraction": 0.0}


def _curves(relu_fall: float = 0.0) -> dict[str, list[dict]]:
    return {"TopK": [_row("topk", "k=8", 8.0, 0.4, k=8), _row("topk", "k=32", 32.0, 0.2, k=32)],
            "ReLU + L1": [_row("relu", "l1=0.01", 16.0, 0.25, relu_fall), _row("relu", "l1=0.001", 100.0, 0.1)],
            "JumpReLU": [_row("jumprelu", "l0=0.001", 8.0, 0.5, theta_moved=0.0123)],
            "BatchTopK": []}


def test_frontier_summary_compares_with_topk_at_the_same_l0():
    tc = sae.SAETrainConfig(n_tokens=80_000, batch_size=1024, lr=2e-3)
    base = sae.SAEConfig(d_in=8, n_latents=64, k=4)
    s = notebook.frontier_summary(_curves(), tc, dataclasses.replace(tc, lr=5e-4), base)
    assert s.steps == 78 and s.width == 64 and s.topk_l0_range == (8.0, 32.0)
    relu16 = s.comparisons[0]
    assert (relu16.name, relu16.label) == ("ReLU + L1", "l1=0.01")
    assert relu16.topk_nmse == pytest.approx(math.sqrt(0.4 * 0.2))  # log-log midpoint of (8, 0.4) and (32, 0.2)
    assert math.isnan(s.comparisons[1].topk_nmse)
    assert s.thresholds_moved == 0.0123 and s.still_learning == {"TopK": 0.0, "ReLU + L1": 0.0, "JumpReLU": 0.0}
    assert len(s.points) == 5 and set(s.points[0]) == set(notebook.FRONTIER_KEYS)
    text = notebook.frontier_markdown(s)
    assert text.startswith("All SAEs here trained 78 steps of 1024 tokens at 64 latents, with one learning rate for "
                           "every architecture (0.002; the main SAE, trained longer, uses 0.0005).")
    assert f"* ReLU + L1 l1=0.01: L0 16.0, NMSE 0.250; TopK at that L0 (interpolated): {math.sqrt(0.08):.3f}, so " \
           "ReLU + L1 is better by 12%." in text
    assert "* ReLU + L1 l1=0.001: L0 100.0, NMSE 0.100; outside TopK's L0 range (8-32), so no like-for-like" in text
    assert "JumpReLU's thresholds moved by 0.012 on average" in text and "(0.002 x 78 steps = 0.156 at most)" in text
    assert "the comparison is a fair one." in text
    unconverged = notebook.frontier_markdown(notebook.frontier_summary(_curves(0.2), tc, tc, base))
    assert "for ReLU + L1 (20%) (largest fall per architecture)" in unconverged


def test_scaling_summary_fits_the_interval_and_counts_epochs():
    rows = [{"n_latents": n, "n_tokens": 1000 * n // 100, "nmse": 2.0 * n ** -0.5 * (1 + 0.01 * (-1) ** i)}
            for i, n in enumerate((100, 200, 400, 800))]
    s = notebook.scaling_summary(rows, -0.5, 32, store_tokens=4_000)
    assert s.widths == (100, 200, 400, 800) and s.n_tokens == (1_000, 2_000, 4_000, 8_000)
    assert s.ci[0] < -0.5 < s.ci[1] < 0 and s.widest_epochs == 2.0
    text = notebook.scaling_markdown(s)
    assert text.startswith("**Tokens in proportion to width**: 4 widths from 100 to 800 latents, trained on 1,000, 2,000, 4,000, 8,000 tokens (k=32). "
                           "Fitted exponent **b = -0.500**")
    assert "NMSE falls with width: the whole interval lies below 0." in text
    assert "Fewer than the five widths" in text and "passes over the 4,000-token store 2.0 times" in text
    flat = notebook.scaling_markdown(dataclasses.replace(s, ci=(-0.1, 0.1), widest_epochs=0.5))
    assert "cannot tell the curve from flat." in flat and "passes over" not in flat


def _control_runs(dead_no_auxk: tuple[float, float], aux: float = 0.0) -> dict[str, list[dict]]:
    def run(dead: float, nmse: float) -> dict:
        return {"dead_fraction": dead, "nmse": nmse, "history": {"penalty": [aux, 0.0]}}

    base = {"all fixes": [run(0.0, 0.20), run(0.001, 0.21)], "no AuxK": [run(d, 0.205) for d in dead_no_auxk],
            "no tied init": [run(0.0, 0.30), run(0.0, 0.31)], "no median b_pre": [run(0.0, 0.2), run(0.0, 0.21)],
            "no fixes": [run(0.5, 0.4), run(0.6, 0.41)]}
    return base


def test_controls_summary_gives_one_verdict_per_fix():
    s = notebook.controls_summary(_control_runs((0.0, 0.001)), [0, 1], width=576, k=32, train_tokens=50_000,
                                  dead_tokens=20_000, profile="workshop")
    assert s.dead_by["no fixes"] == [0.5, 0.6] and list(s.dead_by) == list(_control_runs((0, 0)))
    assert s.auxk_idle and not s.nmse_effects["AuxK"]["measurable"] and s.nmse_effects["tied init"]["measurable"]
    assert s.dead_stats["no fixes"]["mean"] == pytest.approx(0.55)
    text = notebook.controls_markdown(s)
    assert text.startswith("**What the controls say** (576 latents, k=32, 50,000 training tokens, dead window "
                           "20,000 tokens, 2 seeds; mean and (min–max) over seeds;")
    assert "* **AuxK: no measurable effect** at this budget" in text and "this run cannot show what AuxK is for." in text
    assert ("* **tied init matters**: without it, held-out NMSE 0.305 (0.300–0.310) against 0.205 (0.200–0.210) "
            "(the dead fraction does not move measurably).") in text
    assert "* **All three removed**: dead fraction 0.550 (0.500–0.600), NMSE 0.405 (0.400–0.410)" in text
    assert "2 seeds is what the workshop profile's time budget affords" in text
    busy = notebook.controls_summary(_control_runs((0.2, 0.3), aux=0.5), [0, 1], width=576, k=32,
                                     train_tokens=50_000, dead_tokens=20_000, profile="full")
    text = notebook.controls_markdown(busy)
    assert not busy.auxk_idle and "**AuxK matters**: without it, dead fraction 0.250" in text
    assert "time budget affords" not in text


def _synthetic_rows(seeds: tuple[int, ...]) -> list[dict]:
    rows = []
    for data in ("independent", "correlated", "hierarchical"):
        for label in ("TopK k=3", "ReLU L1=0.05"):
            for s in seeds:
                hier = data == "hierarchical"
                rows.append({"data": data, "sae": label, "seed": s, "decoder_mcc": 0.9 if "TopK" in label else 0.6,
                             "activation_mcc": 0.8, "mmcs": 0.95, "nmse": 0.05, "l0": 3.0 if "TopK" in label else 9.0,
                             "absorption": (0.5 if hier else 0.1) + 0.01 * s, "parent_recall_alone": 0.9,
                             "parent_recall_with_child": 0.4, "child_parent_cosine": (0.4 if hier else 0.0) + 0.01 * s,
                             "dead_fraction": 0.3, "true_child_parent_cosine": 0.01})
    return rows


def test_synthetic_summary_reads_recovery_and_absorption():
    data = sae.synthetic.SyntheticConfig()
    train = sae.SAETrainConfig(n_tokens=60_000, batch_size=256, lr=1e-2)
    s = notebook.synthetic_summary(_synthetic_rows((0, 1)), ["TopK k=3", "ReLU L1=0.05"], data, train, (3,), 0.05,
                                   n_seeds=2)
    assert (s.topk, s.relu) == ("TopK k=3", "ReLU L1=0.05") and s.absorbed == {"TopK k=3": True, "ReLU L1=0.05": True}
    assert s.tables["absorption"][("hierarchical", "TopK k=3")]["mean"] == pytest.approx(0.505)
    text = notebook.synthetic_markdown(s)
    assert text.startswith("**Recovery** (64 features in 32 dimensions, expected 1.92 active per sample; 128 latents; "
                           "60,000 training samples; mean ± std over 2 seeds")
    assert "| independent | TopK k=3 | 3.0 ± 0.0 | 0.050 ± 0.000 |" in text
    assert "ReLU + L1 recovers less at the same number of steps (0.600 ± 0.000 on independent features)" in text
    assert "and its L0 (9.0) is far above the data's." in text
    assert "on the control (higher than on the control in every seed" in text and "puzzling gaps" in text
    assert "The dead fraction of TopK k=3 on independent data (0.30 ± 0.00) counts spare latents" in text
    one = notebook.synthetic_markdown(notebook.synthetic_summary(_synthetic_rows((0,)), ["TopK k=3", "ReLU L1=0.05"],
                                                                 data, train, (3,), 0.05, n_seeds=1))
    assert "samples; one seed, so no spread):" in one and "an anecdote, not a result" in one


def _ce(ce_mean: float = 6.0) -> dict:
    return {"ce_clean": 2.0, "ce_sae": 2.5, "ce_zero": 10.0, "ce_mean": ce_mean, "kl_sae": 0.4, "kl_zero": 7.0,
            "kl_mean": 3.0, "delta_ce": 0.5, "n_predictions": 1_512, "n_massive_kept": 0, "ce_loss_score": 0.9375}


def test_downstream_markdown_reads_both_floors():
    s = notebook.downstream_summary(_ce(), 0.9375, 0.875)
    text = notebook.downstream_markdown(s)
    assert text.startswith("**Downstream, on 1,512 held-out predictions.** Clean CE 2.000 nats; with the SAE spliced "
                           "in 2.500: **ΔCE = 0.500 nats** (+25% over clean), KL(clean ‖ SAE) = 0.400 nats per token.")
    assert "**0.938** against the zero floor but **0.875** against the mean floor: the SAE recovers 88% of" in text
    worse = notebook.downstream_markdown(notebook.downstream_summary(_ce(2.2), 0.9375, -1.5))
    assert "the SAE does worse than mean ablation" in worse


def test_dashboard_reading_on_hand_built_codes():
    tokens = torch.tensor([[7, 5, 7, 9], [9, 6, 1, 2]])
    where = torch.tensor([[0, 0], [0, 2], [1, 0], [0, 1]], dtype=torch.int32)
    codes = Codes(torch.tensor([[3.0], [2.0], [1.0], [5.0]]), torch.tensor([[3], [3], [3], [1]], dtype=torch.int32),
                  where, tokens, n_latents=4)
    ae = sae.SparseAutoencoder(sae.SAEConfig(d_in=100, n_latents=4, k=1))

    class Tok:
        def decode(self, ids: list[int]) -> str:
            return f"t{ids[0]}"

    r = notebook.dashboard_reading(codes, ae, torch.eye(100), [3], Tok(), n_layers=30, layer=15, n_top=3)
    assert r.vocab == 100 and r.layers_after == 14
    assert (r.latents[0].token, r.latents[0].purity, r.latents[0].n_contexts) == ("'t7'", 2 / 3, 3)
    text = notebook.dashboard_markdown(r)
    assert text.startswith("**Reading the dashboards** (from this run):\n\n* latent 3: 't7' in 2 of its 3 strongest "
                           "contexts (mostly one token: check the weaker bands; 0 of them read as prose)")
    assert "Chance for the last number is 50.00% (50 of 100 tokens)." in text and "14 layers after layer 15" in text
    assert notebook.dashboard_markdown(dataclasses.replace(r, latents=())) == ""


# --------------------------------------------------------------------------- metrics


def test_lesson_metrics_assembles_every_key_in_order():
    tc = sae.SAETrainConfig()
    frontier = notebook.frontier_summary(_curves(), tc, tc, sae.SAEConfig(d_in=8, n_latents=64, k=4))
    rows = [{"n_latents": n, "n_tokens": n * 10, "nmse": 1.0 / n} for n in (100, 200, 400)]
    scaling = notebook.scaling_summary(rows, -1.0, 32, store_tokens=10_000)
    controls = notebook.controls_summary(_control_runs((0.0, 0.0)), [0, 1], width=576, k=32, train_tokens=1,
                                         dead_tokens=1, profile="smoke")
    synthetic = notebook.synthetic_summary(_synthetic_rows((0, 1)), ["TopK k=3", "ReLU L1=0.05"],
                                           sae.synthetic.SyntheticConfig(), tc, (3,), 0.05, n_seeds=2)
    main = {"nmse": 0.2, "explained_variance": 0.8, "l0": 32.0, "dead_fraction": 0.0, "density": np.zeros(3)}
    m = notebook.lesson_metrics(main, notebook.downstream_summary(_ce(), 0.9, 0.8), scaling, frontier, controls,
                                synthetic, store_meta={"massive_excluded": 3, "tokens_per_second": 1700.0},
                                tokens_harvested=48_000, training_tokens=399_360, aux_no_fix=None, nmse_learner=0.2,
                                steering_latent=5, steering_seconds=1.5)
    assert list(m) == ["nmse", "explained_variance", "l0", "dead_fraction", "ce_loss_score", "ce_loss_score_mean_floor",
                       "delta_ce", "kl_sae", "ce_clean", "ce_zero", "ce_mean", "power_law_exponent",
                       "power_law_exponent_ci95", "width_sweep", "tokens_harvested", "sae_training_tokens",
                       "massive_tokens_excluded", "harvest_tokens_per_second", "frontier", "dead_fraction_all_fixes",
                       "dead_fraction_no_fixes", "fix_controls", "fix_effects", "control_seeds", "synthetic",
                       "auxk_loss_dead_latents_no_fix", "nmse_learner_function", "steering_latent", "steering_seconds"]
    assert m["width_sweep"][1] == {"n_latents": 200, "n_tokens": 2_000, "nmse": 0.005}
    assert m["power_law_exponent_ci95"] == list(scaling.ci) and m["control_seeds"] == [0, 1]
    assert m["fix_controls"]["no fixes"] == {"dead_fraction": [0.5, 0.6], "nmse": [0.4, 0.41]}
    assert m["fix_effects"]["AuxK"]["dead_fraction"] == controls.dead_effects["AuxK"]
    assert m["synthetic"]["hierarchical/TopK k=3"]["absorption"] == pytest.approx(0.505)
    assert len(m["frontier"]) == 5 and m["dead_fraction_no_fixes"] == pytest.approx(0.55)
    json.dumps(m)  # plain JSON types only


def test_scaling_summary_reads_the_fixed_sweep_and_the_main_sae():
    rows = [{"n_latents": n, "n_tokens": 1000 * n // 100, "nmse": 2.0 * n ** -0.5} for n in (100, 200, 400)]
    fixed = [{"n_latents": n, "n_tokens": 2000, "nmse": 1.0 * n ** -0.1} for n in (100, 200, 400)]
    s = notebook.scaling_summary(rows, -0.5, 32, store_tokens=4_000, fixed_rows=fixed,
                                 main={"n_latents": 800, "nmse": 0.1, "n_tokens": 4_000}, main_lr=1e-3, sweep_lr=2e-3)
    assert abs(s.fixed_exponent + 0.1) < 1e-6 and abs(s.main_predicted - 2.0 * 800 ** -0.5) < 1e-6
    text = notebook.scaling_markdown(s)
    assert "**The same 2,000 tokens at every width**" in text and "flatter than the proportional one" in text
    assert "above the line by 41%" in text and "8,000 tokens" in text and "1.0 times" in text


def test_auxk_arm_markdown_says_when_the_seeds_are_apart():
    hist = {"dead_fraction": [0.0, 0.5]}
    runs = {controls.AUXK_ON: [{"dead_fraction": 0.3, "nmse": 0.7, "history": hist}] * 2,
            controls.AUXK_OFF: [{"dead_fraction": 0.5, "nmse": 0.8, "history": hist}] * 2}
    a = notebook.auxk_arm_summary(runs, dead_tokens=64, train_tokens=1_000, width=16)
    text = notebook.auxk_arm_markdown(a)
    assert "lower with AuxK in every seed, the two sets of seeds apart" in text
    assert "it lowers the held-out dead fraction in every seed" in text
