"""The instructors' expected-results sheet, rendered from a reference run: ``docs/expected_results.md``.

    python -m course_lib.teaching [RUN_DIR ...] --out docs/expected_results.md     (make expected-results)

A run folder is what ``python -m course_lib.cli run`` writes: one ``<stem>/`` per notebook with ``metrics.json``
(the notebook's named numbers, its ``headline`` claims, profile, seed, device, dtype, wall time), ``run.json``
(the runner's record: run id, wall time, when it finished) and the executed ``<stem>.ipynb``. Every notebook
found there is on the sheet (a new notebook too: with its headline claims and its scalar metrics until
:data:`SHEETS` gives it readings). Several folders may be given; for a notebook found in more than one, the
last folder wins.

Per notebook the sheet gives where the numbers come from (profile, machine, commit, run id), the headline
numbers a teacher should expect, with their spread where the run has one, the known anomalies learners ask
about, each stated with the run's own numbers, and the time budget of a session:

    reading   = words / WORDS_PER_MINUTE + FIGURE_MINUTES * figures     (prose and readings of the executed notebook)
    exercises = EXERCISE_FACTOR * sum of the printed exercise times ("about N min")
    slot      = reading + exercises + compute (the run's wall time) + DISCUSSION_MINUTES

and the same per ``##`` section (:func:`section_budgets`, with papermill's cell durations as compute), which is
what cutting a section saves.

The commit and machine are the run's own when ``run.json`` records them (``commit``, ``machine``); otherwise
``--commit`` / ``--machine`` describe them, else the checkout's commit and this machine, labelled as such. A
reading whose metric key this run lacks says :data:`MISSING` instead of failing: runs of older or newer notebooks
still render.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from course_lib import runtime

MISSING = "not in this run"
WORDS_PER_MINUTE = 200  # prose read with care, code skimmed
FIGURE_MINUTES = 1.0  # looking at one figure and its reading
EXERCISE_FACTOR = 1.5  # printed exercise times are for a learner who gets it right first; a room takes longer
DISCUSSION_MINUTES = 10  # the discussion questions of TEACHING.md, per notebook
_EXERCISE_TIME = re.compile(r"\*\*Exercise[^\n]*?about (\d+) min")
_RUN_FOLDER = re.compile(r"^\d\d_")


@dataclasses.dataclass(frozen=True)
class NotebookRun:
    """One notebook's outputs in a run folder."""

    stem: str  # e.g. "03_sparse_autoencoders"
    metrics: dict  # metrics.json
    record: dict  # run.json ({} when absent)
    executed: Path | None  # the executed notebook, when present
    last_failure: dict = dataclasses.field(default_factory=dict)  # last_failure.json: a later run that failed


@dataclasses.dataclass(frozen=True)
class Reading:
    """One line of the sheet: a label and a function of ``metrics`` that formats the number(s).

    ``render`` may raise KeyError, IndexError, TypeError or ValueError when a key is missing or None:
    the line then says :data:`MISSING`.
    """

    label: str  # what is read, in words
    render: Callable[[dict], str]  # metrics -> the formatted reading


@dataclasses.dataclass(frozen=True)
class NotebookSheet:
    """What the sheet reads from one notebook's metrics."""

    numbers: tuple[Reading, ...]  # the headline numbers to expect
    anomalies: tuple[Reading, ...]  # what learners ask about, each with its numbers


@dataclasses.dataclass(frozen=True)
class TimeBudget:
    """A notebook's session time, in minutes (see the module docstring for the model)."""

    words: int  # prose: markdown cells plus the Markdown readings the run rendered
    figures: int  # images in the executed notebook's outputs
    exercise_minutes: int  # sum of the printed exercise times
    n_exercises: int
    compute_minutes: float  # the run's wall time

    @property
    def reading_minutes(self) -> float:
        return self.words / WORDS_PER_MINUTE + FIGURE_MINUTES * self.figures

    @property
    def slot_minutes(self) -> float:
        return (self.reading_minutes + EXERCISE_FACTOR * self.exercise_minutes + self.compute_minutes
                + DISCUSSION_MINUTES)


@dataclasses.dataclass(frozen=True)
class SectionBudget:
    """One ``##`` section of a notebook: what it asks of a learner (its share of :class:`TimeBudget`)."""

    title: str  # the section's heading
    words: int
    figures: int
    exercise_minutes: int  # printed times of the exercises in it
    compute_s: float  # its cells' run time in this run (papermill's per-cell duration)

    @property
    def minutes(self) -> float:
        return (self.words / WORDS_PER_MINUTE + FIGURE_MINUTES * self.figures + EXERCISE_FACTOR * self.exercise_minutes
                + self.compute_s / 60)


# --------------------------------------------------------------------------- reading the run folders


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _notebook_run(folder: Path) -> NotebookRun | None:
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        return None
    executed = folder / f"{folder.name}.ipynb"
    return NotebookRun(stem=folder.name, metrics=_read_json(metrics_path), record=_read_json(folder / "run.json"),
                       executed=executed if executed.is_file() else None,
                       last_failure=_read_json(folder / "last_failure.json"))


def find_runs(folders: Sequence[Path]) -> dict[str, NotebookRun]:
    """Every notebook with outputs in ``folders`` (``<folder>/NN_*/metrics.json``, or ``folder`` itself being
    one notebook's folder), by stem, in notebook order; a later folder replaces an earlier one's notebook."""
    found: dict[str, NotebookRun] = {}
    for folder in folders:
        folder = Path(folder)
        candidates = [folder] if _RUN_FOLDER.match(folder.name) else sorted(folder.glob("[0-9][0-9]_*"))
        for sub in candidates:
            if sub.is_dir() and _RUN_FOLDER.match(sub.name) and (nb := _notebook_run(sub)) is not None:
                found[sub.name] = nb
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------- formatting helpers


def get(metrics: dict, path: str) -> Any:
    """``metrics["a"]["b"]`` for ``path="a.b"`` (list indices as numbers); KeyError when absent or None."""
    value: Any = metrics
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(path)
    if value is None:
        raise KeyError(path)
    return value


def fmt(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (integers as they are); anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def pct(value: float) -> str:
    return f"{100 * float(value):.0f}%"


def interval(lo: Any, hi: Any) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


def contains(lo: float, hi: float, x: float) -> bool:
    return float(lo) <= x <= float(hi)


def _safe(render: Callable[[dict], str], metrics: dict) -> str:
    try:
        return render(metrics)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return MISSING


# --------------------------------------------------------------------------- 00 · orientation


def _00_ablations(m: dict) -> str:
    top = get(m, "costliest_ablations")[:3]
    return "; ".join(f"{a['component']} {a['layer']} +{fmt(a['loss_increase'])} nats" for a in top)


def _00_bos_ablation(m: dict) -> str:
    kept = get(m, "costliest_ablations_except_bos")
    full = {f"{a['component']} {a['layer']}": a["loss_increase"] for a in get(m, "costliest_ablations")}
    parts = [f"{name}: +{fmt(full[name])} nats, +{fmt(v)} with BOS left intact" for name, v in kept.items() if name in full]
    mostly_bos = [name for name, v in kept.items() if name in full and full[name] > 0 and v < 0.25 * full[name]]
    verdict = (f"{', '.join(mostly_bos)} costs almost nothing once BOS is left alone: its damage is the BOS outlier "
               f"(the norm jumps at layer {get(m, 'bos_norm_jump_layer')})" if mostly_bos
               else "every one of them still costs most of its loss with BOS intact")
    return "; ".join(parts) + f". {verdict}."


def _00_lens(m: dict) -> str:
    ranks = get(m, "logit_lens_answer_rank_by_layer")
    hidden = max((i for i, r in enumerate(ranks) if r > 100), default=-1)
    return (f"the answer's rank stays above 100 up to layer {hidden} of {len(ranks)} (rank {fmt(ranks[0])} at "
            f"layer 0); it is top-1 from layer {get(m, 'logit_lens_first_layer_top1')} and above 50% from layer "
            f"{get(m, 'logit_lens_first_layer_over_half')}. The lens reads late layers well and says little about "
            "early ones.")


def _00_steering(m: dict) -> str:
    layers, to, frm = get(m, "steering_layers"), get(m, "steering_prob_to_answer"), get(m, "steering_prob_from_answer")
    works = [layer for layer, a, b in zip(layers, to, frm) if a > b]
    if not works:
        return "the patch never moved the answer in this run"
    stop = next((layer for layer, a, b in zip(layers, to, frm) if layer > works[-1] and a <= b), None)
    best = max(to)
    return (f"patching the country's position moves the answer at layers {works[0]}-{works[-1]} (the steered answer "
            f"peaks at {pct(best)})" + (f", and no longer from layer {stop}: consistent with later positions having "
            "copied what they need from it by then" if stop is not None else "") + ".")


def _00_sink(m: dict) -> str:
    share = get(m, "eval_attention_on_bos_by_layer")
    onset, jump = get(m, "sink_onset_layer"), get(m, "bos_norm_jump_layer")
    before = f"; layers before it give BOS at most {pct(max(share[:onset]))}" if onset > 0 else ""
    order = ("the sink starts before the norm outlier" if onset < jump else
             "the sink starts with the norm outlier" if onset == jump else "the norm outlier comes first")
    return (f"attention to BOS on ordinary text starts at layer {onset} ({pct(share[onset])} of attention) and peaks at "
            f"{pct(max(share))}{before}. The BOS norm jumps at layer {jump}: {order}.")


SHEET_00 = NotebookSheet(
    numbers=(
        Reading("top prediction for the prompt", lambda m: f"{get(m, 'prompt')!r} -> {get(m, 'top_prediction')!r} "
                f"at {pct(get(m, 'top_prediction_prob'))}"),
        Reading("clean next-token loss", lambda m: f"{fmt(get(m, 'clean_loss_nats'))} nats on "
                f"{fmt(get(m, 'eval_tokens'))} tokens"),
        Reading("BOS residual norm / median", lambda m: f"up to {fmt(get(m, 'bos_norm_ratio_max'))}x, jumping at layer "
                f"{get(m, 'bos_norm_jump_layer')}"),
        Reading("costliest zero-ablations", _00_ablations),
        Reading("logit lens", lambda m: f"answer top-1 from layer {get(m, 'logit_lens_first_layer_top1')}, above 50% "
                f"from layer {get(m, 'logit_lens_first_layer_over_half')}"),
        Reading("spread", lambda m: "none measured: one pretrained model on fixed prompts and tokens, nothing "
                "trained; other machines differ by the dtype's rounding (bfloat16 or float32)"),
    ),
    anomalies=(
        Reading("ablations with and without BOS", _00_bos_ablation),
        Reading("where the logit lens finds the answer", _00_lens),
        Reading("where steering stops working", _00_steering),
        Reading("the attention sink and the norm outlier", _00_sink),
    ),
)


# --------------------------------------------------------------------------- 01 · superposition


def _01_plateaus(m: dict) -> str:
    counts = get(m, "big_sweep_fraction_counts")
    n = len(get(m, "big_sweep_dims_per_feature"))
    fractions = {f: c for f, c in counts.items() if f not in ("1", "m/n")}
    seen = [f"{f} ({_n(c['sparsities_near'], 'sparsity', 'sparsities')}, longest run {c['longest_run']})"
            for f, c in fractions.items() if c["sparsities_near"] > 0]
    absent = [f for f, c in fractions.items() if c["sparsities_near"] == 0]
    plateaus = [f for f, c in fractions.items() if c["longest_run"] >= 2]
    floor = counts["m/n"]
    return (f"of {n} sparsities, D* sits near " + (", ".join(seen) or "none of the paper's fractions")
            + f"; never near {', '.join(absent) or '-'}; it sits on the floor m/n for "
            f"{_n(floor['sparsities_near'], 'sparsity', 'sparsities')} ({floor['dots_near']} feature dots there). "
            "Learners expect the paper's staircase; a plateau (two or more sparsities in a row) shows at "
            + (", ".join(plateaus) if plateaus else "no fraction")
            + ", and the sparsest end is the m/n line drawn in the figure (the lowest value D* can take), not a "
            "plateau of the paper's kind.")


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _01_ws(m: dict) -> str:
    rows = get(m, "weight_sparse_comparison")
    dense, sparse = rows[0], rows[-1]
    return (f"kept fraction {fmt(dense['kept_fraction'])}: {fmt(dense['features_represented'])} features, {fmt(dense['features_per_neuron'])} per hidden "
            f"dimension, loss {fmt(dense['loss'])}; kept fraction {fmt(sparse['kept_fraction'])}: "
            f"{fmt(sparse['features_represented'])} features, {fmt(sparse['features_per_neuron'])} per dimension, loss "
            f"{fmt(sparse['loss'])} (trained sparse) vs {fmt(sparse['loss_pruned_after'])} (dense pruned once)")


def _01_ws_dstar(m: dict) -> str:
    sparse = get(m, "weight_sparse_comparison")[-1]
    return (f"at kept fraction {fmt(sparse['kept_fraction'])} ({fmt(sparse['nonzero_weights'])} nonzero weights) D* is "
            f"{fmt(sparse['dims_per_feature'])}, against {fmt(get(m, 'weight_sparse_comparison')[0]['dims_per_feature'])}"
            " dense. With k nonzero weights in m hidden dimensions D* cannot fall below m/k (section 7's reading): a "
            "high D* there is forced by the budget, not a sign that the model chose to stop superposing.")


def _01_no_gain_dense(m: dict) -> str:
    ratio = get(m, "five_two_loss_over_orthogonal_baseline")
    text = f"5 -> 2 loss over the no-superposition baseline: {fmt(ratio[0])} dense, {fmt(ratio[-1])} sparsest."
    if ratio[0] > 0.95 and ratio[-1] < 0.9:
        text += " Dense data gains nothing from superposition (a ratio of about 1); sparse data does."
    return text


SHEET_01 = NotebookSheet(
    numbers=(
        Reading("5 -> 2, sparsest: dimensions per feature", lambda m: f"{fmt(get(m, 'five_two_dims_per_feature_sparsest'))}"
                f" (pentagon: 0.4); the unclipped m/||W||_F^2 of exercise 3: "
                f"{fmt(get(m, 'five_two_dims_per_feature_sparsest_frobenius'))}"),
        Reading("20 -> 5: features represented", lambda m: f"{fmt(get(m, 'twenty_five_features_represented_dense'))} "
                f"dense -> {fmt(get(m, 'twenty_five_features_represented_sparsest'))} sparsest"),
        Reading("100 -> 20 sweep: D*", lambda m: f"{fmt(get(m, 'big_sweep_dims_per_feature')[0])} dense -> "
                f"{fmt(get(m, 'big_sweep_dims_per_feature')[-1])} sparsest; "
                f"{get(m, 'big_sweep_instances_near_one_half')} sparsities within 0.05 of 1/2"),
        Reading("phase diagram (2 -> 1) cells", lambda m: ", ".join(f"{k} {v}" for k, v in get(m, 'phase_diagram_counts').items())),
        Reading("privileged basis: polysemantic fraction", lambda m: " -> ".join(
            fmt(v) for v in get(m, "privileged_polysemantic_fraction")) + " (dense -> sparse)"),
        Reading("|x| computation: antipodal neuron pairs", lambda m: " -> ".join(
            str(v) for v in get(m, "abs_antipodal_neuron_pairs")) + " (dense -> sparse)"),
        Reading("weight-sparse toy models", _01_ws),
        Reading("one widget update", lambda m: f"{fmt(get(m, 'widget_update_seconds'))} s"),
        Reading("spread", lambda m: "none across runs: one seed; each setting keeps the best of its replicate models"),
    ),
    anomalies=(
        Reading("plateaus of D* and the m/n floor", _01_plateaus),
        Reading("what superposition gains, dense vs sparse", _01_no_gain_dense),
        Reading("D* at the sparsest weight budget", _01_ws_dstar),
    ),
)


# --------------------------------------------------------------------------- 02 · weight-sparse transformers


def _02_front(m: dict) -> dict:
    return m.get("frontier_without_failed_control_tasks") or get(m, "frontier")


def _02_group(name: str) -> Callable[[dict], str]:
    def render(m: dict) -> str:
        g = get(_02_front(m), "groups")[name]  # group names hold dots: not a get() path
        node, edge, null, excess = g["node"], g["edge"], g["null"], g["excess"]
        return (f"nodes {fmt(node['value'])}x {interval(node['lo'], node['hi'])}; edges {fmt(edge['value'])}x "
                f"{interval(edge['lo'], edge['hi'])} against a density null of {fmt(null['value'])}x; edges / null "
                f"{fmt(excess['value'])}x {interval(excess['lo'], excess['hi'])}; {g['n_pairs']} pairs")
    return render


def _02_group_readings(names: Sequence[str]) -> tuple[Reading, ...]:
    return tuple(Reading(f"{name}: dense / sparse circuit size", _02_group(name)) for name in names)


def _02_nodes_contain_one(m: dict) -> str:
    groups = get(_02_front(m), "groups")
    inside = [n for n, g in groups.items() if contains(g["node"]["lo"], g["node"]["hi"], 1.0)]
    under_null = [n for n, g in groups.items() if g["edge"]["value"] < g["null"]["value"]]
    return (f"{len(inside)} of {len(groups)} groups have a node-ratio interval containing 1 ({'; '.join(inside) or '-'})"
            + (": there sparse circuits are not shown to have fewer nodes" if inside else "")
            + f". In {len(under_null)} of {len(groups)} groups the edge ratio is below its density null, the ratio that "
            "the two models' weight density alone gives on the same nodes.")


def _02_excess(m: dict) -> str:
    groups = get(_02_front(m), "groups")
    below = [n for n, g in groups.items() if g["excess"]["hi"] < 1]
    kept = [g["fraction"] for g in groups.values()]
    return (f"edges / null is below 1 with its whole interval in {len(below)} of {len(groups)} groups: there the "
            "sparse circuits have fewer edges than the dense ones, but not as few as the two models' weight density "
            "alone predicts. The paper's ~16x is at ~1/1000 of the weights kept; these models keep "
            f"{pct(min(kept))}-{pct(max(kept))}.")


def _02_controls(m: dict) -> str:
    searches = get(m, "controls.searches")
    failed = [k for k, s in searches.items() if not s.get("passed", True)]
    tasks = get(m, "failed_control_tasks")
    return (f"{len(searches) - len(failed)} of {len(searches)} control searches passed (found no valid circuit); "
            f"failed: {', '.join(failed) or 'none'}. The frontier is repeated without "
            f"{', '.join(tasks) or 'any task'}, and the headline uses that one.")


def _02_slope(m: dict) -> str:
    s = get(_02_front(m), "slopes")
    node = s["node"]
    return (f"slope of log node ratio against log kept fraction: {fmt(node['value'])} {interval(node['lo'], node['hi'])}"
            f"; edges {fmt(s['edge']['value'])} {interval(s['edge']['lo'], s['edge']['hi'])}. "
            + ("The node slope's interval contains 0: no evidence that sparser models give fewer nodes."
               if contains(node["lo"], node["hi"], 0.0) else "The node slope's interval excludes 0."))


def _02_pruned(m: dict) -> str:
    rows = []
    for width, by_f in get(m, "dense_pruned_after").items():
        for f, r in by_f.items():
            rows.append(f"width {width}, kept {f}: dense {fmt(r['dense'])}, pruned once {fmt(r['pruned_once'])}, "
                        f"trained sparse {fmt(r['trained_sparse_mean'])}")
    return "; ".join(rows[:3]) + " (validation loss, nats)"


SHEET_02 = NotebookSheet(
    numbers=(
        Reading("targets", lambda m: f"circuit target loss {fmt(get(m, 'target_loss'))}, a task counts as solved below "
                f"{fmt(get(m, 'solved_loss'))}; {get(m, 'n_prompts_per_split')} prompts per split"),
        Reading("reference models", lambda m: f"{len(get(m, 'models'))} shipped models ({get(m, 'reference_set.source')})"),
        Reading("pruning once vs training sparse", _02_pruned),
    ),
    anomalies=(
        Reading("node ratios whose intervals contain 1", _02_nodes_contain_one),
        Reading("edges against the density null", _02_excess),
        Reading("controls that produced a circuit", _02_controls),
        Reading("the trend with the kept fraction", _02_slope),
    ),
)


def _sheet_02(metrics: dict) -> NotebookSheet:
    """02's readings: one line per group of its frontier (the groups are the run's, not fixed here)."""
    try:
        names = list(get(_02_front(metrics), "groups"))
    except KeyError:
        names = []
    return dataclasses.replace(SHEET_02, numbers=SHEET_02.numbers[:1] + _02_group_readings(names) + SHEET_02.numbers[1:])


# --------------------------------------------------------------------------- 03 · sparse autoencoders


def _03_steering(m: dict) -> str:
    before, after = get(m, "steering_rate_before"), get(m, "steering_rate_after")
    up = sum(a > b for a, b in zip(after, before))
    return (f"latent {get(m, 'steering_latent')}: the share of continuation tokens among its promoted tokens rose on "
            f"{up} of {len(after)} prompts ({' / '.join(pct(b) for b in before)} -> {' / '.join(pct(a) for a in after)})."
            + (" One latent at one layer of a 135M model is a weak lever: expect odd text before 'more of the concept'."
               if up < len(after) else ""))


def _03_auxk(m: dict) -> str:
    eff = get(m, "fix_effects")
    measurable = {fix: [k for k, v in e.items() if v["measurable"]] for fix, e in eff.items()}
    parts = [f"{fix}: " + (f"measurable on {', '.join(ks)}" if ks else "no measurable effect")
             for fix, ks in measurable.items()]
    text = (f"dead latents {pct(get(m, 'dead_fraction_no_fixes'))} with no fix, "
            f"{pct(get(m, 'dead_fraction_all_fixes'))} with all; each fix removed alone "
            f"({len(get(m, 'control_seeds'))} seeds, against their spread): " + "; ".join(parts) + ".")
    if not measurable.get("AuxK") and get(m, "dead_fraction_all_fixes") == 0:
        text += " AuxK can show nothing there: with the other fixes no latent dies, so its loss is 0 throughout."
    arm = m.get("auxk_arm")
    if arm:
        text += (f" In the AuxK arm (no other fix, {arm['width']} latents) dead latents end at "
                 f"{' / '.join(pct(x) for x in arm['dead_on'])} with AuxK vs {' / '.join(pct(x) for x in arm['dead_off'])} "
                 "without (per seed).")
    return text


def _03_floors(m: dict) -> str:
    return (f"CE-loss score {fmt(get(m, 'ce_loss_score'))} against zero ablation (CE {fmt(get(m, 'ce_zero'))} nats) but "
            f"{fmt(get(m, 'ce_loss_score_mean_floor'))} against mean ablation (CE {fmt(get(m, 'ce_mean'))}); ΔCE "
            f"{fmt(get(m, 'delta_ce'))} nats, KL {fmt(get(m, 'kl_sae'))}. A high score mostly says zero ablation is a low bar.")


def _03_scaling(m: dict) -> str:
    grow, fixed = get(m, "power_law_exponent"), get(m, "power_law_exponent_fixed_tokens")
    return (f"NMSE exponent in width {fmt(grow)} when tokens grow with width, {fmt(fixed)} at fixed tokens"
            + (": at a fixed budget the wide SAEs are undertrained and the curve flattens." if abs(fixed) < abs(grow) / 2
               else "."))


def _03_batchtopk(m: dict) -> str:
    return (f"BatchTopK's L0 is {fmt(get(m, 'batchtopk_l0_batch'))} on training batches (k per token on average, by "
            f"construction) but {fmt(get(m, 'batchtopk_l0_threshold'))} with the single threshold used at inference, "
            "which is estimated during training: the frontier plots the second.")


def _03_clean(m: dict) -> str:
    return (f"clean CE {fmt(get(m, 'ce_clean'))} nats here vs {fmt(get(m, 'clean_loss_as_notebook_00'))} on the first "
            "windows scored as notebook 00 scores them: other tokens and another convention (the prediction made at "
            "BOS left out here); section 7's reading says which of the two moves it more.")


def _03_convergence(m: dict) -> str:
    falls = [r["late_fall"] for r in get(m, "frontier") if r.get("late_fall") is not None]
    falling = sum(f > 0.05 for f in falls)
    return (f"{falling} of {len(falls)} frontier SAEs' objectives still fell by more than 5% between the early and the "
            f"late stretch of training (range {fmt(min(falls))} to {fmt(max(falls))}, relative)"
            + (": the architecture comparison is at equal compute, not at convergence." if falling else "."))


SHEET_03 = NotebookSheet(
    numbers=(
        Reading("main TopK SAE", lambda m: f"NMSE {fmt(get(m, 'nmse'))}, L0 {fmt(get(m, 'l0'))}, dead "
                f"{pct(get(m, 'dead_fraction'))}, on {fmt(get(m, 'sae_training_tokens'))} training tokens"),
        Reading("downstream", lambda m: f"CE-loss score {fmt(get(m, 'ce_loss_score'))} (zero floor), "
                f"{fmt(get(m, 'ce_loss_score_mean_floor'))} (mean floor); ΔCE {fmt(get(m, 'delta_ce'))} nats"),
        Reading("NMSE power law in width", lambda m: f"exponent {fmt(get(m, 'power_law_exponent'))}, 95% CI "
                f"{interval(*get(m, 'power_law_exponent_ci95'))}"),
        Reading("dead latents: no fix vs all fixes", lambda m: f"{pct(get(m, 'dead_fraction_no_fixes'))} vs "
                f"{pct(get(m, 'dead_fraction_all_fixes'))}"),
        Reading("seed spread of the fix controls", lambda m: "; ".join(
            f"{k}: NMSE {' / '.join(fmt(x) for x in v['nmse'])}" for k, v in get(m, "fix_controls").items())),
        Reading("ground truth (independent features, TopK)", lambda m: "; ".join(
            f"{k}: decoder MCC {fmt(v['decoder_mcc'])}, absorption {fmt(v['absorption'])}"
            for k, v in get(m, "synthetic").items() if "TopK" in k)),
        Reading("harvest", lambda m: f"{fmt(get(m, 'tokens_harvested'))} tokens, "
                f"{fmt(get(m, 'harvest_tokens_per_second'))} tokens/s, {get(m, 'massive_tokens_excluded')} massive-norm "
                "tokens left out"),
    ),
    anomalies=(
        Reading("steering with one latent (k of n prompts)", _03_steering),
        Reading("what each dead-latent fix does", _03_auxk),
        Reading("the CE-loss score and its floor", _03_floors),
        Reading("convergence of the frontier SAEs", _03_convergence),
        Reading("the width law, growing vs fixed tokens", _03_scaling),
        Reading("BatchTopK's two L0s", _03_batchtopk),
        Reading("clean loss differs from notebook 00", _03_clean),
    ),
)


# --------------------------------------------------------------------------- 04 · automated interpretability


def _04_kind_means(explainer_key: str, scorer: str) -> Callable[[dict], str]:
    def render(m: dict) -> str:
        name = get(m, "main_explainer") if explainer_key == "main" else explainer_key
        kinds = get(m, f"scores.{name}")
        parts = []
        for kind, s in kinds.items():
            v = s.get(scorer) or {}
            if v.get("mean") is None:
                continue
            ci = f" {interval(*v['ci95'])}" if v.get("ci95") else ""
            parts.append(f"{kind} {fmt(v['mean'])}{ci} (n={v['n']})")
        if not parts:
            raise KeyError(scorer)
        return f"{name}, {scorer}: " + "; ".join(parts)
    return render


def _04_gates(m: dict) -> str:
    gates = get(m, "sanity_gates")
    passed = [s for s, g in gates.items() if g.get("pass")]
    worst = "; ".join(f"{s} {fmt(g['known'])} (needs {fmt(g['known_min'])})" for s, g in gates.items()
                      if not g.get("known_pass", True) and g.get("known") is not None)
    return (f"{len(passed)} of {len(gates)} scorers passed their gates ({', '.join(passed) or 'none'}). On the planted "
            f"units, whose explanation is exactly right, the lowest scores are: {worst or 'all above their minimum'}. "
            "A failed scorer is struck through and left out of the conclusions: its numbers measure the 135M "
            "simulator or scorer, not the units.")


def _04_planted(m: dict) -> str:
    return (f"on the planted ' def' unit, explanation {get(m, 'def_unit_baseline_explanation')!r}: keyword simulator "
            f"r = {fmt(get(m, 'def_unit_correlation_keyword'))}, LM simulator r = {fmt(get(m, 'def_unit_correlation_llm'))}")


def _04_random(m: dict) -> str:
    kinds = get(m, "scores.baseline:token-stats")
    r = {k: v["correlation_keyword"]["mean"] for k, v in kinds.items()}
    return (f"with the token-statistics explainer, correlation_keyword: sae {fmt(r['sae'])}, random {fmt(r['random'])}, "
            f"neuron {fmt(r['neuron'])}. "
            + ("Random directions score above neurons: a random direction mixes many "
               "token-identity directions, which token statistics describe (a likely reason, not measured here). "
               "The paper found the opposite order with a strong explainer." if r["random"] > r["neuron"] else
               "Neurons score above random directions, as in the paper."))


def _04_tiers(m: dict) -> str:
    t = get(m, "tiers")
    return (f"{t['units_per_kind']} units per kind on every cheap scorer, {t['lm_units_per_kind']} per kind on the LM "
            f"scorers (records per unit {', '.join(str(x) for x in t['lm_records'])}): the LM-tier intervals are wide "
            "because they rest on a handful of units.")


def _04_cost(m: dict) -> str:
    cost = get(m, f"cost_per_unit_cpu_s.{get(m, 'main_explainer')}")
    return "; ".join(f"{k} {fmt(v['cpu_s_per_unit'])} s" for k, v in cost.items()) + " (CPU seconds per unit)"


SHEET_04 = NotebookSheet(
    numbers=(
        Reading("units", lambda m: f"{get(m, 'n_units_scored')} units scored ({get(m, 'backend')} backend, explainer "
                f"{get(m, 'main_explainer')}), {get(m, 'n_missing_explanations')} missing explanations"),
        Reading("cheap tier, by kind", _04_kind_means("baseline:token-stats", "correlation_keyword")),
        Reading("LM tier, by kind", _04_kind_means("main", "correlation_llm")),
        Reading("LM tier detection, by kind", _04_kind_means("main", "detection_auroc")),
        Reading("cost of the LM explainer and scorers", _04_cost),
    ),
    anomalies=(
        Reading("the sanity gates", _04_gates),
        Reading("the planted unit", _04_planted),
        Reading("neurons vs random directions", _04_random),
        Reading("few units on the LM tier", _04_tiers),
    ),
)

# --------------------------------------------------------------------------- 05 · capstone


def _05_scorer(m: dict) -> str:
    return get(m, "primary_scorer")


def _05_class_means(m: dict) -> str:
    means = get(m, f"class_means.{_05_scorer(m)}")
    return f"{_05_scorer(m)}: " + "; ".join(f"{k} {fmt(v['mean'])} {interval(*v['ci95'])}" for k, v in means.items())


def _05_pairs(m: dict) -> str:
    pairs = get(m, "pairs")
    fractions = sorted({p["fraction"] for p in pairs}, reverse=True)
    n_units = get(m, "n_units")
    return (f"{len(pairs)} matched (sparse, dense) pairs at kept fractions {', '.join(fmt(f) for f in fractions)}; "
            + (f"{fmt(min(n_units.values()))} units per class" if min(n_units.values()) == max(n_units.values())
               else f"{fmt(min(n_units.values()))}-{fmt(max(n_units.values()))} units per class"))


def _05_differences(m: dict) -> str:
    diffs = get(m, f"differences.{_05_scorer(m)}")
    rows = [(k, v["all"]) for k, v in diffs.items()]
    zero = [k for k, d in rows if contains(d["ci95"][0], d["ci95"][1], 0.0)]
    return ("; ".join(f"{k} {d['diff']:+.3f} {interval(*d['ci95'])}" for k, d in rows)
            + f". {len(zero)} of {len(rows)} intervals contain 0"
            + (f" ({', '.join(zero)}): no difference resolved there, which is not evidence of no difference."
               if zero else "."))


def _05_random(m: dict) -> str:
    means = get(m, f"class_means.{_05_scorer(m)}")
    above = [k for k in means if "random" not in k and means[k]["mean"] < max(
        v["mean"] for r, v in means.items() if "random" in r)]
    return (f"random directions score {' / '.join(fmt(v['mean']) for k, v in means.items() if 'random' in k)}: "
            + (f"above {', '.join(above)} in this run: a token-statistics explanation describes a random direction "
               "about as well as those units, so read every class against its random control" if above
               else "below every unit class"))


def _05_activity(m: dict) -> str:
    diffs = get(m, "activity_differences.active_fraction")
    return "; ".join(f"{k} {v['all']['diff']:+.3f} {interval(*v['all']['ci95'])}" for k, v in diffs.items()) + (
        " (share of tokens on which a unit is active): where the classes differ in how often they fire, keep it in "
        "mind when comparing their scores")


def _05_circuits(m: dict) -> str:
    c = get(m, "circuit_summary")
    return "; ".join(f"{side}: {v['circuits']} circuits, {fmt(v['units'])} units on average, {pct(v['share'])} of them "
                     "explained" for side, v in c.items())


SHEET_05 = NotebookSheet(
    numbers=(
        Reading("matched pairs", _05_pairs),
        Reading("explanation score by class", _05_class_means),
        Reading("the gate on the primary scorer", lambda m: "passed" if get(m, f"gates.{_05_scorer(m)}.pass")
                else "failed: the scores are not read"),
        Reading("SAE on each dense model", lambda m: "; ".join(
            f"NMSE {fmt(v['nmse'])}, L0 {fmt(v['l0'])}, {fmt(v['n_latents'])} latents" for v in
            list(get(m, "sae").values())[:1]) + f" (first of {len(get(m, 'sae'))})"),
    ),
    anomalies=(
        Reading("sparse - dense differences and their intervals", _05_differences),
        Reading("random directions against the units", _05_random),
        Reading("how often units fire", _05_activity),
        Reading("circuits: explained share of units", _05_circuits),
    ),
)

SHEETS: dict[str, NotebookSheet | Callable[[dict], NotebookSheet]] = {
    "00": SHEET_00, "01": SHEET_01, "02": _sheet_02, "03": SHEET_03, "04": SHEET_04, "05": SHEET_05}


def sheet_for(stem: str, metrics: dict) -> NotebookSheet | None:
    """The readings of notebook ``stem`` (by its number), or None for a notebook the sheet has none for."""
    sheet = SHEETS.get(stem[:2])
    return sheet(metrics) if callable(sheet) else sheet


# --------------------------------------------------------------------------- time budget


def _words(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9][\w'’-]*", text))


def _cells(path: Path | None) -> list[dict] | None:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("cells", [])
    except (OSError, ValueError):
        return None


def section_budgets(path: Path | None) -> list[SectionBudget] | None:
    """Per ``##`` section (the title cell's part first): words of prose and rendered readings, figures, printed
    exercise minutes and run time, from an executed notebook (a source notebook gives no figures or times)."""
    cells = _cells(path)
    if cells is None:
        return None
    sections: list[dict] = [{"title": "title and set-up", "words": 0, "figures": 0, "exercise": 0, "compute": 0.0}]
    for cell in cells:
        text = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            heading = next((line[3:].strip() for line in text.splitlines() if line.startswith("## ")), None)
            if heading is not None:
                sections.append({"title": heading, "words": 0, "figures": 0, "exercise": 0, "compute": 0.0})
            sections[-1]["words"] += _words(text)
            sections[-1]["exercise"] += sum(int(x) for x in _EXERCISE_TIME.findall(text))
        duration = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
        sections[-1]["compute"] += float(duration or 0.0)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            sections[-1]["figures"] += "image/png" in data
            if "text/markdown" in data:
                sections[-1]["words"] += _words("".join(data["text/markdown"]))
    return [SectionBudget(title=x["title"], words=x["words"], figures=x["figures"], exercise_minutes=x["exercise"],
                          compute_s=x["compute"]) for x in sections]


def time_budget(nb: NotebookRun, source: Path | None = None) -> TimeBudget | None:
    """Reading, exercise and compute time of one notebook, from its executed notebook (or ``source``)."""
    cells = _cells(nb.executed if nb.executed is not None else source)
    if cells is None:
        return None
    sections = section_budgets(nb.executed if nb.executed is not None else source) or []
    n_exercises = sum(len(_EXERCISE_TIME.findall("".join(c.get("source", [])))) for c in cells
                      if c.get("cell_type") == "markdown")
    wall = nb.metrics.get("wall_time_s") or nb.record.get("wall_time_s") or 0.0
    return TimeBudget(words=sum(x.words for x in sections), figures=sum(x.figures for x in sections),
                      exercise_minutes=sum(x.exercise_minutes for x in sections), n_exercises=n_exercises,
                      compute_minutes=float(wall) / 60)


def section_table(sections: Sequence[SectionBudget]) -> str:
    """A notebook's sections with their minutes, as a Markdown table: what cutting one saves."""
    lines = ["| section | words | figures | exercises (printed) | compute | minutes |", "|---|---|---|---|---|---|"]
    lines += [f"| {x.title} | {x.words:,} | {x.figures} | {x.exercise_minutes} | {x.compute_s:.0f} s | {x.minutes:.0f} |"
              for x in sections]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the sheet


def host_description() -> str:
    """This machine, in words: CPU model, cores, OS."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def checkout_commit(root: Path | None = None) -> str | None:
    """The short commit of the checkout (with ``+changes`` when files differ from it), or None without git."""
    root = root or runtime.project_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "") if head else None


def _provenance(nb: NotebookRun, commit: str | Mapping[str, str] | None, machine: str | None) -> str:
    m, r = nb.metrics, nb.record
    if isinstance(commit, Mapping):
        commit = commit.get(nb.stem[:2], commit.get(""))
    run_commit = r.get("commit") or m.get("commit")
    run_machine = r.get("machine") or m.get("machine")
    run_commit = f"{run_commit} (recorded by the run)" if run_commit else commit or MISSING
    run_machine = f"{run_machine} (recorded by the run)" if run_machine else machine or MISSING
    rows = [
        ("profile, seed", f"{m.get('profile', MISSING)}, seed {m.get('seed', MISSING)}"),
        ("device, dtype", f"{m.get('device', MISSING)}, {m.get('dtype', MISSING)} (native bf16: "
                          f"{m.get('native_bf16', MISSING)}), {m.get('torch_threads', MISSING)} torch threads"),
        ("machine", run_machine),
        ("commit", run_commit),
        ("run", f"id {r['run_id'][:12]}, finished {r.get('finished', MISSING)}" if r.get("run_id") else MISSING),
        ("wall time", f"{fmt(m['wall_time_s'])} s" if "wall_time_s" in m else MISSING),
    ]
    if nb.last_failure:
        rows.append(("warning", f"a later run failed (finished {nb.last_failure.get('finished', '?')}): these are the "
                                "numbers of the last good run"))
    return "| run | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _headline_table(metrics: dict) -> str:
    rows = metrics.get("headline") or []
    if not rows:
        return "The notebook declares no headline claims."
    lines = ["| claim | paper | this run | interval | gates |", "|---|---|---|---|---|"]
    for h in rows:
        value = h.get("value") if h.get("gates_passed", True) else f"(rejected: {h.get('note', '')})"
        lines.append("| " + " | ".join(str(x if x is not None else "-").replace("|", "/") for x in (
            h.get("claim"), h.get("paper"), value, h.get("interval"), "passed" if h.get("gates_passed", True) else "failed"))
            + " |")
    return "\n".join(lines)


def _scalars(metrics: dict, limit: int = 20) -> str:
    skip = {"profile", "seed", "device", "dtype", "native_bf16", "torch_threads", "wall_time_s", "headline"}
    rows = [(k, v) for k, v in metrics.items() if k not in skip and isinstance(v, (int, float, str, bool))][:limit]
    return "\n".join(f"- `{k}`: {fmt(v)}" for k, v in rows) or "- (no scalar metrics)"


def _title(nb: NotebookRun) -> str:
    if nb.executed is not None:
        try:
            for cell in json.loads(nb.executed.read_text()).get("cells", []):
                if cell.get("cell_type") == "markdown":
                    first = "".join(cell.get("source", [])).strip().splitlines()[0]
                    if first.startswith("# "):
                        return first[2:].strip()
                    break
        except (OSError, ValueError, IndexError):
            pass
    return nb.stem


def budget_table(budgets: dict[str, TimeBudget]) -> str:
    """The time budget of every notebook, as a Markdown table (minutes)."""
    lines = ["| notebook | words | figures | reading | exercises (printed) | exercises (x"
             f"{EXERCISE_FACTOR:g}) | compute | discussion | slot |", "|---|---|---|---|---|---|---|---|---|"]
    for stem, b in budgets.items():
        lines.append(f"| {stem[:2]} | {b.words:,} | {b.figures} | {b.reading_minutes:.0f} | {b.exercise_minutes} "
                     f"({b.n_exercises}) | {EXERCISE_FACTOR * b.exercise_minutes:.0f} | {b.compute_minutes:.0f} | "
                     f"{DISCUSSION_MINUTES} | **{5 * round(b.slot_minutes / 5)}** |")
    return "\n".join(lines)


def render_sheet(runs: dict[str, NotebookRun], commit: str | Mapping[str, str] | None = None,
                 machine: str | None = None) -> str:
    """The whole sheet as Markdown. ``commit``/``machine`` (descriptions) fill in what a run's own record lacks;
    ``commit`` may map notebook numbers ("03") to their own, with "" for the rest."""
    source_dir = runtime.project_root() / "notebooks"
    out = [
        "# Expected results and known anomalies",
        "",
        "What a teacher should expect to see in each notebook's **workshop** profile, and what learners will ask "
        "about. Generated by `make expected-results` (`python -m course_lib.teaching`) from a run folder of "
        "`make run`: do not edit by hand; rerun it after `make run`. Numbers vary with the machine's dtype "
        "(bfloat16 where the CPU computes it natively) and, for the trained models, with the seed; the spread lines "
        "say what this run measured of that. A reading the run did not record says \"" + MISSING + "\".",
        "",
    ]
    if not runs:
        out.append("No notebook outputs were found: run `make run` first.")
        return "\n".join(out) + "\n"
    budgets = {stem: b for stem, nb in runs.items()
               if (b := time_budget(nb, source_dir / f"{stem}.ipynb")) is not None}
    out += ["Notebooks: " + ", ".join(f"[{stem[:2]}](#notebook-{stem[:2]})" for stem in runs) + " · [time budget](#time-budget)", ""]
    for stem, nb in runs.items():
        out += [f'<a id="notebook-{stem[:2]}"></a>', "", f"## {_title(nb)}", "", _provenance(nb, commit, machine), ""]
        sheet = sheet_for(stem, nb.metrics)
        out += ["### Headline claims (as the notebook declares them)", "", _headline_table(nb.metrics), ""]
        if sheet is None:
            out += ["### Scalar metrics", "", _scalars(nb.metrics), ""]
        else:
            out += ["### Numbers to expect", ""]
            out += [f"- **{r.label}**: {_safe(r.render, nb.metrics)}" for r in sheet.numbers]
            out += ["", "### Known anomalies (what learners ask about)", ""]
            out += [f"- **{r.label}**: {_safe(r.render, nb.metrics)}" for r in sheet.anomalies]
            out.append("")
        sections = section_budgets(nb.executed)
        if sections:
            out += ["<details><summary>Minutes per section (what cutting one saves)</summary>", "",
                    section_table(sections), "", "</details>", ""]
    out += ['<a id="time-budget"></a>', "", "## Time budget", "",
            f"Minutes per notebook for a room of learners: reading = words / {WORDS_PER_MINUTE} + "
            f"{FIGURE_MINUTES:g} per figure (prose cells and the readings the run rendered), exercises = "
            f"{EXERCISE_FACTOR:g} x the times printed in the notebook, compute = this run's wall time (a warm cache), "
            f"discussion {DISCUSSION_MINUTES} min; the slot is their sum, rounded to 5 min. TEACHING.md's schedules "
            "are built from these slots.", ""]
    out.append(budget_table(budgets) if budgets else "No executed notebooks in the run folder: " + MISSING + ".")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.teaching", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, default=[Path("outputs")],
                        help="run folders of `python -m course_lib.cli run` (default: outputs); the last one wins")
    parser.add_argument("--out", type=Path, default=Path("docs/expected_results.md"))
    parser.add_argument("--commit", action="append", default=[], metavar="[NN=]COMMIT",
                        help="the commit the runs came from (default: the checkout's); NN=COMMIT for notebook NN only")
    parser.add_argument("--machine", default=None, help="the machine the runs came from (default: this one)")
    args = parser.parse_args(argv)
    runs = find_runs(args.runs)
    if not runs:
        print(f"no notebook outputs (NN_*/metrics.json) in {', '.join(map(str, args.runs))}; run `make run` first",
              file=sys.stderr)
        return 2
    commits = dict(c.split("=", 1) if re.match(r"^\d\d=", c) else ("", c) for c in args.commit)
    if "" not in commits and (c := checkout_commit()):
        commits[""] = f"{c}: the checkout the sheet was rendered from"
    machine = args.machine or f"{host_description()}: the machine the sheet was rendered on"
    text = render_sheet(runs, commit=commits, machine=machine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runtime.atomic_write_text(args.out, text)
    print(f"wrote {args.out}: {', '.join(runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
