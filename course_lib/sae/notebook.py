"""Notebook 03's bookkeeping: its validated settings, its section summaries, their prose, and its metrics.

The notebook shows the experiment; this module holds what is not the experiment:

* :func:`lesson_settings` validates the notebook's own knobs (``LAYER``, ``K``, ``N_DASHBOARDS``,
  ``USE_REFERENCE_SOLUTIONS``) and derives every size of the lesson from the profile
  (:class:`LessonSettings`);
* :func:`evaluate_sae` trains (or loads) one SAE and scores it on held-out activations: one row of a sweep;
* per section, a function that summarises the section's results into a frozen dataclass
  (:func:`frontier_summary`, :func:`scaling_summary`, :func:`controls_summary`, :func:`synthetic_summary`,
  :func:`downstream_summary`, :func:`dashboard_reading`) and one that renders it as the Markdown the
  notebook displays (``*_markdown``);
* :func:`lesson_metrics` assembles ``metrics.json``'s keys from those summaries.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from course_lib import runtime
from course_lib.sae.controls import ALL_FIXES, FIXES, NO_FIXES, effects, summarise, without
from course_lib.sae.dashboards import Codes, next_token_hits, token_purity
from course_lib.sae.default import default_configs
from course_lib.sae.evaluation import (
    late_fall,
    nmse_at_l0,
    power_law_fit_ci,
    reconstruction_metrics,
    training_objective,
)
from course_lib.sae.harvest import HarvestConfig
from course_lib.sae.model import SAEConfig, SparseAutoencoder
from course_lib.sae.store import ActivationStore
from course_lib.sae.synthetic import DATA_KINDS, SyntheticConfig, table
from course_lib.sae.training import SAETrainConfig, load_or_train

# --------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class LessonSettings:
    """Every size notebook 03 derives from its profile and parameters (the names its cells bind)."""

    harvest: HarvestConfig  # training store: SmolLM2's residual stream after block LAYER (harvest_cfg)
    val: HarvestConfig  # held-out store: the same hook on the validation files (val_cfg)
    main: SAEConfig  # the main TopK SAE: the profile's default SAE with k=K (main_cfg)
    train: SAETrainConfig  # the main SAE's training (train_cfg)
    sweep_width: int  # latents of the frontier's SAEs (SWEEP_WIDTH)
    sweep_ks: tuple[int, ...]  # k of the TopK frontier points (SWEEP_KS)
    sweep_lr: float  # one learning rate for every sweep architecture (SWEEP_LR)
    sweep_l1: tuple[float, ...]  # L1 coefficients of the ReLU frontier points (SWEEP_L1)
    sweep_jump_l0: tuple[float, ...]  # L0 penalties of the JumpReLU points (SWEEP_JUMP_L0)
    sweep_batch_ks: tuple[int, ...]  # mean k of the BatchTopK points (SWEEP_BATCH_KS)
    sweep_widths: tuple[int, ...]  # widths of the scaling sweep, section 4 (SWEEP_WIDTHS)
    sweep_train: SAETrainConfig  # the sweeps' training: fewer tokens, lr SWEEP_LR (sweep_train)
    sweep_dead_tokens: int  # dead window of the sweep SAEs, in tokens (SWEEP_DEAD_TOKENS)
    control_width: int  # latents of the dead-latent controls, section 5 (CONTROL_WIDTH)
    control_seeds: tuple[int, ...]  # seeds of the dead-latent controls (CONTROL_SEEDS)
    control_train: SAETrainConfig  # the controls' training (control_train)
    control_dead_tokens: int  # dead window of the control SAEs, in tokens (CONTROL_DEAD_TOKENS)
    synth_seeds: tuple[int, ...]  # seeds of the ground-truth SAEs, section 6 (SYNTH_SEEDS)
    synth_ks: tuple[int, ...]  # k of the ground-truth TopK SAEs (SYNTH_KS)
    synth_l1: float  # L1 coefficient of the ground-truth ReLU SAE (SYNTH_L1)
    synth_base: SyntheticConfig  # the synthetic data (its kind is replaced per dataset) (synth_base)
    synth_train: SAETrainConfig  # the ground-truth SAEs' training (synth_train)
    ce_windows: int  # held-out windows of the downstream loss, section 7 (CE_WINDOWS)
    ce_seq_len: int  # tokens per downstream window, BOS included (CE_SEQ_LEN)


def lesson_settings(profile: str, seed: int, *, layer: object, k: object, n_dashboards: object,
                    use_reference_solutions: object) -> LessonSettings:
    """Validate notebook 03's own parameters and derive the lesson's sizes for ``profile`` and ``seed``.

    ``profile`` and ``seed`` come from :func:`course_lib.runtime.start_run` (already validated). Raises
    :class:`~course_lib.runtime.ParameterError` naming the parameter and its valid values, before any
    compute: ``LAYER`` an int in [0, 29], ``K`` an int in [1, 256] and at most the width of every SAE
    trained with k=K (the main SAE, the sweeps, the controls), ``N_DASHBOARDS`` an int in [0, 20],
    ``USE_REFERENCE_SOLUTIONS`` a bool.
    """
    runtime.check_type("LAYER", layer, int)
    runtime.check_range("LAYER", layer, 0, 29)  # type: ignore[arg-type]
    runtime.check_type("K", k, int)
    runtime.check_range("K", k, 1, 256)  # type: ignore[arg-type]
    runtime.check_type("N_DASHBOARDS", n_dashboards, int)
    runtime.check_range("N_DASHBOARDS", n_dashboards, 0, 20)  # type: ignore[arg-type]
    runtime.check_type("USE_REFERENCE_SOLUTIONS", use_reference_solutions, bool)
    assert isinstance(layer, int) and isinstance(k, int)
    pick = functools.partial(runtime.by_profile, profile)

    # The default SAE of this profile (what notebook 04 loads), with this notebook's knobs applied.
    harvest_cfg, main_cfg, train_cfg = default_configs(profile, seed)
    harvest_cfg = dataclasses.replace(harvest_cfg, layer=layer)
    main_cfg = dataclasses.replace(main_cfg, k=k)
    val_cfg = dataclasses.replace(harvest_cfg, split="val", n_tokens=pick(smoke=1_024, workshop=8_192, full=200_000))

    # Sweeps: smaller SAEs, shorter training, all cached.
    sweep_width = pick(smoke=256, workshop=1_152, full=16_384)
    sweep_ks = pick(smoke=(8, 32), workshop=(8, 32, 64, 128), full=(8, 16, 32, 64, 128))
    # Sweeps train ~80 Adam steps (workshop): at the main SAE's lr (5e-4) weights move ~0.04 in all, too little
    # for an L1 penalty to change L0. The sweeps use 4x that lr (every architecture alike); L1 coefficients
    # chosen to put ReLU's L0 inside TopK's range at that lr.
    sweep_lr = pick(smoke=2e-3, workshop=2e-3, full=train_cfg.lr)
    sweep_l1 = pick(smoke=(6e-3, 2e-2), workshop=(6e-3, 1e-2), full=(3e-3, 5e-3, 7e-3, 1e-2, 2e-2))
    # one JumpReLU and one BatchTopK point in the workshop (each costs about 2-3 TopK SAEs: dense gradients)
    sweep_jump_l0 = pick(smoke=(1e-3,), workshop=(1e-3,), full=(3e-4, 1e-3, 3e-3, 1e-2))
    sweep_batch_ks = pick(smoke=(8,), workshop=(32,), full=(8, 16, 32, 64, 128))
    # scaling sweep (section 4): training tokens grow in proportion to width
    sweep_widths = pick(smoke=(128, 256, 512), workshop=(288, 576, 1_152, 2_304),
                        full=(2_048, 4_096, 8_192, 16_384, 32_768))
    # dead-latent controls (section 5): each fix removed alone, over seeds; smaller SAEs than the sweeps
    control_width = pick(smoke=256, workshop=576, full=4_608)
    # workshop: 2 seeds x 5 configs is what its 6-minute budget affords (3 seeds: about 20 s more)
    control_seeds = tuple(seed + i for i in range(pick(smoke=2, workshop=2, full=5)))
    # every SAE trained with k=K (the main one and the sweeps) needs at least K latents: check now
    runtime.check_range("K", k, 1, min(256, main_cfg.n_latents, sweep_width, control_width, *sweep_widths))
    sweep_train = dataclasses.replace(train_cfg, n_tokens=pick(smoke=4_096, workshop=80_000, full=5_000_000),
                                      lr=sweep_lr, log_every=pick(smoke=1, workshop=5, full=20))
    sweep_dead_tokens = pick(smoke=1_024, workshop=20_000, full=500_000)
    control_train = dataclasses.replace(train_cfg, n_tokens=pick(smoke=4_096, workshop=50_000, full=1_000_000),
                                        log_every=pick(smoke=1, workshop=5, full=20))
    control_dead_tokens = pick(smoke=1_024, workshop=20_000, full=200_000)
    # ground truth (section 6): tiny SAEs on synthetic features, seconds each
    synth_seeds = tuple(seed + i for i in range(pick(smoke=1, workshop=3, full=5)))
    synth_ks = pick(smoke=(3,), workshop=(3,), full=(2, 3, 4))
    synth_base = SyntheticConfig(n_train=pick(smoke=1_024, workshop=8_192, full=16_384),
                                 n_eval=pick(smoke=512, workshop=2_048, full=4_096))
    synth_train = SAETrainConfig(n_tokens=pick(smoke=2_048, workshop=60_000, full=240_000), batch_size=256, lr=1e-2,
                                 seed=seed)
    return LessonSettings(
        harvest=harvest_cfg, val=val_cfg, main=main_cfg, train=train_cfg,
        sweep_width=sweep_width, sweep_ks=sweep_ks, sweep_lr=sweep_lr, sweep_l1=sweep_l1,
        sweep_jump_l0=sweep_jump_l0, sweep_batch_ks=sweep_batch_ks, sweep_widths=sweep_widths,
        sweep_train=sweep_train, sweep_dead_tokens=sweep_dead_tokens,
        control_width=control_width, control_seeds=control_seeds, control_train=control_train,
        control_dead_tokens=control_dead_tokens,
        synth_seeds=synth_seeds, synth_ks=synth_ks, synth_l1=0.05, synth_base=synth_base, synth_train=synth_train,
        ce_windows=pick(smoke=2, workshop=12, full=256), ce_seq_len=pick(smoke=32, workshop=128, full=128),
    )


# --------------------------------------------------------------------------- one SAE of a sweep


def evaluate_sae(store: ActivationStore, x_val: torch.Tensor, cfg: SAEConfig, train_cfg: SAETrainConfig, label: str,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train (or load from the cache) one SAE on ``store`` and score it on held-out ``x_val [N, d_in]``.

    Returns one sweep row: ``kind``, ``theta_moved`` (JumpReLU: mean ``|threshold - jump_init_threshold|``,
    how far the thresholds travelled; else None), ``label`` (the last word of ``label``), ``k``, ``l1_coef``,
    ``l0_coef``, ``n_latents``, held-out ``nmse``, ``l0`` and ``dead_fraction``, the training ``history``
    and ``late_fall`` (:func:`~course_lib.sae.evaluation.late_fall` of its training objective).
    """
    model_sae, hist = load_or_train(store, cfg, train_cfg, device=device, desc=label)
    m = reconstruction_metrics(model_sae, x_val)
    fall = late_fall(training_objective(hist, cfg))
    theta_moved = (float((model_sae.threshold.detach() - cfg.jump_init_threshold).abs().mean())
                   if cfg.kind == "jumprelu" else None)
    return {"kind": cfg.kind, "theta_moved": theta_moved, "label": label.split(" ")[-1], "k": cfg.k,
            "l1_coef": cfg.l1_coef, "l0_coef": cfg.l0_coef, "n_latents": cfg.n_latents, "nmse": m["nmse"],
            "l0": m["l0"], "dead_fraction": m["dead_fraction"], "history": hist, "late_fall": fall}


# --------------------------------------------------------------------------- section 3: the frontier

FRONTIER_KEYS = ("kind", "label", "k", "l1_coef", "l0_coef", "l0", "nmse", "late_fall")  # a frontier point's keys
CONVERGED_FALL = 0.05  # a late fall of the objective above this: the SAE was still learning


@dataclasses.dataclass(frozen=True)
class FrontierComparison:
    """One non-TopK SAE of the frontier against TopK at the same L0."""

    name: str  # architecture ("ReLU + L1", "JumpReLU", "BatchTopK")
    label: str  # its point's label (e.g. "l1=0.006")
    l0: float  # its held-out L0
    nmse: float  # its held-out NMSE
    topk_nmse: float  # TopK's NMSE at that L0 (log-log interpolation); NaN outside TopK's L0 range


@dataclasses.dataclass(frozen=True)
class FrontierSummary:
    """What section 3's frontier says, from one run's sweep rows."""

    steps: int  # Adam steps of every sweep SAE
    batch_size: int  # tokens per step
    width: int  # latents of every sweep SAE
    lr: float  # the sweeps' learning rate
    main_lr: float  # the main SAE's learning rate
    comparisons: tuple[FrontierComparison, ...]  # every non-TopK point, in curve order
    topk_l0_range: tuple[float, float] | None  # (min, max) L0 of the TopK curve; None without TopK points
    thresholds_moved: float | None  # JumpReLU: the largest mean threshold travel over its SAEs; None without any
    jump_init_threshold: float  # where JumpReLU's thresholds start
    still_learning: dict[str, float]  # architecture -> largest late fall of its objective (non-empty curves)
    points: tuple[dict[str, Any], ...]  # every point's FRONTIER_KEYS, in curve order (metrics.json's "frontier")


def frontier_summary(curves: Mapping[str, Sequence[Mapping[str, Any]]], sweep_train: SAETrainConfig,
                     main_train: SAETrainConfig, base: SAEConfig) -> FrontierSummary:
    """Summarise the frontier: each non-TopK SAE's NMSE against TopK's at its L0, JumpReLU's threshold travel,
    and each architecture's convergence (``curves``: ``{architecture: rows of evaluate_sae}``, TopK under
    ``"TopK"``; ``base``: the sweeps' SAEConfig)."""
    topk_rows = list(curves.get("TopK", ()))
    comparisons = tuple(FrontierComparison(name, r["label"], r["l0"], r["nmse"], nmse_at_l0(topk_rows, r["l0"]))
                        for name, rows in curves.items() if name != "TopK" for r in rows)
    jump_rows = list(curves.get("JumpReLU", ()))
    return FrontierSummary(
        steps=sweep_train.n_tokens // sweep_train.batch_size, batch_size=sweep_train.batch_size,
        width=base.n_latents, lr=sweep_train.lr, main_lr=main_train.lr, comparisons=comparisons,
        topk_l0_range=(min(t["l0"] for t in topk_rows), max(t["l0"] for t in topk_rows)) if topk_rows else None,
        thresholds_moved=max(r["theta_moved"] for r in jump_rows) if jump_rows else None,
        jump_init_threshold=base.jump_init_threshold,
        still_learning={name: max(r["late_fall"] for r in rows) for name, rows in curves.items() if rows},
        points=tuple({k: r[k] for k in FRONTIER_KEYS} for rows in curves.values() for r in rows),
    )


def frontier_markdown(s: FrontierSummary) -> str:
    """The frontier's reading, as Markdown: the budget, each comparison with TopK, JumpReLU's thresholds, and
    the convergence check."""
    lines = [f"All SAEs here trained {s.steps} steps of {s.batch_size} tokens at {s.width} latents, with one "
             f"learning rate for every architecture ({s.lr:g}; the main SAE, trained longer, uses {s.main_lr:g})."]
    for c in s.comparisons:
        ref = c.topk_nmse
        if np.isfinite(ref):
            verdict = (f"TopK at that L0 (interpolated): {ref:.3f}, so {c.name} is "
                       f"{'better' if c.nmse < ref else 'worse'} by {abs(c.nmse / ref - 1):.0%}.")
        else:
            lo, hi = s.topk_l0_range if s.topk_l0_range is not None else (math.nan, math.nan)
            verdict = f"outside TopK's L0 range ({lo:.0f}-{hi:.0f}), so no like-for-like comparison."
        lines.append(f"* {c.name} {c.label}: L0 {c.l0:.1f}, NMSE {c.nmse:.3f}; " + verdict)
    if s.thresholds_moved is not None:
        lines.append(f"JumpReLU's thresholds moved by {s.thresholds_moved:.3f} on average (at most, over its SAEs) "
                     f"from their start at {s.jump_init_threshold:g}: Adam moves a parameter by about the learning "
                     f"rate per step ({s.lr:g} x {s.steps} steps = {s.lr * s.steps:.3f} at most), so at this budget "
                     "its L0 is set mostly by where the thresholds start, and its L0 penalty has had little room to act.")
    unconverged = [f"{n} ({100 * v:.0f}%)" for n, v in s.still_learning.items() if v > CONVERGED_FALL]
    if unconverged:
        lines.append(f"**Convergence check:** the objective still fell by more than 5% late in training for "
                     f"{', '.join(unconverged)} (largest fall per architecture). These SAEs stopped while still "
                     "learning, so this frontier compares architectures **at equal compute, not at convergence**; an "
                     "architecture whose objective still falls more is further from its converged curve than the "
                     "others, and its gap is overstated here. The `full` profile trains the same sweep on many more "
                     "tokens.")
    else:
        lines.append("**Convergence check:** every objective fell by at most 5% late in training: the curves are "
                     "close to converged at this learning rate, and the comparison is a fair one.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- section 4: scaling with width


@dataclasses.dataclass(frozen=True)
class ScalingSummary:
    """Section 4's NMSE-against-width power law, from the width sweep's rows."""

    widths: tuple[int, ...]  # latents of each SAE, in sweep order
    n_tokens: tuple[int, ...]  # training tokens of each SAE (in proportion to width)
    nmse: tuple[float, ...]  # held-out NMSE of each SAE
    k: int  # active latents per token of every SAE
    exponent: float  # the fitted exponent b of NMSE ~ a n^b (as the figure fits it)
    ci: tuple[float, float]  # 95% interval on the exponent, from the residuals of the log-log fit
    store_tokens: int  # tokens in the training store
    widest_epochs: float  # passes of the widest SAE over the store


def scaling_summary(width_rows: Sequence[Mapping[str, Any]], exponent: float, k: int,
                    store_tokens: int) -> ScalingSummary:
    """Fit the power law's interval to ``width_rows`` (``n_latents``, ``n_tokens``, ``nmse`` each) and count the
    widest SAE's passes over a store of ``store_tokens`` tokens; ``exponent`` is the figure's fitted one."""
    fit = power_law_fit_ci([r["n_latents"] for r in width_rows], [r["nmse"] for r in width_rows])
    widest = max(width_rows, key=lambda r: r["n_latents"])
    return ScalingSummary(
        widths=tuple(r["n_latents"] for r in width_rows), n_tokens=tuple(r["n_tokens"] for r in width_rows),
        nmse=tuple(r["nmse"] for r in width_rows), k=k, exponent=exponent, ci=tuple(fit["ci"]),
        store_tokens=store_tokens, widest_epochs=widest["n_tokens"] / store_tokens,
    )


def scaling_markdown(s: ScalingSummary) -> str:
    """The power law's reading, as Markdown: widths and tokens, the exponent and its interval, what the
    interval says, and the caveats (too few widths, repeated tokens)."""
    lo, hi = s.ci
    verdict = ("NMSE falls with width: the whole interval lies below 0." if hi < 0 else
               "the interval includes 0, so this run cannot tell the curve from flat." if lo <= 0 else
               "NMSE *rises* with width: the widest SAEs are the least trained or overfit the small store.")
    return (
        f"{len(s.widths)} widths from {min(s.widths):,} to {max(s.widths):,} latents, trained on "
        + ", ".join(f"{n:,}" for n in s.n_tokens) + f" tokens (k={s.k}). Fitted exponent "
        f"**b = {s.exponent:.3f}**, 95% CI [{lo:.3f}, {hi:.3f}] (from how far the points sit off the line; one seed "
        f"per width, so seed-to-seed noise is not in it): {verdict} "
        + ("Fewer than the five widths a scaling fit needs fit in this profile's budget; the `full` profile runs the "
           "wider sweep. " if len(s.widths) < 5 else "")
        + (f"The widest SAE passes over the {s.store_tokens:,}-token store {s.widest_epochs:.1f} times, so its "
           "training tokens are not all fresh (the paper's are); NMSE here is on separate held-out tokens, which is "
           "what would expose overfitting." if s.widest_epochs > 1 else ""))


# --------------------------------------------------------------------------- section 5: dead-latent controls

CONTROL_TOLERANCE = 0.005  # changes under half a percent (of latents, or of NMSE): no effect


@dataclasses.dataclass(frozen=True)
class ControlsSummary:
    """Section 5's single-factor controls of the dead-latent fixes, over seeds."""

    dead_by: dict[str, list[float]]  # control name -> held-out dead fraction per seed (fix_controls order)
    nmse_by: dict[str, list[float]]  # control name -> held-out NMSE per seed
    dead_effects: dict[str, dict[str, Any]]  # fix -> controls.effects on the dead fraction (delta, noise, measurable)
    nmse_effects: dict[str, dict[str, Any]]  # fix -> controls.effects on the NMSE
    dead_stats: dict[str, dict[str, float]]  # control name -> controls.summarise of the dead fraction
    nmse_stats: dict[str, dict[str, float]]  # control name -> controls.summarise of the NMSE
    auxk_idle: bool  # the recipe's AuxK loss stayed exactly 0 in every seed (no latent died in training)
    seeds: tuple[int, ...]  # the seeds
    width: int  # latents of every control SAE
    k: int  # active latents per token
    train_tokens: int  # training tokens of each SAE
    dead_tokens: int  # the dead window, in tokens
    profile: str  # the run's profile


def controls_summary(control_runs: Mapping[str, Sequence[Mapping[str, Any]]], seeds: Sequence[int], *, width: int,
                     k: int, train_tokens: int, dead_tokens: int, profile: str) -> ControlsSummary:
    """Per control (``control_runs``: ``{name: rows of evaluate_sae, one per seed}`` with the names of
    :func:`~course_lib.sae.controls.fix_controls`): dead fraction and NMSE per seed, their summaries, and per fix
    whether removing it alone moved either by more than the seeds' spread (:func:`~course_lib.sae.controls.effects`
    with tolerance :data:`CONTROL_TOLERANCE`)."""
    dead_by = {name: [r["dead_fraction"] for r in runs] for name, runs in control_runs.items()}
    nmse_by = {name: [r["nmse"] for r in runs] for name, runs in control_runs.items()}
    return ControlsSummary(
        dead_by=dead_by, nmse_by=nmse_by,
        dead_effects=effects(dead_by, tolerance=CONTROL_TOLERANCE),
        nmse_effects=effects(nmse_by, tolerance=CONTROL_TOLERANCE),
        dead_stats=summarise(dead_by), nmse_stats=summarise(nmse_by),
        auxk_idle=all(max(r["history"]["penalty"]) == 0 for r in control_runs[ALL_FIXES]),  # TopK: penalty = AuxK
        seeds=tuple(seeds), width=width, k=k, train_tokens=train_tokens, dead_tokens=dead_tokens, profile=profile,
    )


def _spread(s: Mapping[str, float], fmt: str = ".3f") -> str:
    """``mean (min–max)`` over seeds, or the mean alone for one seed."""
    return f"{s['mean']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})" if s["n"] > 1 else f"{s['mean']:{fmt}}"


def controls_markdown(s: ControlsSummary) -> str:
    """What the controls say, as Markdown: one verdict per fix, all three removed, and the caveats of few seeds
    and small SAEs."""
    all_, none = ALL_FIXES, NO_FIXES
    lines = []
    for fix in FIXES:
        name, d, n = without(fix), s.dead_effects[fix], s.nmse_effects[fix]
        if not (d["measurable"] or n["measurable"]):
            line = (f"**{fix}: no measurable effect** at this budget: removing it alone moves the dead fraction by "
                    f"{d['delta']:+.4f} and the NMSE by {n['delta']:+.4f}, within the seeds' spread.")
            if fix == "AuxK" and s.auxk_idle:
                line += (" That is because AuxK only acts on dead latents, and with the other two fixes no latent died "
                         "during training (its loss stayed exactly 0 in every seed): this run cannot show what AuxK is "
                         "for.")
        else:
            parts = []
            if d["measurable"]:
                parts.append(f"dead fraction {_spread(s.dead_stats[name])} against {_spread(s.dead_stats[all_])}")
            if n["measurable"]:
                parts.append(f"held-out NMSE {_spread(s.nmse_stats[name])} against {_spread(s.nmse_stats[all_])}")
            unmoved = [] if d["measurable"] else ["the dead fraction does not move measurably"]
            unmoved += [] if n["measurable"] else ["the NMSE does not move measurably"]
            line = (f"**{fix} matters**: without it, " + " and ".join(parts)
                    + (f" ({'; '.join(unmoved)})" if unmoved else "") + ".")
        lines.append("* " + line)
    lines.append(f"* **All three removed**: dead fraction {_spread(s.dead_stats[none])}, NMSE "
                 f"{_spread(s.nmse_stats[none])} (recipe: {_spread(s.dead_stats[all_])}, {_spread(s.nmse_stats[all_])}).")
    n_seeds = len(s.seeds)
    return (
        f"**What the controls say** ({s.width} latents, k={s.k}, {s.train_tokens:,} training tokens, dead "
        f"window {s.dead_tokens:,} tokens, {n_seeds} seed{'s' if n_seeds > 1 else ''}; mean and (min–max) over seeds; "
        "dead = never fires on the held-out tokens; an effect counts when the two configs' seeds do not overlap):\n\n"
        + "\n".join(lines)
        + ("\n\nWith a single seed there is no spread to compare against: read these as anecdotes." if n_seeds == 1
           else "")
        + (f"\n\n{n_seeds} seeds is what the {s.profile} profile's time budget affords; with so few, \"the seeds do "
           "not overlap\" is a weak test, so trust only the large effects. The `full` profile runs more seeds of wider "
           "SAEs trained longer." if s.profile != "full" else "")
        + f"\n\nThese are small SAEs trained briefly ({s.profile} profile); the paper's fixes were tuned for SAEs "
        "thousands of times larger trained for billions of tokens, where more latents die late in training and AuxK "
        "has work to do.")


# --------------------------------------------------------------------------- section 6: ground truth

SYNTHETIC_METRICS = ("decoder_mcc", "activation_mcc", "mmcs", "nmse", "l0", "absorption", "parent_recall_alone",
                     "parent_recall_with_child", "child_parent_cosine", "dead_fraction")  # summarised per cell


@dataclasses.dataclass(frozen=True)
class SyntheticSummary:
    """Section 6's recovery and absorption results, summarised over seeds."""

    tables: dict[str, dict[tuple[str, str], dict[str, float]]]  # metric -> (data kind, SAE label) -> seed summary
    labels: tuple[str, ...]  # the SAEs' labels, in training order
    topk: str  # label of the TopK SAE the prose reads (the middle k)
    relu: str  # label of the ReLU + L1 SAE
    absorbed: dict[str, bool]  # label -> absorption above the control in every seed, and children lean to parent
    leans: dict[str, bool]  # label -> children's decoder rows lean toward the parent more than on the control
    n_seeds: int  # seeds (datasets and inits) per cell
    n_features: int  # true features
    d: int  # dimension of the activation space
    expected_l0: float  # expected active features per sample
    n_latents: int  # latents of every SAE
    train_tokens: int  # training samples of every SAE
    true_child_parent_cosine: float  # mean cosine of the true child directions with their parent's (random)


def synthetic_summary(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], data: SyntheticConfig,
                      train: SAETrainConfig, ks: Sequence[int], l1: float, n_seeds: int) -> SyntheticSummary:
    """Summarise the ground-truth runs (``rows`` of :func:`~course_lib.sae.synthetic.train_and_score` for the SAEs
    ``labels``): every metric of :data:`SYNTHETIC_METRICS` per (data kind, SAE) over seeds, and per read SAE
    (TopK at the middle of ``ks``, ReLU with ``l1``) whether absorption and the children's lean exceed the
    independent control in every seed (the seeds of the two datasets do not overlap)."""
    tables = {m: table(list(rows), m) for m in SYNTHETIC_METRICS}

    def above(metric: str, label: str) -> bool:
        return tables[metric][("hierarchical", label)]["min"] > tables[metric][("independent", label)]["max"]

    topk, relu = f"TopK k={ks[len(ks) // 2]}", f"ReLU L1={l1:g}"
    leans = {label: above("child_parent_cosine", label) for label in (topk, relu)}
    return SyntheticSummary(
        tables=tables, labels=tuple(labels), topk=topk, relu=relu,
        absorbed={label: above("absorption", label) and leans[label] for label in (topk, relu)}, leans=leans,
        n_seeds=n_seeds, n_features=data.n_features, d=data.d, expected_l0=data.expected_l0,
        n_latents=2 * data.n_features, train_tokens=train.n_tokens,
        true_child_parent_cosine=rows[0]["true_child_parent_cosine"],
    )


def synthetic_markdown(s: SyntheticSummary) -> str:
    """The ground truth's reading, as Markdown: the recovery table, which SAE recovers what, and the absorption
    verdict of each read SAE against the control."""

    def cell(metric: str, data: str, label: str, fmt: str = ".3f") -> str:
        st = s.tables[metric][(data, label)]
        return f"{st['mean']:{fmt}} ± {st['std']:{fmt}}" if st["n"] > 1 else f"{st['mean']:{fmt}}"

    def mean(metric: str, data: str, label: str) -> float:
        return s.tables[metric][(data, label)]["mean"]

    rows_md = ["| data | SAE | L0 | NMSE | mean max cos | decoder MCC | activation MCC |", "|---|---|---|---|---|---|---|"]
    for data in DATA_KINDS:
        for label in s.labels:
            rows_md.append(f"| {data} | {label} | {cell('l0', data, label, '.1f')} | {cell('nmse', data, label)} | "
                           f"{cell('mmcs', data, label)} | {cell('decoder_mcc', data, label)} | "
                           f"{cell('activation_mcc', data, label)} |")
    topk, relu = s.topk, s.relu
    absorb = []
    for label in (topk, relu):
        if s.n_seeds == 1:
            verdict = "one seed, no spread: an anecdote, not a result"
        elif s.absorbed[label]:
            verdict = ("higher than on the control in every seed, and so is the children's lean toward the parent: "
                       "absorption")
        elif s.leans[label]:
            verdict = ("the children's decoder rows lean toward the parent in every seed, but the parent's latent still "
                       "fires: absorption in the geometry, not measurably in the firing")
        else:
            verdict = "the seeds of the two datasets overlap: no clear absorption at this budget"
        absorb.append(
            f"* **{label}**: absorption {cell('absorption', 'hierarchical', label)} on the hierarchical data against "
            f"{cell('absorption', 'independent', label)} on the control ({verdict}). The parent's latent fires on "
            f"{100 * mean('parent_recall_alone', 'hierarchical', label):.0f}% of the samples where the parent fires "
            f"alone but {100 * mean('parent_recall_with_child', 'hierarchical', label):.0f}% of those where a child "
            f"fires too; the children's decoder rows have cosine {cell('child_parent_cosine', 'hierarchical', label, '.2f')} "
            f"with their parent's direction (control {cell('child_parent_cosine', 'independent', label, '.2f')}; the "
            f"true child directions: {s.true_child_parent_cosine:+.2f} on average, random).")
    spare = mean("dead_fraction", "independent", topk)
    relu_lags = mean("decoder_mcc", "independent", relu) < mean("decoder_mcc", "independent", topk) - 0.02
    relu_dense = mean("l0", "independent", relu) > 1.5 * s.expected_l0
    return (
        f"**Recovery** ({s.n_features} features in {s.d} dimensions, expected "
        f"{s.expected_l0:.2f} active per sample; {s.n_latents} latents; {s.train_tokens:,} training "
        + (f"samples; mean ± std over {s.n_seeds} seeds, each a new set of directions, data and init):\n\n"
           if s.n_seeds > 1 else "samples; one seed, so no spread):\n\n")
        + "\n".join(rows_md)
        + f"\n\n**Reading it.** {topk} recovers the independent features with decoder MCC "
        f"{cell('decoder_mcc', 'independent', topk)}; correlated features give {cell('decoder_mcc', 'correlated', topk)} "
        f"and hierarchical ones {cell('decoder_mcc', 'hierarchical', topk)}. "
        + ("ReLU + L1 recovers less at the same number of steps "
           f"({cell('decoder_mcc', 'independent', relu)} on independent features): as in section 3 it converges more "
           "slowly (its L1 penalty first shrinks everything)"
           + (f", and its L0 ({mean('l0', 'independent', relu):.1f}) is far above the data's. " if relu_dense else ". ")
           if relu_lags else
           f"ReLU + L1 reaches {cell('decoder_mcc', 'independent', relu)} on independent features. ")
        + "\n\n**Absorption** (hierarchical data against the independent control):\n\n" + "\n".join(absorb)
        + ("\n\nSo an SAE can reconstruct well and still hand you a \"parent\" latent that misses many of the cases its "
           "children cover: on SmolLM2 this would look like a clean latent with puzzling gaps, and nothing in the NMSE "
           "warns about it." if any(s.absorbed.values()) else "")
        + (f"\n\nThe dead fraction of {topk} on independent data ({cell('dead_fraction', 'independent', topk, '.2f')}) "
           "counts spare latents: there are twice as many latents as features, so up to half of them have no feature "
           "of their own to find; the dead ones are among those." if spare > 0.05 else ""))


# --------------------------------------------------------------------------- section 7: downstream loss


@dataclasses.dataclass(frozen=True)
class DownstreamSummary:
    """Section 7's downstream numbers: the model's loss with the SAE spliced in, against two floors."""

    n_predictions: int  # held-out next-token predictions scored
    ce_clean: float  # CE of the model as it is (nats per token)
    ce_sae: float  # CE with the SAE's reconstruction spliced in
    delta_ce: float  # ce_sae - ce_clean
    kl_sae: float  # mean KL(clean || SAE-spliced) next-token distribution
    ce_zero: float  # CE with the residual zeroed (zero ablation)
    kl_zero: float  # mean KL(clean || zero-ablated)
    ce_mean: float  # CE with the residual replaced by its mean over the store (mean ablation)
    kl_mean: float  # mean KL(clean || mean-ablated)
    score_zero: float  # CE-loss score against the zero floor (the learner's function)
    score_mean: float  # CE-loss score against the mean floor (the learner's function)


def downstream_summary(ce: Mapping[str, Any], score_zero: float, score_mean: float) -> DownstreamSummary:
    """Collect :func:`~course_lib.sae.evaluation.downstream_ce`'s output (computed with ``mean_act``) and the two
    CE-loss scores into one record."""
    return DownstreamSummary(
        n_predictions=ce["n_predictions"], ce_clean=ce["ce_clean"], ce_sae=ce["ce_sae"], delta_ce=ce["delta_ce"],
        kl_sae=ce["kl_sae"], ce_zero=ce["ce_zero"], kl_zero=ce["kl_zero"], ce_mean=ce["ce_mean"],
        kl_mean=ce["kl_mean"], score_zero=score_zero, score_mean=score_mean,
    )


def downstream_markdown(s: DownstreamSummary) -> str:
    """The downstream reading, as Markdown: ΔCE, KL, both floors and what the score against each floor says."""
    return (
        f"**Downstream, on {s.n_predictions:,} held-out predictions.** Clean CE {s.ce_clean:.3f} nats; with the SAE "
        f"spliced in {s.ce_sae:.3f}: **ΔCE = {s.delta_ce:.3f} nats** (+{100 * s.delta_ce / s.ce_clean:.0f}% over "
        f"clean), KL(clean ‖ SAE) = {s.kl_sae:.3f} nats per token. The floors: zero ablation {s.ce_zero:.2f} nats "
        f"(KL {s.kl_zero:.2f}), mean ablation {s.ce_mean:.2f} nats (KL {s.kl_mean:.2f}). So the CE-loss score is "
        f"**{s.score_zero:.3f}** against the zero floor but **{s.score_mean:.3f}** against the mean floor: "
        + ("the SAE does worse than mean ablation, so this SAE destroys more than it keeps downstream. "
           if s.score_mean < 0 else
           f"the SAE recovers {100 * s.score_mean:.0f}% of what mean ablation loses. ")
        + "The score depends on its floor; ΔCE and KL do not, which is why papers report them beside it.")


# --------------------------------------------------------------------------- section 8: reading the dashboards

PROMOTED_TOP = 50  # promoted tokens checked against what follows a latent's contexts


@dataclasses.dataclass(frozen=True)
class LatentReading:
    """One dashboard latent: is it a single-token latent, and does its promoted list predict the next token?"""

    latent: int  # latent index
    token: str  # repr of its most common token among its strongest contexts ("-" if none)
    purity: float  # share of its strongest contexts on that token
    n_contexts: int  # strongest contexts read (at most n_top)
    next_hits: float  # share of those contexts whose next token is among its PROMOTED_TOP promoted tokens
    n_next: int  # contexts with a next token


@dataclasses.dataclass(frozen=True)
class DashboardReading:
    """Section 8's reading of the shown dashboards."""

    latents: tuple[LatentReading, ...]  # one per dashboard, in display order
    vocab: int  # vocabulary size (chance of a promoted-token hit: PROMOTED_TOP / vocab)
    layers_after: int  # the model's layers after the SAE's layer (skipped by the direct path)
    layer: int  # the SAE's layer


def dashboard_reading(codes: Codes, autoencoder: SparseAutoencoder, w_u: torch.Tensor, latents: Sequence[int],
                      tokenizer: Any, n_layers: int, layer: int, n_top: int = 20) -> DashboardReading:
    """For each latent: its most common token among its ``n_top`` strongest contexts (token purity) and how often
    the token after those contexts is among its promoted tokens (``w_u [d_model, vocab]``, the direct path)."""
    out = []
    for latent in latents:
        tok_id, purity, m = token_purity(codes, latent, n=n_top)
        share, n_ctx = next_token_hits(codes, autoencoder, w_u, latent, n=n_top, top=PROMOTED_TOP)
        word = repr(tokenizer.decode([tok_id])) if tok_id is not None else "-"
        out.append(LatentReading(latent, word, purity, m, share, n_ctx))
    return DashboardReading(latents=tuple(out), vocab=int(w_u.shape[1]), layers_after=n_layers - layer - 1,
                            layer=layer)


def dashboard_markdown(r: DashboardReading) -> str:
    """The dashboards' reading, as Markdown: one line per latent, then what the promoted lists are worth at a
    middle layer. Empty when no dashboard was shown."""
    if not r.latents:
        return ""
    lines = []
    for x in r.latents:
        kind = ("a clean single-token latent" if x.purity >= 0.8 else "mostly one token: check the weaker bands"
                if x.purity >= 0.4 else "no single token: read its contexts for the common theme")
        lines.append(f"* latent {x.latent}: {x.token} in {round(x.purity * x.n_contexts)} of its {x.n_contexts} "
                     f"strongest contexts ({kind}); the token that follows those contexts is among its "
                     f"{PROMOTED_TOP} most promoted tokens in {x.next_hits:.0%} of {x.n_next}.")
    chance = PROMOTED_TOP / r.vocab
    return (
        "**Reading the dashboards** (from this run):\n\n" + "\n".join(lines) + "\n\n"
        f"Chance for the last number is {chance:.2%} ({PROMOTED_TOP} of {r.vocab:,} tokens). The promoted and "
        f"suppressed lists read the decoder direction through the final norm and unembedding only, skipping the "
        f"{r.layers_after} layers after layer {r.layer}: for a mid-layer latent they describe a direct "
        "effect the model barely uses, so they often look like noise and rarely name what comes next "
        f"(mean {np.nanmean([x.next_hits for x in r.latents]):.0%} here). Trust the contexts; for the latent's real "
        "effect on the output, use the steering widget in section 9 (its logit changes go through every later layer).")


# --------------------------------------------------------------------------- section 10: metrics.json


def lesson_metrics(main: Mapping[str, Any], downstream: DownstreamSummary, scaling: ScalingSummary,
                   frontier: FrontierSummary, controls: ControlsSummary, synthetic: SyntheticSummary, *,
                   store_meta: Mapping[str, Any], tokens_harvested: int, training_tokens: int,
                   aux_no_fix: float | None, nmse_learner: float, steering_latent: int,
                   steering_seconds: float) -> dict[str, Any]:
    """Notebook 03's ``metrics.json`` keys, in order: the main SAE's held-out metrics (``main``, from
    :func:`~course_lib.sae.evaluation.reconstruction_metrics`), the downstream loss, the power law, the store
    (``store_meta``: the activation store's meta), the frontier, the dead-latent controls, the ground truth,
    and the exercises' and the steering widget's numbers."""
    return {
        "nmse": main["nmse"],
        "explained_variance": main["explained_variance"],
        "l0": main["l0"],
        "dead_fraction": main["dead_fraction"],
        "ce_loss_score": downstream.score_zero,
        "ce_loss_score_mean_floor": downstream.score_mean,
        "delta_ce": downstream.delta_ce,
        "kl_sae": downstream.kl_sae,
        "ce_clean": downstream.ce_clean,
        "ce_zero": downstream.ce_zero,
        "ce_mean": downstream.ce_mean,
        "power_law_exponent": scaling.exponent,
        "power_law_exponent_ci95": list(scaling.ci),
        "width_sweep": [{"n_latents": n, "n_tokens": t, "nmse": e}
                        for n, t, e in zip(scaling.widths, scaling.n_tokens, scaling.nmse, strict=True)],
        "tokens_harvested": tokens_harvested,
        "sae_training_tokens": training_tokens,
        "massive_tokens_excluded": store_meta["massive_excluded"],
        "harvest_tokens_per_second": store_meta["tokens_per_second"],
        "frontier": [dict(p) for p in frontier.points],
        "dead_fraction_all_fixes": controls.dead_stats[ALL_FIXES]["mean"],
        "dead_fraction_no_fixes": controls.dead_stats[NO_FIXES]["mean"],
        "fix_controls": {name: {"dead_fraction": controls.dead_by[name], "nmse": controls.nmse_by[name]}
                         for name in controls.dead_by},
        "fix_effects": {fix: {"dead_fraction": controls.dead_effects[fix], "nmse": controls.nmse_effects[fix]}
                        for fix in FIXES},
        "control_seeds": list(controls.seeds),
        "synthetic": {f"{data}/{label}": {m: synthetic.tables[m][(data, label)]["mean"] for m in synthetic.tables}
                      for data in DATA_KINDS for label in synthetic.labels},
        "auxk_loss_dead_latents_no_fix": aux_no_fix,
        "nmse_learner_function": nmse_learner,
        "steering_latent": steering_latent,
        "steering_seconds": steering_seconds,
    }
