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
import torch.nn.functional as F

from course_lib import corpus, runtime
from course_lib.sae.controls import ALL_FIXES, AUXK_OFF, AUXK_ON, FIXES, NO_FIXES, effects, summarise, without
from course_lib.sae.dashboards import (
    Codes,
    content_words,
    next_token_hits,
    prose_share,
    theme_latent,
    token_purity,
)
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
    auxk_dead_tokens: int  # the shorter dead window of the AuxK arm, section 5 (AUXK_DEAD_TOKENS)
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
    # Sweeps train ~80 Adam steps (workshop): at lr 5e-4 weights move ~0.04 in all, too little for an L1
    # penalty to change L0. The sweeps use 2e-3 (every architecture alike; the main SAE too); L1 coefficients
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
        auxk_dead_tokens=pick(smoke=256, workshop=4_096, full=50_000),
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
             f"learning rate for every architecture ({s.lr:g}; "
             + (f"the main SAE, trained longer, uses {s.main_lr:g})." if s.main_lr != s.lr else
                "the main SAE uses the same rate over more steps).")]
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
    """Section 4's NMSE-against-width power laws (tokens in proportion to width, and the same tokens at every
    width), and where the main SAE falls against them."""

    widths: tuple[int, ...]  # latents of each SAE, in sweep order
    n_tokens: tuple[int, ...]  # training tokens of each SAE (in proportion to width)
    nmse: tuple[float, ...]  # held-out NMSE of each SAE
    k: int  # active latents per token of every SAE
    exponent: float  # the fitted exponent b of NMSE ~ a n^b (as the figure fits it)
    ci: tuple[float, float]  # 95% interval on the exponent, from the residuals of the log-log fit
    store_tokens: int  # tokens in the training store
    widest_epochs: float  # passes of the widest SAE over the store
    fixed_tokens: int | None = None  # training tokens of every SAE of the fixed-budget sweep (None: no such sweep)
    fixed_widths: tuple[int, ...] = ()  # its widths
    fixed_nmse: tuple[float, ...] = ()  # its held-out NMSE per width
    fixed_exponent: float = math.nan  # its fitted exponent
    fixed_ci: tuple[float, float] = (math.nan, math.nan)  # its 95% interval
    prefactor: float = math.nan  # a of the proportional fit
    main_width: int | None = None  # the main SAE's latents (None: not compared)
    main_nmse: float = math.nan  # its held-out NMSE
    main_tokens: int = 0  # its training tokens
    main_predicted: float = math.nan  # the proportional fit's NMSE at its width (an extrapolation beyond the sweep)
    main_lr: float = math.nan  # its learning rate
    sweep_lr: float = math.nan  # the sweeps' learning rate


def scaling_summary(width_rows: Sequence[Mapping[str, Any]], exponent: float, k: int,
                    store_tokens: int, fixed_rows: Sequence[Mapping[str, Any]] = (),
                    main: Mapping[str, Any] | None = None, main_lr: float = math.nan,
                    sweep_lr: float = math.nan) -> ScalingSummary:
    """Fit the power law's interval to ``width_rows`` (``n_latents``, ``n_tokens``, ``nmse`` each) and count the
    widest SAE's passes over a store of ``store_tokens`` tokens; ``exponent`` is the figure's fitted one.
    ``fixed_rows``: the same-tokens sweep (fitted alike); ``main`` (``n_latents``, ``nmse``, ``n_tokens``): the main
    SAE, compared with the proportional fit's value at its width."""
    fit = power_law_fit_ci([r["n_latents"] for r in width_rows], [r["nmse"] for r in width_rows])
    widest = max(width_rows, key=lambda r: r["n_latents"])
    extra: dict[str, Any] = {}
    if fixed_rows:
        ff = power_law_fit_ci([r["n_latents"] for r in fixed_rows], [r["nmse"] for r in fixed_rows])
        extra.update(fixed_tokens=int(fixed_rows[0]["n_tokens"]), fixed_widths=tuple(r["n_latents"] for r in fixed_rows),
                     fixed_nmse=tuple(r["nmse"] for r in fixed_rows), fixed_exponent=float(ff["b"]),
                     fixed_ci=tuple(ff["ci"]))
    if main is not None:
        extra.update(main_width=int(main["n_latents"]), main_nmse=float(main["nmse"]), main_tokens=int(main["n_tokens"]),
                     main_predicted=float(fit["a"] * main["n_latents"] ** fit["b"]))
    return ScalingSummary(
        widths=tuple(r["n_latents"] for r in width_rows), n_tokens=tuple(r["n_tokens"] for r in width_rows),
        nmse=tuple(r["nmse"] for r in width_rows), k=k, exponent=exponent, ci=tuple(fit["ci"]),
        store_tokens=store_tokens, widest_epochs=widest["n_tokens"] / store_tokens, prefactor=float(fit["a"]),
        main_lr=main_lr, sweep_lr=sweep_lr, **extra,
    )


def scaling_markdown(s: ScalingSummary) -> str:
    """The power laws' reading, as Markdown: widths and tokens, each exponent and its interval, what the two fits
    show side by side, where the main SAE falls, and the caveats (too few widths, repeated tokens)."""
    lo, hi = s.ci
    verdict = ("NMSE falls with width: the whole interval lies below 0." if hi < 0 else
               "the interval includes 0, so this run cannot tell the curve from flat." if lo <= 0 else
               "NMSE *rises* with width: the widest SAEs are the least trained or overfit the small store.")
    text = (
        f"**Tokens in proportion to width**: {len(s.widths)} widths from {min(s.widths):,} to {max(s.widths):,} latents, "
        "trained on " + ", ".join(f"{n:,}" for n in s.n_tokens) + f" tokens (k={s.k}). Fitted exponent "
        f"**b = {s.exponent:.3f}**, 95% CI [{lo:.3f}, {hi:.3f}] (from how far the points sit off the line; one seed "
        f"per width, so seed-to-seed noise is not in it): {verdict} "
        + ("Fewer than the five widths a scaling fit needs fit in this profile's budget; the `full` profile runs the "
           "wider sweep. " if len(s.widths) < 5 else "")
        + (f"The widest SAE passes over the {s.store_tokens:,}-token store {s.widest_epochs:.1f} times, so its "
           "training tokens are not all fresh (the paper's are); NMSE here is on separate held-out tokens, which is "
           "what would expose overfitting." if s.widest_epochs > 1 else ""))
    if s.fixed_tokens is not None:
        flo, fhi = s.fixed_ci
        steeper = s.exponent < s.fixed_exponent
        text += (
            f"\n\n**The same {s.fixed_tokens:,} tokens at every width** ("
            + ", ".join(f"{w:,}: {v:.3f}" for w, v in zip(s.fixed_widths, s.fixed_nmse))
            + f"): b = {s.fixed_exponent:.3f}, 95% CI [{flo:.3f}, {fhi:.3f}]. "
            + (f"This curve is {'flatter' if steeper else 'steeper'} than the proportional one: "
               + ("at a fixed budget the wide SAEs are under-trained (each latent is selected less often), so giving "
                  "every width the same tokens understates what width buys. The proportional fit, in turn, credits width "
                  "with what longer training buys. Neither is the law at convergence, which would need every width "
                  "trained until its loss stops falling (the `full` profile goes further in that direction)."
                  if steeper else
                  "in this run extra tokens did not help the wide SAEs more than the narrow ones, so the proportional "
                  "fit's exponent is not just a training-length effect.")))
    if s.main_width is not None:
        ratio = s.main_nmse / s.main_predicted
        rule_tokens = int(round(max(s.n_tokens) * s.main_width / max(s.widths)))
        text += (
            f"\n\n**The main SAE** (the star; {s.main_width:,} latents, {s.main_tokens:,} tokens, lr {s.main_lr:g}, "
            f"not part of the fits): held-out NMSE **{s.main_nmse:.3f}**, against **{s.main_predicted:.3f}** from the "
            f"proportional fit at its width ({s.prefactor:.2f} x {s.main_width:,}^{s.exponent:.3f}, an extrapolation "
            f"beyond the widest sweep SAE). "
            + ("It sits on the extrapolated line (within 10%)." if abs(ratio - 1) <= 0.10 else
               f"It sits {'above' if ratio > 1 else 'below'} the line by {abs(ratio - 1):.0%}: "
               + (f"the proportional rule would give it {rule_tokens:,} tokens at the sweeps' learning rate "
                  f"({s.sweep_lr:g}); it trains on {s.main_tokens:,} at {s.main_lr:g}. The fixed-budget curve shows how "
                  "much under-training costs at these budgets, so the gap says the main SAE is trained short for its "
                  f"width (it sees each of the store's tokens {s.main_tokens / s.store_tokens:.1f} times), not that the "
                  "law breaks; the `full` profile trains it far longer." if ratio > 1 and s.main_tokens < rule_tokens
                  else "it trains at its own learning rate and budget, so the sweep's rule extrapolated is only a rough "
                  "guide to it.")))
    return text


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


def by_source_markdown(by_source: Mapping[str, Mapping[str, Any]], mix: Mapping[str, float]) -> str:
    """ΔCE and KL per source of the downstream windows (``{source: downstream_ce dict}``), and the prose share of
    the SAE's training and held-out stores (``mix``: ``{"train": share, "held-out": share}``), as Markdown."""
    parts = [f"{src} ΔCE {d['delta_ce']:.3f} nats (clean {d['ce_clean']:.3f}), KL {d['kl_sae']:.3f} on "
             f"{d['n_predictions']:,} predictions" for src, d in by_source.items()]
    shares = ", ".join(f"{name} {100 * v:.0f}%" for name, v in mix.items())
    return (f"**By source** (the windows above alternate code and prose): {'; '.join(parts)}. The stores the SAE "
            f"trained and was evaluated on are not balanced: prose is {shares} of their tokens (a code file is "
            "much longer than a prose passage, and a store keeps the first windows of the interleaved text), so "
            "the SAE saw mostly code.")


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
    prose: float = float("nan")  # share of its strongest contexts that read as prose (dashboards.prose_share)
    words: tuple[str, ...] = ()  # the content words among its strongest contexts' tokens (dashboards.content_words)


@dataclasses.dataclass(frozen=True)
class DashboardReading:
    """Section 8's reading of the shown dashboards."""

    latents: tuple[LatentReading, ...]  # one per dashboard, in display order
    vocab: int  # vocabulary size (chance of a promoted-token hit: PROMOTED_TOP / vocab)
    layers_after: int  # the model's layers after the SAE's layer (skipped by the direct path)
    layer: int  # the SAE's layer


def dashboard_picks(codes: Codes, tokenizer: Any, n: int, n_candidates: int = 300) -> list[int]:
    """The dashboards' latents: ``n - 1`` alive latents at density quantiles 0.5 to 0.9 (no cherry-picking: mostly
    single-token latents), then one latent about meaning, :func:`~course_lib.sae.dashboards.theme_latent` among
    ``n_candidates`` alive latents evenly spaced in density between the 30% and 90% quantiles (the quantile
    picks again if none qualifies)."""
    density = codes.density()
    order = np.argsort(density, kind="stable")
    alive = order[density[order] > 0]
    if not len(alive) or n <= 0:
        return []
    picks = [int(alive[int(q * (len(alive) - 1))]) for q in np.linspace(0.5, 0.9, max(1, n - 1))][: max(1, n - 1)]
    if n >= 2:
        lo, hi = int(0.3 * (len(alive) - 1)), int(0.9 * (len(alive) - 1))
        cand = alive[np.unique(np.linspace(lo, hi, n_candidates).astype(int))]
        theme = theme_latent(codes, tokenizer, [int(c) for c in cand if int(c) not in picks])
        picks.append(theme if theme is not None else int(alive[int(0.7 * (len(alive) - 1))]))
    return picks


def dashboard_reading(codes: Codes, autoencoder: SparseAutoencoder, w_u: torch.Tensor, latents: Sequence[int],
                      tokenizer: Any, n_layers: int, layer: int, n_top: int = 20) -> DashboardReading:
    """For each latent: its most common token among its ``n_top`` strongest contexts (token purity) and how often
    the token after those contexts is among its promoted tokens (``w_u [d_model, vocab]``, the direct path)."""
    out = []
    for latent in latents:
        tok_id, purity, m = token_purity(codes, latent, n=n_top)
        share, n_ctx = next_token_hits(codes, autoencoder, w_u, latent, n=n_top, top=PROMOTED_TOP)
        word = repr(tokenizer.decode([tok_id])) if tok_id is not None else "-"
        out.append(LatentReading(latent, word, purity, m, share, n_ctx, prose_share(codes, tokenizer, latent, n=n_top),
                                 tuple(content_words(codes, tokenizer, latent, n=n_top))))
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
        where = "" if not np.isfinite(x.prose) else f"; {round(x.prose * x.n_contexts)} of them read as prose"
        if len(x.words) >= 3:
            where += f"; they fire on {len(x.words)} different words, e.g. {', '.join(x.words[:6])}"
        lines.append(f"* latent {x.latent}: {x.token} in {round(x.purity * x.n_contexts)} of its {x.n_contexts} "
                     f"strongest contexts ({kind}{where}); the token that follows those contexts is among its "
                     f"{PROMOTED_TOP} most promoted tokens in {x.next_hits:.0%} of {x.n_next}.")
    chance = PROMOTED_TOP / r.vocab
    return (
        "**Reading the dashboards** (from this run):\n\n" + "\n".join(lines) + "\n\n"
        "\"Read as prose\" means the activating token and the 8 tokens before it hold letters and prose punctuation "
        "only: Bible passages, and also comments and docstrings in the code. "
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
                   steering_seconds: float, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Notebook 03's ``metrics.json`` keys, in order: the main SAE's held-out metrics (``main``, from
    :func:`~course_lib.sae.evaluation.reconstruction_metrics`), the downstream loss, the power law, the store
    (``store_meta``: the activation store's meta), the frontier, the dead-latent controls, the ground truth,
    and the exercises' and the steering widget's numbers; then ``extra`` (more named numbers of the run)."""
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
        **dict(extra or {}),
    }


# --------------------------------------------------------------------------- section 3: BatchTopK's L0


@dataclasses.dataclass(frozen=True)
class BatchTopKReading:
    """Why a BatchTopK SAE's held-out L0 differs from its k: batch selection against the inference threshold."""

    k: int  # the SAE's k (mean active latents per token over a training batch)
    batch_size: int  # tokens per batch of the batch-wide selection
    threshold: float  # the inference threshold t the SAE carries
    threshold_for_k: float  # the threshold that would give mean L0 = k on these held-out tokens
    l0_threshold: float  # held-out mean L0 with the inference threshold (what the frontier plots)
    l0_batch: float  # held-out mean L0 with batch-wide selection of the top k * batch_size (= k by construction)
    l0_batch_min: int  # fewest latents of one token under batch selection
    l0_batch_max: int  # most latents of one token under batch selection
    l0_batch_zero: float  # share of tokens with no latent under batch selection
    nmse_threshold: float  # held-out NMSE with the inference threshold
    nmse_batch: float  # held-out NMSE with batch selection
    steps: int  # training steps (updates of the running threshold)
    rate: float  # the running threshold's rate r
    first_weight: float  # weight of the first step's value in t after the last step, (1 - r)^(steps - 1)


@torch.no_grad()
def batchtopk_reading(autoencoder: SparseAutoencoder, x_val: torch.Tensor, steps: int,
                      batch_size: int = 1024) -> BatchTopKReading:
    """Encode held-out raw ``x_val [N, d_in]`` with a BatchTopK SAE both ways: its inference threshold ``t`` and the
    training rule (per batch of ``batch_size`` tokens, the ``k * batch_size`` largest ``ReLU(pre)`` of the whole
    batch), and find the threshold that would give mean L0 = k (the ``k * N``-th largest ``ReLU(pre)``).
    ``steps``: the SAE's training steps (the running threshold's memory of its first value is ``(1 - r)^(steps-1)``)."""
    cfg = autoencoder.cfg
    dev = autoencoder.W_dec.device
    t = float(autoencoder.threshold)
    l0_t, l0_b, pos_vals, err_t, err_b, xs = [], [], [], [], [], []
    for start in range(0, len(x_val) - batch_size + 1, batch_size):
        xn = x_val[start : start + batch_size].to(dev, torch.float32) * autoencoder.scale
        act = F.relu(autoencoder.pre_acts(xn))
        z_t = act * (act > t)
        flat = act.flatten()
        vals, idx = flat.topk(cfg.k * xn.shape[0])
        z_b = torch.zeros_like(flat).scatter(0, idx, vals).view_as(act)
        l0_t.append((z_t > 0).sum(1))
        l0_b.append((z_b > 0).sum(1))
        pos_vals.append(act[act > 0])
        err_t.append((z_t @ autoencoder.W_dec + autoencoder.b_pre - xn).pow(2).sum())
        err_b.append((z_b @ autoencoder.W_dec + autoencoder.b_pre - xn).pow(2).sum())
        xs.append(xn)
    l0_t_all, l0_b_all = torch.cat(l0_t).float(), torch.cat(l0_b)
    x_all = torch.cat(xs)
    denom = float((x_all - x_all.mean(0)).pow(2).sum())
    positives = torch.cat(pos_vals)
    n_keep = min(cfg.k * len(x_all), len(positives))
    t_for_k = float(positives.topk(n_keep).values[-1]) if n_keep else math.nan
    return BatchTopKReading(
        k=cfg.k, batch_size=batch_size, threshold=t, threshold_for_k=t_for_k, l0_threshold=float(l0_t_all.mean()),
        l0_batch=float(l0_b_all.float().mean()), l0_batch_min=int(l0_b_all.min()), l0_batch_max=int(l0_b_all.max()),
        l0_batch_zero=float((l0_b_all == 0).float().mean()), nmse_threshold=float(sum(err_t)) / denom,
        nmse_batch=float(sum(err_b)) / denom, steps=steps, rate=cfg.threshold_rate,
        first_weight=(1 - cfg.threshold_rate) ** max(steps - 1, 0),
    )


def batchtopk_markdown(r: BatchTopKReading) -> str:
    """BatchTopK's L0, explained from the run, as Markdown."""
    higher = r.threshold > r.threshold_for_k
    return (
        f"**Why BatchTopK k={r.k} reports L0 {r.l0_threshold:.1f}.** The frontier encodes held-out tokens the way a "
        f"BatchTopK SAE is used at inference: one threshold, t = {r.threshold:.3f}. Encoded the training way instead "
        f"(the {r.k} x {r.batch_size:,} largest activations of each {r.batch_size:,}-token batch), the same tokens get "
        f"mean L0 {r.l0_batch:.1f} (k, by construction), but per token anywhere from {r.l0_batch_min} to "
        f"{r.l0_batch_max} latents ({r.l0_batch_zero:.1%} of tokens get none), and NMSE {r.nmse_batch:.3f} against "
        f"{r.nmse_threshold:.3f} with the threshold. The threshold that would give mean L0 = {r.k} on these tokens is "
        f"{r.threshold_for_k:.3f}; t is {'higher' if higher else 'lower'}, hence "
        f"{'fewer' if higher else 'more'} latents. t is a running average of each batch's smallest selected value "
        f"(rate {r.rate:g}, so a memory of about {1 / r.rate:.0f} steps), started at the first step's value; after "
        f"only {r.steps} steps that first value still carries weight {r.first_weight:.2f} in t, so t still partly "
        "reflects the early SAE. With a long run (the BatchTopK paper's) the memory is short against "
        "the run and t settles where mean L0 is k; here, estimating t once after training (as the threshold for k "
        "above) would fix the L0.")


# --------------------------------------------------------------------------- section 7: the clean loss, two ways


@dataclasses.dataclass(frozen=True)
class CleanLossReading:
    """The model's clean next-token loss on the downstream windows, per window and under two conventions."""

    n_windows: int  # windows scored
    seq_len: int  # tokens per window, BOS included
    ce_all: float  # mean loss over every prediction after BOS (token 1 from BOS included): notebook 00's convention
    ce_skip_first: float  # mean loss without the prediction made at BOS (downstream_ce's convention)
    first_prediction: float  # mean loss of the prediction made at BOS alone (token 1 from BOS)
    per_window: tuple[float, ...]  # ce_all of each window
    head_windows: int  # windows notebook 00 scores
    ce_head: float  # ce_all over the first head_windows of these windows
    ce_orientation: float  # ce_all over notebook 00's own windows (rebuilt as it builds them); NaN if not given


@torch.no_grad()
def orientation_windows(tokenizer: Any, profile: str, n_tokens: int, seq_len: int = 128) -> torch.Tensor:
    """Notebook 00's evaluation windows, built as it builds them: ``n_tokens // seq_len`` windows of the validation
    split alternating code and prose (:func:`course_lib.corpus.balanced_windows`, 20,000 characters read)."""
    seq = min(seq_len, n_tokens)
    return corpus.balanced_windows(tokenizer, corpus.config_for(profile, max_chars=20_000), "val", seq,
                                   max(1, n_tokens // seq))[0]


def ce_windows(tokenizer: Any, profile: str, n: int, seq_len: int) -> tuple[torch.Tensor, list[str]]:
    """The downstream-loss windows of section 7 and their sources: ``n`` held-out windows alternating code and
    prose, built as notebook 00 builds its own (the first of them are 00's when ``seq_len`` matches)."""
    return corpus.balanced_windows(tokenizer, corpus.config_for(profile, max_chars=max(20_000, n * seq_len * 8)),
                                   "val", seq_len, n)


def _window_nll(model: Any, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = next(model.parameters()).device
    nll = []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(dev)
        logp = model(batch, return_type="logits")[:, :-1].float().log_softmax(-1)
        nll.append(-logp.gather(-1, batch[:, 1:, None])[..., 0].cpu())
    return torch.cat(nll).double()


def clean_loss_reading(model: Any, windows: torch.Tensor, head_windows: int = 2, batch_size: int = 8,
                       orientation: torch.Tensor | None = None) -> CleanLossReading:
    """Per-position clean losses of ``model`` on ``windows [n, seq_len]`` (BOS first): mean over every prediction
    (notebook 00's ``token_loss``), without the prediction made at BOS (:func:`~course_lib.sae.evaluation.downstream_ce`),
    per window, over the first ``head_windows`` windows alone, and over ``orientation`` (notebook 00's windows,
    :func:`orientation_windows`) when given."""
    per = _window_nll(model, windows, batch_size)  # [n, seq_len - 1]
    ce_orientation = float(_window_nll(model, orientation, batch_size).mean()) if orientation is not None else math.nan
    h = max(1, min(head_windows, per.shape[0]))
    return CleanLossReading(
        n_windows=per.shape[0], seq_len=windows.shape[1], ce_all=float(per.mean()), ce_skip_first=float(per[:, 1:].mean()),
        first_prediction=float(per[:, 0].mean()), per_window=tuple(float(v) for v in per.mean(1)), head_windows=h,
        ce_head=float(per[:h].mean()), ce_orientation=ce_orientation,
    )


def clean_loss_markdown(r: CleanLossReading, ce_clean: float) -> str:
    """Why the clean loss here differs from notebook 00's, as Markdown (``ce_clean``: downstream_ce's value)."""
    lo, hi = min(r.per_window), max(r.per_window)
    convention = r.ce_all - r.ce_skip_first  # what leaving out the prediction made at BOS changes
    sample = r.ce_head - r.ce_all  # what scoring only the first windows changes
    bigger = "which windows are scored" if abs(sample) > abs(convention) else "the prediction made at BOS"
    return (
        f"**The clean loss, {ce_clean:.3f} here.** Same model and held-out split as notebook 00, but other tokens, "
        "scored another way. Notebook 00 scores every prediction of its "
        f"{r.head_windows} window{'s' if r.head_windows > 1 else ''} (code and prose in turn, as here)"
        + (f": rebuilt here that way, those windows give **{r.ce_orientation:.3f}**. " if math.isfinite(r.ce_orientation)
           else ". ")
        + f"This section scores {r.n_windows} windows of {r.seq_len} tokens and leaves out the prediction "
        f"made at BOS (the first token of a window, guessed from nothing: loss {r.first_prediction:.2f} on average): "
        f"{r.ce_skip_first:.3f}, or {r.ce_all:.3f} with that prediction; its own first {r.head_windows} window(s) alone "
        f"give {r.ce_head:.3f}. So the convention moves the loss by {convention:+.3f} and scoring only "
        f"{r.head_windows} window(s) by {sample:+.3f}: the larger part is {bigger}. One window's loss ranges from "
        f"{lo:.2f} to {hi:.2f} across these {r.n_windows}, so an average over {r.head_windows} window(s) says little "
        "about the text as a whole. Compare losses only on the same tokens, scored the same way."
    )


# --------------------------------------------------------------------------- section 5: the AuxK arm


@dataclasses.dataclass(frozen=True)
class AuxKArm:
    """The control arm built for AuxK (no other fix, short dead window), with and without AuxK, over seeds."""

    dead_on: tuple[float, ...]  # held-out dead fraction per seed, with AuxK
    dead_off: tuple[float, ...]  # without AuxK
    nmse_on: tuple[float, ...]  # held-out NMSE per seed, with AuxK
    nmse_off: tuple[float, ...]  # without AuxK
    peak_dead_on: tuple[float, ...]  # largest dead fraction during training per seed, with AuxK
    peak_dead_off: tuple[float, ...]  # without AuxK
    dead_tokens: int  # the arm's dead window, in tokens
    train_tokens: int  # training tokens of each SAE
    width: int  # latents of each SAE


def auxk_arm_summary(runs: Mapping[str, Sequence[Mapping[str, Any]]], *, dead_tokens: int, train_tokens: int,
                     width: int) -> AuxKArm:
    """``runs``: ``{AUXK_ON: rows of evaluate_sae per seed, AUXK_OFF: ...}`` (:func:`~course_lib.sae.controls.auxk_arm`)."""
    def col(name: str, key: str) -> tuple[float, ...]:
        return tuple(float(r[key]) for r in runs[name])

    def peak(name: str) -> tuple[float, ...]:
        return tuple(float(max(r["history"]["dead_fraction"])) for r in runs[name])

    return AuxKArm(dead_on=col(AUXK_ON, "dead_fraction"), dead_off=col(AUXK_OFF, "dead_fraction"),
                   nmse_on=col(AUXK_ON, "nmse"), nmse_off=col(AUXK_OFF, "nmse"), peak_dead_on=peak(AUXK_ON),
                   peak_dead_off=peak(AUXK_OFF), dead_tokens=dead_tokens, train_tokens=train_tokens, width=width)


def auxk_arm_markdown(a: AuxKArm) -> str:
    """The AuxK arm's reading, as Markdown: does AuxK move the dead fraction or the NMSE beyond the seeds' spread?"""
    def fmt(v: Sequence[float], f: str = ".3f") -> str:
        return ", ".join(f"{x:{f}}" for x in v)

    def separated(on: Sequence[float], off: Sequence[float]) -> str:
        diffs = [x - y for x, y in zip(on, off)]
        if max(on) < min(off):
            return "lower with AuxK in every seed, the two sets of seeds apart"
        if min(on) > max(off):
            return "higher with AuxK in every seed, the two sets of seeds apart"
        if all(d < 0 for d in diffs) or all(d > 0 for d in diffs):
            return (f"the seeds overlap, but paired by seed (same initialisation and data order) AuxK changes it by "
                    f"{fmt(diffs, '+.3f')}: the same sign in every seed")
        return "the seeds overlap and the paired differences change sign: no measurable effect"

    n = len(a.dead_on)
    return (
        f"**The AuxK arm** ({a.width} latents, {a.train_tokens:,} tokens, dead window {a.dead_tokens:,} tokens, no tied "
        f"init, b_pre at 0, {n} seeds). Without the other two fixes, latents do die: the dead fraction during training "
        f"peaks at {fmt(a.peak_dead_off)} without AuxK and {fmt(a.peak_dead_on)} with it. On held-out tokens:\n\n"
        f"* dead fraction: {fmt(a.dead_off)} without AuxK, {fmt(a.dead_on)} with it ({separated(a.dead_on, a.dead_off)});\n"
        f"* NMSE: {fmt(a.nmse_off)} without, {fmt(a.nmse_on)} with ({separated(a.nmse_on, a.nmse_off)}).\n\n"
        + ("In the recipe above AuxK had nothing to act on; here, where latents do die, it lowers the held-out dead "
           "fraction in every seed." if all(x < y for x, y in zip(a.dead_on, a.dead_off)) else
           "Even here, where latents do die, AuxK does not lower the held-out dead fraction in every seed at this "
           "budget: it needs a longer run (or a larger coefficient) to revive them.")
        + f" {n} seeds per arm: an effect is solid only when the two sets of seeds are apart."
    )


# --------------------------------------------------------------------------- section 2: the learner's training step


@dataclasses.dataclass(frozen=True)
class OwnStepRun:
    """A small SAE trained with the learner's training step."""

    n_latents: int  # its latents
    k: int  # its k
    n_steps: int  # Adam steps
    batch_size: int  # tokens per step
    lr: float  # constant learning rate
    first_loss: float  # the first step's training NMSE
    last_loss: float  # the last step's training NMSE
    nmse: float  # held-out NMSE after training
    max_row_norm_error: float  # max |‖w_i‖ - 1| over decoder rows after training


def train_with_step(step: Any, store: ActivationStore, x_val: torch.Tensor, cfg: SAEConfig, *, n_steps: int,
                    batch_size: int, lr: float, seed: int = 0, device: str | torch.device = "cpu") -> OwnStepRun:
    """Train a fresh SAE of ``cfg`` (the recipe's initialisation, from a store sample) for ``n_steps`` steps of
    ``step(autoencoder, opt, xn [batch_size, d_in], k) -> loss`` (Adam at a constant ``lr``), then score it on
    held-out raw ``x_val [N, d_in]``."""
    gen = torch.Generator().manual_seed(seed)
    autoencoder = SparseAutoencoder(cfg, gen)
    init = store.head(min(len(store), 8_192))
    autoencoder.init_from_sample(init)
    autoencoder.to(device)
    opt = torch.optim.Adam(autoencoder.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    batches = store.iter_batches(batch_size, generator=torch.Generator().manual_seed(seed), buffer_tokens=min(len(store), 65_536),
                                 epochs=None)
    losses = []
    for _ in range(n_steps):
        xn = next(batches).to(device, torch.float32) * autoencoder.scale
        losses.append(float(step(autoencoder, opt, xn, cfg.k)))
    autoencoder.eval()
    with torch.no_grad():
        m = reconstruction_metrics(autoencoder, x_val)
        err = float((autoencoder.W_dec.norm(dim=1) - 1).abs().max())
    return OwnStepRun(n_latents=cfg.n_latents, k=cfg.k, n_steps=n_steps, batch_size=batch_size, lr=lr,
                      first_loss=losses[0], last_loss=losses[-1], nmse=float(m["nmse"]), max_row_norm_error=err)


def train_with_step_markdown(r: OwnStepRun) -> str:
    """The learner's training step, at work, as Markdown."""
    return (f"**Your training step at work:** a fresh {r.n_latents}-latent SAE (k={r.k}) trained {r.n_steps} steps of "
            f"{r.batch_size:,} tokens with it (Adam, constant learning rate {r.lr:g}, no AuxK): training NMSE "
            f"{r.first_loss:.3f} at the first step, {r.last_loss:.3f} at the last; held-out NMSE **{r.nmse:.3f}**. "
            f"Its decoder rows end within {r.max_row_norm_error:.1e} of unit norm.")


# --------------------------------------------------------------------------- section 9: steering


def steering_markdown(pick: Any, effect: Any, control: Any = None) -> str:
    """The steering measurement's reading, as Markdown (``pick``: :class:`~course_lib.sae.steering.SteeringPick`,
    ``effect``: :class:`~course_lib.sae.steering.SteeringEffect`; ``control``: the same with a random direction of
    the same norm)."""
    rb, ra = np.mean(effect.rate_before), np.mean(effect.rate_after)
    up = sum(a > b for a, b in zip(effect.rate_after, effect.rate_before))
    verdict = ("the steered continuations use the latent's tokens more often on every prompt" if up == len(effect.prompts)
               else f"the rate rose on {up} of {len(effect.prompts)} prompts" if up else
               "the rate did not rise on any prompt: at this strength, this latent does not steer toward its tokens")
    rows = "\n".join(f"| `{p!r}` | {b:.0%} | {a:.0%} | `{tb!r}` | `{ta!r}` |" for p, b, a, tb, ta in zip(
        effect.prompts, effect.rate_before, effect.rate_after, effect.before, effect.after))
    return (
        f"**Which latent, and does it steer?** Latent **{pick.latent}** (density {pick.density:.2%}) was picked among "
        f"{pick.n_candidates} latents of medium density because its decoder direction best predicts what follows it: "
        f"the token after {pick.hit_share:.0%} of its {pick.n_contexts} strongest contexts is among its {pick.top} most "
        f"promoted tokens (chance is about 0.1%). Its promoted tokens are the target: steering at strength "
        f"{effect.strength:g} on {len(effect.prompts)} prompts, the share of continuation tokens among them goes from "
        f"**{rb:.0%}** unsteered to **{ra:.0%}** steered: {verdict}.\n\n"
        "| prompt | before | after | continuation before | continuation after |\n|---|---|---|---|---|\n" + rows
        + ("" if control is None else _steering_control_text(effect, control))
    )


def _steering_control_text(effect: Any, control: Any) -> str:
    rc, ra = float(np.mean(control.rate_after)), float(np.mean(effect.rate_after))
    rb = float(np.mean(effect.rate_before))
    if ra > rc and ra > rb:
        verdict = f"the latent's direction raises the rate {ra / max(rc, 1e-9):.1f}x more than a random push does"
    else:
        verdict = "the latent's direction does no better than a random push: this is not evidence of steering"
    return (f"\n\n**Control:** a random direction of the same norm, added the same way, gives **{rc:.0%}** "
            f"(per prompt: {', '.join(f'{r:.0%}' for r in control.rate_after)}): {verdict}. The rate counts the "
            "latent's tokens, not fluency: read the steered continuations, which at this strength are often broken "
            "(repeated words). A smaller strength keeps the text readable and moves the rate less (try the widget).")
