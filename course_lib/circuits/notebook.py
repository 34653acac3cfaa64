"""Notebook 02's bookkeeping: parameter checks and sizes, result records for ``metrics.json``, report prose.

The notebook's cells run the experiment (load the set, search circuits, draw them); this module checks the
notebook's own parameters and derives the profile's sizes (:func:`settings`), assembles the records the
notebook reports (frozen dataclasses: :class:`PrunedOnce`, :class:`SolvedSummary`, :class:`SearchSummary`,
:class:`FrontierSummary`, :class:`WidthGroup`, :class:`WidthSummary`, :class:`Controls`,
:class:`DiagramChoice`, :class:`LessonMetrics`) and renders their text (``*_text``, ``*_line``) and Markdown
(``*_markdown``). Functions that search or shrink circuits take the learner's functions (``edge_fn``,
``accept_fn``, ``project_fn``, ``fraction_fn``) as arguments, as the notebook's exercises require.

Nothing here prints or displays: the notebook prints the text and ``display(Markdown(...))``s the Markdown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from course_lib import corpus, runtime
from course_lib.circuits import edges, frontier, plots, pruning
from course_lib.circuits import reference_training as rt
from course_lib.circuits.edges import EdgeFn
from course_lib.circuits.pruning import AcceptFn, Circuit, PruneConfig
from course_lib.circuits.tasks import SUITE, TaskData
from course_lib.circuits.training import eval_loss
from course_lib.circuits.transformer import SparseTransformer

TARGET_LOSS_MAX = 0.69  # ~ ln 2: chance level on a two-answer task
SOLVED_RATIO = 0.8  # "solved": the full model's loss on the solve prompts is at most this share of the target
FractionFn = Callable[[int, int, float, float, float], float]  # (step, total_steps, target, start, end) -> kept
ProjectFn = Callable[[torch.Tensor, float], torch.Tensor]  # (weights, kept fraction) -> projected weights

# --------------------------------------------------------------------------- parameters and sizes


@dataclasses.dataclass(frozen=True)
class Settings:
    """Notebook 02's validated parameters and the sizes derived from the run's profile."""

    use_reference_solutions: bool  # True: every exercise runs on the library solution, announced per exercise
    target_loss: float  # task loss a circuit must reach on held-out prompts ("auto" resolved for the profile)
    diagram_task: str  # preferred task of the wiring diagram when several circuits are equally small
    reference_set: str  # the REFERENCE_SET parameter as given: "auto", "retrain" or a folder
    set_name: str  # "smoke" (3 tiny models, trained here) or "reference" (the 45-model set)
    source: str  # where the set comes from: "shipped", "retrain" or the folder of an exported set
    n_prompts: int  # prompts per task and split (solve: decides solved; fit: masks and bisection; report)
    prune_cfg: PruneConfig  # mask learning, bisection and the solved threshold
    mean_windows: int  # corpus windows for the ablation means
    n_control_tasks: int  # tasks the per-model controls run on
    solved_loss: float  # a model solves a task when its full loss on the solve prompts is at most this (< target)
    mask_seeds: int  # mask seeds per pair in the noise study
    noise_subset: str  # the models of the noise study: "all", "seed 0" (one per configuration) or "five"
    n_boot: int  # bootstrap draws of the frontier's intervals


def settings(run: runtime.Run, use_reference_solutions: object, target_loss: object, diagram_task: object,
             reference_set: object) -> Settings:
    """Validate notebook 02's own parameters and derive its sizes from ``run.profile``.

    Raises :class:`runtime.ParameterError` naming the parameter and its valid values: ``USE_REFERENCE_SOLUTIONS``
    a bool; ``TARGET_LOSS`` ``"auto"`` (0.6 smoke, 0.3 workshop, 0.15 full) or a number in ``[0, 0.69]``;
    ``DIAGRAM_TASK`` a task of :data:`SUITE`; ``REFERENCE_SET`` ``"auto"``, ``"retrain"`` or a folder holding a
    reference-set manifest. A task is "solved" by a model when its unpruned held-out loss already reaches the
    target a circuit must reach; the bisection aims 15% below the target on the fit prompts, a margin for the
    held-out prompts.
    """
    runtime.check_type("USE_REFERENCE_SOLUTIONS", use_reference_solutions, bool)
    if isinstance(target_loss, str):
        runtime.check_choice("TARGET_LOSS", target_loss, ("auto",))
        target_loss = run.pick(smoke=0.6, workshop=0.3, full=0.15)
    elif not isinstance(target_loss, (int, float)) or isinstance(target_loss, bool):
        raise runtime.ParameterError(f"TARGET_LOSS={target_loss!r} has type {type(target_loss).__name__}; "
                                     "valid values: 'auto' or a number in [0.0, 0.69]")
    runtime.check_range("TARGET_LOSS", target_loss, 0.0, TARGET_LOSS_MAX)  # type: ignore[arg-type]
    target = float(target_loss)  # type: ignore[arg-type]
    runtime.check_choice("DIAGRAM_TASK", diagram_task, tuple(SUITE))
    runtime.check_type("REFERENCE_SET", reference_set, str)
    reference_set, diagram_task = cast(str, reference_set), cast(str, diagram_task)
    if reference_set not in ("auto", "retrain") and not (Path(reference_set) / rt.MANIFEST).is_file():
        raise runtime.ParameterError(f"REFERENCE_SET={reference_set!r} is not a folder with a {rt.MANIFEST}; "
                                     "valid values: 'auto', 'retrain' or the folder of an exported set")
    source = {"auto": run.pick(smoke="retrain", workshop="shipped", full="shipped")}.get(reference_set, reference_set)
    solved_loss = SOLVED_RATIO * target
    # workshop: fewer, larger steps on half the fit prompts per step (about half the cost of 120 steps at lr
    # 0.05 on all of them, circuits of about the same size); full: 600 small steps on every prompt
    prune_cfg = PruneConfig(steps=run.pick(smoke=20, workshop=80, full=600), target_loss=target,
                            lr=run.pick(smoke=0.05, workshop=0.1, full=0.05),
                            batch_size=run.pick(smoke=0, workshop=48, full=0),
                            grid_points=run.pick(smoke=8, workshop=16, full=32), solved_loss=solved_loss,
                            train_target_ratio=0.85, init_noise=0.5)
    return Settings(
        use_reference_solutions=bool(use_reference_solutions), target_loss=target, diagram_task=diagram_task,
        reference_set=reference_set, set_name=run.pick(smoke="smoke", workshop="reference", full="reference"),
        source=source, n_prompts=run.pick(smoke=16, workshop=96, full=128), prune_cfg=prune_cfg,
        mean_windows=run.pick(smoke=8, workshop=32, full=256), n_control_tasks=run.pick(smoke=1, workshop=2, full=7),
        solved_loss=solved_loss, mask_seeds=3, noise_subset=run.pick(smoke="all", workshop="five", full="all"),
        n_boot=run.pick(smoke=100, workshop=1000, full=2000))


def settings_text(s: Settings, profile: str, device: torch.device) -> str:
    """One line naming the profile, device, reference set, prompt count, target and mask-learning steps."""
    return (f"profile={profile} device={device} set={s.set_name} ({s.source}); {s.n_prompts} prompts per task and "
            f"split (solve / fit / report); solved at full loss <= {s.solved_loss:.3g}; circuit target "
            f"{s.target_loss}; mask learning {s.prune_cfg.steps} steps at lr {s.prune_cfg.lr:g} on "
            + (f"{s.prune_cfg.batch_size} prompts per step" if s.prune_cfg.batch_size else "every prompt")
            + f"; {s.mask_seeds} mask seeds on {NOISE_WORDS[s.noise_subset]}")


# --------------------------------------------------------------------------- section 2: the training checks


@dataclasses.dataclass(frozen=True)
class ScheduleCheck:
    """The learner's ``kept_fraction`` against the kept fractions logged while the reference models trained."""

    max_gap: float  # largest |learner's fraction - logged fraction| over every logged step of every model
    n_steps: int  # logged steps compared, over all models
    n_models: int  # models compared


@dataclasses.dataclass(frozen=True)
class PrunedOnce:
    """The best dense model of one width pruned once, after training, to a sparse group's kept fraction."""

    dense_model: str  # the dense model of that width with the lowest validation loss
    dense: float  # its validation loss
    pruned_once: float  # its validation loss after one top-k projection of every sparsified tensor
    trained_sparse_mean: float  # the trained sparse group's validation loss, mean over seeds


def schedule_check(entries: Mapping[str, Mapping], fraction_fn: FractionFn) -> ScheduleCheck:
    """Compare ``fraction_fn(step, steps, target_fraction, anneal_start, anneal_end)`` with the ``kept_fraction``
    logged at each logged step of each manifest entry trained with the linear schedule (the exercise's; models
    with ``anneal_shape == "geometric"`` are left out); the largest absolute difference."""
    gaps = {}
    entries = {n: e for n, e in entries.items() if e["train"].get("anneal_shape", "linear") == "linear"}
    for name, e in entries.items():
        t, lg = e["train"], e["log"]
        yours = [fraction_fn(s, t["steps"], t["target_fraction"], t["anneal_start"], t["anneal_end"]) for s in lg["step"]]
        gaps[name] = max(abs(a - b) for a, b in zip(yours, lg["kept_fraction"]))
    return ScheduleCheck(max(gaps.values(), default=0.0), sum(len(e["log"]["step"]) for e in entries.values()),
                         len(entries))


def prune_dense_once(entries: Mapping[str, Mapping], models: Mapping[str, SparseTransformer],
                     val_loss: Mapping[str, float], val_w: torch.Tensor, project_fn: ProjectFn,
                     device: torch.device) -> dict[int, dict[float, PrunedOnce]]:
    """One-shot magnitude pruning vs training sparse: ``{width: {kept fraction: PrunedOnce}}``.

    For each sparse group's kept fraction ``f`` (first entry of each (width, f)), a copy of the dense model of
    the same width with the lowest validation loss has every sparsified tensor replaced by
    ``project_fn(w, f)``; its validation loss on ``val_w`` is set against the trained sparse group's mean.
    Building the copy draws a random initialisation from torch's global generator (then overwritten), as the
    notebook always did, so later random draws are unchanged.
    """
    pruned_after: dict[int, dict[float, PrunedOnce]] = {}
    for e in entries.values():
        frac = e["train"]["target_fraction"]
        if frac >= 1:
            continue
        width = e["model"]["d_model"]
        dense = [n for n, x in entries.items() if x["train"]["target_fraction"] >= 1 and x["model"]["d_model"] == width]
        if not dense or frac in pruned_after.get(width, {}):
            continue
        best = min(dense, key=val_loss.__getitem__)
        m = SparseTransformer(models[best].cfg).to(device)
        m.load_state_dict(models[best].state_dict())
        with torch.no_grad():
            for p in m.sparsified_parameters().values():
                p.copy_(project_fn(p, frac))
        sparse_same = [val_loss[n] for n, x in entries.items() if x["group"] == e["group"]]
        pruned_after.setdefault(width, {})[frac] = PrunedOnce(best, val_loss[best], eval_loss(m.eval(), val_w),
                                                              sum(sparse_same) / len(sparse_same))
    return pruned_after


def training_checks_text(check: ScheduleCheck, pruned_after: Mapping[int, Mapping[float, PrunedOnce]]) -> str:
    """The schedule comparison line, then one line per (width, kept fraction) of :func:`prune_dense_once`."""
    lines = [f"your kept_fraction vs the kept fraction logged while each model was trained: max |difference| "
             f"{check.max_gap:.2g} over {check.n_steps} logged steps of {check.n_models} models"]
    for width, per in pruned_after.items():
        for frac, r in sorted(per.items()):
            lines.append(f"width {width}, kept fraction {frac:g}: {r.dense_model} (val {r.dense:.3f}) pruned once "
                         f"after training -> {r.pruned_once:.3f}; trained sparse (mean over seeds) "
                         f"{r.trained_sparse_mean:.3f}")
    return "\n".join(lines)


def matching_losses(entries: Mapping[str, Mapping], models: Mapping[str, SparseTransformer], val_stream: torch.Tensor,
                    recompute: bool) -> dict[str, float]:
    """The validation loss that matches dense and sparse models: on every window of the validation split.
    Read from the manifest (``val_loss_full``, :func:`rt.full_split_losses`) unless ``recompute`` or absent."""
    out = {}
    for n, e in entries.items():
        if not recompute and e.get("val_loss_full") is not None:
            out[n] = float(e["val_loss_full"])
        else:
            out[n] = eval_loss(models[n], corpus.windows(val_stream, models[n].cfg.n_ctx + 1))
    return out


def full_losses(models: Mapping[str, SparseTransformer], splits: Mapping[str, Mapping[str, TaskData]]
                ) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {model: {task: loss}}}``: every unpruned model's task loss on each prompt split."""
    names = next(iter(splits.values())).keys() if splits else ()
    return {k: {n: {t: pruning.task_loss(m, sp[k]) for t, sp in splits.items()} for n, m in models.items()}
            for k in names}


# --------------------------------------------------------------------------- section 3: solved tasks


@dataclasses.dataclass(frozen=True)
class SolvedSummary:
    """Which tasks the unpruned models solve (held-out task loss at most the target)."""

    target_loss: float  # the solved threshold
    n_models: int  # trained models counted (the random-init control not among them)
    by_task: dict[str, int]  # task -> number of trained models solving it, in task order
    everyone: tuple[str, ...]  # tasks every trained model solves
    solve_none: tuple[str, ...]  # trained models that solve no task
    random_init_solved: int  # tasks the random-init control solves


def solved_summary(solved: Mapping[str, Sequence[str]], task_names: Sequence[str], model_names: Sequence[str],
                   target_loss: float) -> SolvedSummary:
    """Count, per task, the trained models (``model_names``) whose ``solved`` list has it; ``solved`` also holds
    the ``"random init"`` control."""
    by_task = {t: sum(t in solved[n] for n in model_names) for t in task_names}
    return SolvedSummary(target_loss, len(model_names), by_task,
                         tuple(t for t in task_names if by_task[t] == len(model_names)),
                         tuple(n for n in model_names if not solved[n]), len(solved["random init"]))


def solved_markdown(s: SolvedSummary) -> str:
    """Markdown: each task's solver count, the tasks everyone solves, models solving none, the control."""
    return (f"**Solved (held-out loss of the full model at most {s.target_loss}):** " + "; ".join(
        f"{t} by {k} of {s.n_models} models" for t, k in s.by_task.items())
        + f". Tasks every model solves: **{', '.join(s.everyone) or 'none'}**. "
        + f"Models that solve no task: {', '.join(s.solve_none) or 'none'}. "
        + f"The random-init control solves {s.random_init_solved}.")


# --------------------------------------------------------------------------- section 4: circuit search


@dataclasses.dataclass(frozen=True)
class SearchSummary:
    """How the circuit searches on the solved (model, task) pairs ended."""

    n_pairs: int  # solved (model, task) pairs searched
    n_valid: int  # of them, held-out-valid circuits (reported)
    overfit: tuple[tuple[str, str], ...]  # (model, task) whose node set reached the goal on the fit prompts only


def circuit_table(results: Mapping[str, Mapping[str, Circuit]], models: Mapping[str, SparseTransformer],
                  target_loss: float) -> str:
    """The node count per model width, then one row per search: full and pruned train/held-out task losses,
    the bisection's train k, and the circuit's nodes and edges (None unless held-out-valid)."""
    widths = {m.cfg.d_model: m for m in models.values()}
    lines = [f"target {target_loss} on held-out prompts; nodes per model: "
             + ", ".join(f"width {w}: {pruning.total_nodes(m)}" for w, m in widths.items()),
             f"{'model':28s} {'task':14s} {'full tr/te':>12s} {'pruned tr/te':>12s} {'train k':>7s} {'nodes':>5s} "
             f"{'edges':>6s}"]
    for n, per in results.items():
        for t, c in per.items():
            lines.append(f"{n:28s} {t:14s} {c.full_train_loss:5.3f}/{c.full_loss:5.3f} {c.train_loss:5.3f}/"
                         f"{c.test_loss:5.3f} {str(c.train_nodes):>7s} {str(c.n_nodes):>5s} {str(c.edges):>6s}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- section 4: the searches


@dataclasses.dataclass(frozen=True)
class SearchJob:
    """One circuit search: a model, a task, the mask seed and the ablation (``"mean"`` or ``"zero"``)."""

    model: str
    task: str
    mask_seed: int = 0
    ablation: str = "mean"


def frontier_models(entries: Mapping[str, Mapping]) -> list[str]:
    """The models the frontier compares: every sparse model, and the dense models trained on the *same data*
    (as many steps and the same task mix as the sparse models). Dense models stopped earlier saw a fraction of
    the task text and are left out of the matching (they are still listed with their losses)."""
    sparse = [n for n, e in entries.items() if e["train"]["target_fraction"] < 1]
    steps = {entries[n]["steps"] for n in sparse}
    mix = {entries[n].get("task_mix", 0.0) for n in sparse}
    dense = [n for n, e in entries.items() if e["train"]["target_fraction"] >= 1 and e["steps"] in steps
             and e.get("task_mix", 0.0) in mix]
    return dense + sparse


NOISE_FIVE = (("dense, equal data", 32), ("dense, equal data", 64), ("sparse 0.4", 64), ("sparse 0.1", 64),
              ("sparse 0.05, width 96", 96))  # (group, width) of the workshop's noise study, training seed 0
NOISE_WORDS = {"all": "every model", "seed 0": "one model per configuration (training seed 0)",
               "five": "five models (training seed 0 of dense widths 32 and 64, sparse 0.4, 0.1 and 0.05)"}


def noise_models(entries: Mapping[str, Mapping], names: Sequence[str], subset: str) -> list[str]:
    """The models of the noise study: all of ``names``; (``"seed 0"``) those of training seed 0, one per
    configuration; or (``"five"``) the seed-0 models of the configurations :data:`NOISE_FIVE`, where the set has
    them (else seed 0 of every configuration)."""
    if subset == "all":
        return list(names)
    seed0 = [n for n in names if entries[n]["train"]["seed"] == 0]
    if subset == "five":
        five = [n for n in seed0 if (entries[n]["group"], entries[n]["model"]["d_model"]) in NOISE_FIVE]
        return five or seed0
    return seed0


def search_jobs(names: Sequence[str], solved: Mapping[str, Sequence[str]], noise: Sequence[str],
                mask_seeds: int) -> list[SearchJob]:
    """Mask seed 0 with mean ablation on every solved (model, task) pair of ``names``; on the pairs of ``noise``
    also mask seeds 1..``mask_seeds - 1`` and zero ablation (seed 0)."""
    jobs = [SearchJob(n, t) for n in names for t in solved[n]]
    for n in noise:
        for t in solved[n]:
            jobs += [SearchJob(n, t, k) for k in range(1, mask_seeds)] + [SearchJob(n, t, 0, "zero")]
    return jobs


def search_summary(results: Mapping[str, Mapping[str, Circuit]]) -> SearchSummary:
    """Count the searches, the held-out-valid circuits and the node sets valid on the fit prompts only."""
    overfit = tuple((n, t) for n, per in results.items() for t, c in per.items()
                    if c.train_nodes is not None and not c.valid)
    return SearchSummary(sum(map(len, results.values())),
                         sum(c.valid for per in results.values() for c in per.values()), overfit)


def search_markdown(s: SearchSummary) -> str:
    """Markdown: valid circuits out of searched pairs, the fit-only node sets by name, the rest."""
    return (f"**{s.n_valid} held-out-valid circuit(s)** from {s.n_pairs} solved (model, task) pairs. "
            f"{len(s.overfit)} node set(s) reached the goal on the fit prompts but not the target on the report "
            "prompts; they are listed here and have no size in the comparison below (a node set that fails on new "
            "prompts is not a circuit), on the dense and the sparse side alike"
            + (" (" + ", ".join(f"{n}/{t}" for n, t in s.overfit) + ")" if s.overfit else "") + "; "
            + f"{s.n_pairs - s.n_valid - len(s.overfit)} never reached the goal on the fit prompts.")


# --------------------------------------------------------------------------- section 5: the frontier


def frontier_inputs(searches: Mapping[SearchJob, Circuit], entries: Mapping[str, Mapping], names: Sequence[str],
                    val_loss: Mapping[str, float], tasks: Sequence[str], mask_seed: int = 0, ablation: str = "mean",
                    densities: Mapping[str, Mapping[str, float]] | None = None) -> list[frontier.FrontierModel]:
    """The :class:`~course_lib.circuits.frontier.FrontierModel` of each of ``names`` from the searches of one
    mask seed and ablation (a pair not searched, or without a held-out-valid circuit, has no size), with each
    model's edge density per task (``densities[model][task]``, :func:`pruning.model_density`)."""
    out = []
    for n in names:
        sizes = {}
        for t in tasks:
            c = searches.get(SearchJob(n, t, mask_seed, ablation))
            sizes[t] = (c.n_nodes, c.edges, c.possible_edges) if c is not None and c.valid else None
        out.append(frontier.model_from_entry(entries[n], val_loss[n], sizes, (densities or {}).get(n)))
    return out


def model_densities(models: Mapping[str, SparseTransformer], solved: Mapping[str, Sequence[str]],
                    data: Mapping[str, TaskData]) -> dict[str, dict[str, float]]:
    """``{model: {task: edge density of the whole model}}`` for every solved task (:func:`pruning.model_density`
    with the task's answers): the density null's ingredient."""
    return {n: {t: pruning.model_density(m, data[t]) for t in solved.get(n, ())} for n, m in models.items()}


def interval_text(v: Mapping[str, Any], digits: int = 2) -> str:
    """``value [lo, hi]`` of a summary entry; ``n/a`` without a value."""
    if v.get("value") is None:
        return "n/a"
    ci = f" [{v['lo']:.{digits}f}, {v['hi']:.{digits}f}]" if v.get("lo") is not None else ""
    return f"{v['value']:.{digits}f}x{ci}"


def frontier_text(front: Mapping[str, Any]) -> str:
    """Per task: the dense widths' points, then each sparse circuit's ratios (or why it has none)."""
    lines = []
    for t in front["tasks"]:
        pts = front["dense"].get(t, [])
        lines.append(f"{t:14s} dense widths (width, val loss: nodes/edges) "
                     + (", ".join(f"w{p[3]} {p[0]:.2f}: {p[1]:.0f}/{p[2]:.0f}" for p in pts) or "none"))
        for key, r in front["pairs"].items():
            n, tt = key.split("|")
            if tt != t:
                continue
            lines.append(f"    {n:32s} " + ("no dense model at least as capable has a circuit" if r is None else
                         f"nodes {math.exp(r['node']):.2f}x, edges {math.exp(r['edge']):.2f}x, density null "
                         f"{math.exp(r['null']):.2f}x, edges/null {math.exp(r['excess']):.2f}x (vs {r['dense_model']}, "
                         f"{r.get('loss_gap', 0.0):+.2f} nats more capable)"))
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class FrontierSummary:
    """The comparison of :func:`course_lib.circuits.frontier.analyse`, per kept fraction."""

    groups: dict[str, dict[str, Any]]  # sparse group -> node/edge/null/excess summaries, counts, fraction
    slopes: dict[str, dict[str, float | None]]  # ratio -> slope of log ratio on log(1/f), with interval
    no_circuit_as_capable: tuple[str, ...]  # "model|task": dense models as capable exist, none has a circuit
    more_capable: tuple[str, ...]  # "model|task": the sparse model beats every dense model with a circuit
    n_dense: int  # dense models in the frontier
    dense_widths: tuple[int, ...]  # their widths
    loss_gaps: tuple[float, ...] = ()  # per matched pair: sparse minus matched dense validation loss (> 0: dense
    #                                    more capable; the envelope takes the fewest of every width at least as capable)


def frontier_summary(front: Mapping[str, Any], fmodels: Sequence[frontier.FrontierModel]) -> FrontierSummary:
    """Collect the per-fraction summaries, slopes, unmatched circuits and loss gaps of ``front``."""
    dense = [m for m in fmodels if m.dense]
    gaps = tuple(sorted(r["loss_gap"] for r in front["pairs"].values() if r and "loss_gap" in r))
    return FrontierSummary(dict(front["groups"]), dict(front["slopes"]),
                           tuple(front["unmatched"]["no_circuit_as_capable"]),
                           tuple(front["unmatched"]["more_capable_than_dense"]), len(dense),
                           tuple(sorted({m.width for m in dense})), gaps)


def _verdict(v: Mapping[str, Any], what: str) -> str:
    if v.get("lo") is None:
        return f"{what}: too few pairs for an interval"
    if v["lo"] > 1 + 1e-9:
        return f"{what} smaller in the sparse models"
    if v["hi"] < 1 - 1e-9:
        return f"{what} larger in the sparse models"
    return f"no difference in {what} can be claimed"


def _spread(s: FrontierSummary, key: str) -> tuple[list[float], int, int]:
    """Values of one ratio over the groups with pairs, and how many intervals lie above 1 and below 1."""
    xs = [g[key] for g in s.groups.values() if g["n_pairs"] and g[key]["value"] is not None]
    above = sum(x["lo"] is not None and x["lo"] > 1 + 1e-9 for x in xs)
    below = sum(x["hi"] is not None and x["hi"] < 1 - 1e-9 for x in xs)
    return [x["value"] for x in xs], above, below


def finding_text(s: FrontierSummary) -> str:
    """The section's finding, from the per-fraction node ratios, edges / null and concentration: which way each
    interval points, or that the data cannot tell (never "no difference" from an interval that contains 1)."""
    nodes, n_up, n_down = _spread(s, "node")
    if not nodes:
        return "**Finding:** no sparse circuit could be matched with a dense one in this run."
    exc, e_up, e_down = _spread(s, "excess")
    conc, c_up, _ = _spread(s, "concentration")
    k = len(nodes)

    def part(vals: list[float], up: int, down: int, noun: str, up_word: str, down_word: str) -> str:
        rng = f"{min(vals):.2f}-{max(vals):.2f}x" if len(vals) > 1 else f"{vals[0]:.2f}x"
        return (f"{noun} {rng} over the {k} kept fractions; the interval lies above 1 ({up_word}) in {up}, below 1 "
                f"({down_word}) in {down}, and contains 1 in {k - up - down}")

    lines = ["**Finding:** " + part(nodes, n_up, n_down, "node ratios", "sparse circuits smaller",
                                    "sparse circuits larger") + ". "
             + part(exc, e_up, e_down, "Edges / null", "fewer edges than density predicts",
                    "more edges than density predicts") + "."]
    if conc:
        lines.append(f"The sparse circuits are wired {min(conc):.1f}-{max(conc):.1f}x more densely than their models "
                     f"(concentration; the interval above 1 in {c_up} of {k}): pruning keeps the nodes whose weights "
                     "survived.")
    if n_up == 0:
        lines.append("At this scale there is **no sign that weight-sparse circuits are smaller in nodes** than the "
                     "smallest circuits of dense widths at least as capable"
                     + (" (the intervals are wide: they also allow a factor of 2 either way)" if n_down == 0 else "")
                     + (f"; in {n_down} kept fraction(s) they are larger" if n_down else "") + ".")
    if e_down:
        lines.append("Where edges / null lies below 1, the sparse circuits' smaller edge counts are *less* than weight "
                     "density alone would give: more nodes, or more densely wired ones, take back part of the "
                     "density advantage.")
    return " ".join(lines)


def frontier_markdown(s: FrontierSummary) -> str:
    """Markdown: per kept fraction the node ratio, the edge ratio beside its density null and their quotient,
    with intervals and a verdict each; the slopes; what the paper's 16x is; the unmatched circuits."""
    rows = ["| sparse group | pairs (models, tasks) | node ratio | edge ratio | density null | edges / null | "
            "concentration |", "| --- | --- | --- | --- | --- | --- | --- |"]
    verdicts = []
    for g, x in s.groups.items():
        rows.append(f"| {g} | {x['n_pairs']} ({x['n_models']}, {x['n_tasks']}) | {interval_text(x['node'])} | "
                    f"{interval_text(x['edge'])} | {interval_text(x['null'])} | {interval_text(x['excess'])} | "
                    f"{interval_text(x.get('concentration', {}))} |")
        if x["n_pairs"]:
            verdicts.append(f"{g}: {_verdict(x['node'], 'nodes')}; {_verdict(x['excess'], 'edges beyond density')}")
    sl = s.slopes

    def slope_text(k: str) -> str:
        v = sl.get(k) or {}
        if v.get("value") is None:
            return "n/a"
        ci = f" [{v['lo']:.2f}, {v['hi']:.2f}]" if v.get("lo") is not None else ""
        return f"{v['value']:.2f}{ci}"

    return (
        finding_text(s) + "\n\n" +
        f"Dense frontier: {s.n_dense} dense models of widths {', '.join(map(str, s.dense_widths))}, trained on the "
        "sparse models' data, one point per width (the mean validation loss of its seeds, the geometric-mean "
        "circuit size of the seeds with a circuit). Ratios are dense / sparse (> 1: the sparse circuit is smaller), "
        "geometric means over (model, task) pairs with 95% crossed-bootstrap intervals (sparse models, dense seeds "
        "within each width, and tasks resampled; with 2-3 models and 2-3 tasks per group these intervals are rough, "
        "and they leave out the search's own noise, measured below). The density null is the dense model's edge "
        "density over the sparse model's, whole models with every node kept; concentration is the sparse circuit's "
        "edge density over its model's:\n\n" + "\n".join(rows) + "\n\n"
        + ("**Reading:** " + ". ".join(verdicts) + ". " if verdicts else "No sparse circuit could be matched. ")
        + f"Slopes of log ratio against log(1/f) over all pairs: edges {slope_text('edge')} against the density "
        f"null's {slope_text('null')}, nodes {slope_text('node')}, edges / null {slope_text('excess')}; if weight "
        "density were all that differs, the edge ratio would rise with 1/f as its null does and the other two "
        "would stay flat (slope 0). "
        + "**The paper's ~16x is an edge ratio**, at kept fractions near 1/1000, where the density null is far "
        "larger than here: the edge ratio mixes the density of the weights with the size of the node set, and only "
        "the node ratio and edges / null separate the second from the first. "
        + (f"**Matching is conservative:** each sparse circuit is compared with the fewest nodes of any dense width "
           f"at least as capable, which is {min(s.loss_gaps):.2f}-{max(s.loss_gaps):.2f} nats (median "
           f"{s.loss_gaps[len(s.loss_gaps) // 2]:.2f}) more capable than the sparse model: the least capable dense "
           "widths solve few tasks, so for the less capable sparse models there is no dense circuit at their own "
           "loss, and a less capable dense model might need a different circuit. " if s.loss_gaps else "")
        + (f"{len(s.no_circuit_as_capable)} sparse circuit(s) have no match because no dense model at least as "
           "capable has a circuit for the task (" + ", ".join(s.no_circuit_as_capable) + "). "
           if s.no_circuit_as_capable else "")
        + (f"{len(s.more_capable)} belong to sparse models more capable than every dense model with a circuit for "
           "the task (" + ", ".join(s.more_capable) + ")." if s.more_capable else ""))


@dataclasses.dataclass(frozen=True)
class NoiseSummary:
    """How much a circuit's size depends on the search: mask seeds and the ablation, on the noise models."""

    models: tuple[str, ...]  # the models searched with every mask seed and with zero ablation
    sizes: dict[str, dict[str, list[int | None]]]  # "model|task" -> {"nodes": [per seed], "edges": [...]}
    valid_share: float  # share of the noise searches (all seeds, mean ablation) that are held-out-valid
    edge_spread: float | None  # median over pairs valid in >= 2 seeds of max / min edges
    node_spread: float | None  # the same for nodes
    by_seed: dict[int, dict[str, dict[str, Any]]]  # mask seed -> group -> frontier summary on the noise models
    zero: dict[str, dict[str, Any]]  # group -> frontier summary under zero ablation (seed 0) on the noise models
    zero_vs_mean_edges: float | None  # geometric mean of zero / mean edges over pairs valid under both


def noise_summary(searches: Mapping[SearchJob, Circuit], entries: Mapping[str, Mapping], noise: Sequence[str],
                  val_loss: Mapping[str, float], tasks: Sequence[str], mask_seeds: int, n_boot: int,
                  seed: int, densities: Mapping[str, Mapping[str, float]] | None = None) -> NoiseSummary:
    """Sizes per mask seed, their spread, the per-fraction ratios recomputed with each mask seed and under zero
    ablation, all on the models of the noise study."""
    sizes: dict[str, dict[str, list[int | None]]] = {}
    n_valid = n_all = 0
    for n in noise:
        for t in tasks:
            cs = [searches.get(SearchJob(n, t, k)) for k in range(mask_seeds)]
            if any(c is None for c in cs):
                continue
            sizes[f"{n}|{t}"] = {"nodes": [c.n_nodes for c in cs], "edges": [c.edges for c in cs]}  # type: ignore[union-attr]
            n_valid += sum(c.valid for c in cs)  # type: ignore[union-attr]
            n_all += len(cs)

    def spread(key: str) -> float | None:
        r = [max(v) / min(v) for p in sizes.values() if len(v := [x for x in p[key] if x]) >= 2]
        return sorted(r)[len(r) // 2] if r else None

    def summary(mask_seed: int, ablation: str) -> dict[str, dict[str, Any]]:
        fm = frontier_inputs(searches, entries, noise, val_loss, tasks, mask_seed, ablation, densities)
        return dict(frontier.analyse(fm, tasks, n_boot, seed)["groups"])

    zr = [math.log(z.edges / m.edges) for n in noise for t in tasks
          if (z := searches.get(SearchJob(n, t, 0, "zero"))) and (m := searches.get(SearchJob(n, t)))
          and z.valid and m.valid]
    return NoiseSummary(tuple(noise), sizes, n_valid / n_all if n_all else 0.0, spread("edges"), spread("nodes"),
                        {k: summary(k, "mean") for k in range(mask_seeds)}, summary(0, "zero"),
                        math.exp(sum(zr) / len(zr)) if zr else None)


def noise_markdown(s: NoiseSummary) -> str:
    """Markdown: the spread over mask seeds, the node and edge ratios per mask seed and under zero ablation."""
    groups = list(s.zero) or list(next(iter(s.by_seed.values()), {}))
    rows = ["| sparse group | " + " | ".join(f"edges, mask seed {k}" for k in s.by_seed) + " | edges, zero ablation "
            "| nodes, mask seed 0 | nodes, zero ablation |", "|" + " --- |" * (len(s.by_seed) + 4)]
    for g in groups:
        rows.append(f"| {g} | " + " | ".join(interval_text(s.by_seed[k].get(g, {}).get("edge", {})) for k in s.by_seed)
                    + f" | {interval_text(s.zero.get(g, {}).get('edge', {}))} | "
                    f"{interval_text(s.by_seed[0].get(g, {}).get('node', {}))} | "
                    f"{interval_text(s.zero.get(g, {}).get('node', {}))} |")
    return (
        f"**Noise floor** ({len(s.models)} models, {len(s.sizes)} solved pairs, {len(s.by_seed)} mask seeds each): "
        f"{s.valid_share:.0%} of the searches gave a held-out-valid circuit. Across mask seeds, the largest circuit of "
        "a pair is typically (median over pairs) "
        + (f"**{s.edge_spread:.2f}x** the smallest in edges and {s.node_spread:.2f}x in nodes"
           if s.edge_spread else "not comparable (fewer than two valid seeds per pair)")
        + ". "
        + (f"Zero instead of mean ablation multiplies a circuit's edges by {s.zero_vs_mean_edges:.2f} "
           "(geometric mean over the pairs valid under both). " if s.zero_vs_mean_edges else "")
        + "The same ratios on these models only (their own dense frontier: the dense models among them), per mask "
        "seed and under zero ablation:\n\n" + "\n".join(rows))


def noise_verdict(noise: NoiseSummary, s: FrontierSummary) -> str:
    """One sentence: is the dense/sparse node difference larger than the search's own spread?"""
    nodes = [g["node"]["value"] for g in s.groups.values() if g["n_pairs"] and g["node"]["value"]]
    if not nodes or not noise.node_spread:
        return ""
    far = max(max(v, 1 / v) for v in nodes)
    zero = [g["node"]["value"] for g in noise.zero.values() if g.get("node", {}).get("value")]
    flips = zero and nodes and (min(zero) > 1) != (max(nodes) > 1)
    return (f"**Against the noise:** the node ratios lie at most {far:.2f}x from 1, while one pair's circuit varies "
            f"{noise.node_spread:.2f}x in nodes between mask seeds alone"
            + (": **the dense/sparse node difference is within the noise of the search** at this budget"
               if far <= noise.node_spread else ": the largest node difference exceeds the search's spread")
            + ". The headline uses mask seed 0 only; its intervals do not include this spread. "
            + ("Under zero ablation the node ratios of the noise models lie on the other side of 1 "
               f"({min(zero):.2f}-{max(zero):.2f}x): the direction of the node difference depends on the ablation."
               if flips else ""))


# --------------------------------------------------------------------------- section 5: width at a weight budget


@dataclasses.dataclass(frozen=True)
class WidthGroup:
    """One sparse group of the width comparison (a wide group and the narrower group closest in nonzeros)."""

    width: int  # d_model
    models: list[str]  # the group's models (one per seed)
    nonzero_weights: float  # nonzero weights per model, mean over the group
    val_loss: list[float]  # validation loss of each model (float32 values, as a tensor held them)
    val_mean: float  # their mean (computed in float32)
    val_sd: float  # their sample standard deviation (0.0 for a single model)
    circuits: int  # held-out-valid circuits over the group's models
    ratio: dict[str, Any] | None  # the group's matched-ratio summary, None if the frontier has none
    embedding_nonzero: float  # nonzero weights in W_E and W_U per model, mean over the group


@dataclasses.dataclass(frozen=True)
class WidthSummary:
    """The two groups of the width comparison set side by side."""

    narrow: WidthGroup  # the narrower sparse group
    wide: WidthGroup  # the wide sparse group with about as many nonzero weights
    margin: float  # a clear capability difference: more than twice the larger seed-to-seed sd
    both: tuple[str, ...]  # tasks both groups have held-out-valid circuits for
    edge_ratio: float | None  # narrow / wide circuit edges, geometric mean over seeds then tasks; None if no task


def width_comparison(entries: Mapping[str, Mapping], models: Mapping[str, SparseTransformer],
                     val_loss: Mapping[str, float], reported: Mapping[str, Mapping[str, Circuit]],
                     summary: Mapping[str, Any]) -> dict[str, WidthGroup]:
    """For each ``wide...`` group: the narrower sparse group whose mean nonzero-weight count is closest, then
    both groups' :class:`WidthGroup` (``{group: WidthGroup}``, narrow first; empty when there is no wide group)."""
    wide_groups = [g for g in dict.fromkeys(e["group"] for e in entries.values()) if g.startswith("wide")]
    width_cmp: dict[str, WidthGroup] = {}
    for wg in wide_groups:
        nz = [e["nonzero_weights"] for e in entries.values() if e["group"] == wg]
        wide_width = entries[next(n for n in entries if entries[n]["group"] == wg)]["model"]["d_model"]
        others = {e["group"] for e in entries.values() if e["train"]["target_fraction"] < 1 and e["group"] != wg
                  and e["model"]["d_model"] < wide_width}
        if not others:
            continue
        narrow = min(others, key=lambda g: abs(sum(e["nonzero_weights"] for e in entries.values() if e["group"] == g)
                                                / sum(e["group"] == g for e in entries.values()) - sum(nz) / len(nz)))
        for g in (narrow, wg):
            names = [n for n in entries if entries[n]["group"] == g]
            vl = torch.tensor([val_loss[n] for n in names])
            width_cmp[g] = WidthGroup(
                width=entries[names[0]]["model"]["d_model"], models=names,
                nonzero_weights=sum(entries[n]["nonzero_weights"] for n in names) / len(names),
                val_loss=vl.tolist(), val_mean=float(vl.mean()), val_sd=float(vl.std()) if len(names) > 1 else 0.0,
                circuits=sum(len(reported[n]) for n in names), ratio=summary.get(g),
                embedding_nonzero=sum(int((models[n].W_E != 0).sum() + (models[n].W_U != 0).sum())
                                      for n in names) / len(names))
    return width_cmp


def width_line(group: str, w: WidthGroup) -> str:
    """One line for one group: width, nonzero weights, validation losses, circuits, ratio, embedding share."""
    return (f"{group:17s} width {w.width:3d}: {w.nonzero_weights:,.0f} nonzero weights; val loss "
            + ", ".join(f"{v:.3f}" for v in w.val_loss) + f" (mean {w.val_mean:.3f}, sd {w.val_sd:.3f}); "
            + f"{w.circuits} held-out-valid circuits; {ratio_line(w.ratio)}; "
            + f"{w.embedding_nonzero:,.0f} of the nonzero weights in the embedding and unembedding, "
            + f"{w.nonzero_weights - w.embedding_nonzero:,.0f} in the blocks")


def ratio_line(r: Mapping[str, Any] | None) -> str:
    """A group's matched ratios in a few words: edges and nodes with intervals."""
    if not r or r.get("edge", {}).get("value") is None:
        return "no matched circuit"
    return f"matched edge ratio {interval_text(r['edge'])}, node ratio {interval_text(r['node'])}"


def width_summary(width_cmp: Mapping[str, WidthGroup], reported: Mapping[str, Mapping[str, Circuit]],
                  task_names: Sequence[str]) -> WidthSummary | None:
    """Set the two groups of :func:`width_comparison` side by side (None unless there are exactly two): the
    margin of a clear difference, and the edge ratio ``exp(mean_t log(E_narrow,t / E_wide,t))`` over the tasks
    both have circuits for, each group's ``E`` a geometric mean over its seeds' circuits."""
    if len(width_cmp) != 2:
        return None
    (g1, a), (g2, b) = width_cmp.items()

    def group_edges(g: str, t: str) -> float | None:
        es = [reported[n][t].edges for n in width_cmp[g].models if t in reported[n]]
        return math.exp(sum(map(math.log, es)) / len(es)) if es else None

    both = [t for t in task_names if group_edges(g1, t) and group_edges(g2, t)]
    edge_ratio = (math.exp(sum(math.log(group_edges(g1, t) / group_edges(g2, t)) for t in both) / len(both))  # type: ignore[operator]
                  if both else None)
    return WidthSummary(a, b, 2 * max(a.val_sd, b.val_sd, 1e-9), tuple(both), edge_ratio)


def width_markdown(s: WidthSummary | None) -> str:
    """Markdown: capability of the two widths at one weight budget, their circuits and edges, where the budget
    goes; a one-line note when the set has no wide group."""
    if s is None:
        return "This set has no wide sparse group to compare (the smoke set is three tiny models)."
    a, b, margin, both = s.narrow, s.wide, s.margin, s.both
    return (
        f"At about the same number of nonzero weights ({a.nonzero_weights:,.0f} vs {b.nonzero_weights:,.0f}), "
        f"the width-{b.width} models reach validation loss {b.val_mean:.3f} (sd {b.val_sd:.3f}) against "
        f"{a.val_mean:.3f} (sd {a.val_sd:.3f}) at width {a.width}: "
        + ("**wider is more capable at the same weight budget**, as in the paper" if b.val_mean < a.val_mean - margin
           else "**wider is less capable at the same weight budget here**, the opposite of the paper"
           if b.val_mean > a.val_mean + margin else "no clear capability difference at this scale")
        + f" (a clear difference: more than twice the larger seed-to-seed sd, {margin:.3f})"
        + f". They have {b.circuits} held-out-valid circuits against {a.circuits}. "
        + (f"On the tasks both groups have circuits for ({', '.join(both)}), the width-{a.width} circuits have "
           f"{s.edge_ratio:.2f}x the edges of the width-{b.width} ones (geometric means over seeds, then tasks; no "
           "interval with this few circuits). " if both else "")
        + f"Width {a.width}: {ratio_line(a.ratio)}; width {b.width}: {ratio_line(b.ratio)}. **The budget is not "
        f"matched where it matters:** the embedding and unembedding hold {a.embedding_nonzero / a.nonzero_weights:.0%} "
        f"of the nonzero weights at width {a.width} and {b.embedding_nonzero / b.nonzero_weights:.0%} at width "
        f"{b.width}, so the blocks get {a.nonzero_weights - a.embedding_nonzero:,.0f} vs "
        f"{b.nonzero_weights - b.embedding_nonzero:,.0f} nonzero weights "
        f"({(b.nonzero_weights - b.embedding_nonzero) / (a.nonzero_weights - a.embedding_nonzero):.2f}x): at equal "
        "total nonzeros, width, block budget and embedding budget change together, and this comparison cannot "
        "separate them. The sparser models (kept fraction 0.05 at width 96, 0.02 at width 128) hold their "
        "embeddings at 0.1 instead, so that the blocks carry the budget.")


# --------------------------------------------------------------------------- section 6: controls


@dataclasses.dataclass(frozen=True)
class ControlPlan:
    """Which searches the controls run: ``(kind, model, task)`` with kind ``random_init`` (an untrained model),
    ``flipped`` (a solved task with its answers swapped) or ``unsolved`` (a task the model does not solve)."""

    control_model: str  # the sparse model with the most circuits (then the lowest loss)
    dense_model: str | None  # the dense model with the most circuits, for the flipped task
    jobs: tuple[tuple[str, str, str], ...]
    unsolved_by_all: tuple[str, ...]  # tasks no frontier model solves


def control_plan(names: Sequence[str], entries: Mapping[str, Mapping], solved: Mapping[str, Sequence[str]],
                 reported: Mapping[str, Mapping[str, Circuit]], val_loss: Mapping[str, float],
                 tasks: Sequence[str], n_tasks: int) -> ControlPlan:
    """Random init and the flipped task on the control model's first ``n_tasks`` solved tasks (the flipped task
    also on the dense model with the most circuits); the unsolved-task control on up to ``n_tasks`` tasks no
    frontier model solves, else on tasks the control model does not solve."""
    def most(group: list[str]) -> str | None:
        return max(group, key=lambda n: (len(reported.get(n, {})), -val_loss[n])) if group else None

    sparse = [n for n in names if entries[n]["train"]["target_fraction"] < 1]
    dense = [n for n in names if entries[n]["train"]["target_fraction"] >= 1]
    ctrl = most(sparse) or names[0]
    dense_m = most(dense)
    own = [t for t in tasks if t in reported.get(ctrl, {})][:n_tasks] or list(tasks[:n_tasks])
    nobody = tuple(t for t in tasks if not any(t in solved[n] for n in names))
    unsolved = list(nobody[:n_tasks]) or [t for t in tasks if t not in solved[ctrl]][:n_tasks]
    jobs = [("random_init", "random init", t) for t in own] + [("flipped", ctrl, t) for t in own]
    if dense_m:
        jobs += [("flipped", dense_m, t) for t in tasks if t in reported.get(dense_m, {})][:n_tasks]
    jobs += [("unsolved", ctrl, t) for t in unsolved]
    return ControlPlan(ctrl, dense_m, tuple(jobs), nobody)


@dataclasses.dataclass(frozen=True)
class Controls:
    """The controls, each with its pass criterion and result (``metrics.json`` records ``dataclasses.asdict``)."""

    control_model: str  # the sparse model most controls run on
    searches: dict[str, dict[str, Any]]  # "kind model/task" -> full and pruned losses, train k, valid, passed
    random_sets: dict[str, dict[str, Any]]  # "model/task" -> the circuit vs composition-matched random node sets
    passed: dict[str, list[int]]  # control -> [passed, run]
    unsolved_by_all: tuple[str, ...]  # tasks no frontier model solves


def collect_controls(plan: ControlPlan, found: Sequence[Circuit], reported: Mapping[str, Mapping[str, Circuit]],
                     models: Mapping[str, SparseTransformer], task_report: Mapping[str, TaskData],
                     means: Mapping[str, dict[str, torch.Tensor]], seed: int, draws: int = 8) -> Controls:
    """Judge each control search (``found[i]`` answers ``plan.jobs[i]``; it passes when it gives *no*
    held-out-valid circuit) and compare every reported circuit with ``draws`` random node sets of its
    composition drawn from the nodes connected to the answers (:func:`pruning.composition_matched_losses`;
    it passes when the circuit's report loss is below every draw's), beside the constant predictor (every node
    at its mean)."""
    searches: dict[str, dict[str, Any]] = {}
    passed: dict[str, list[int]] = {}
    for (kind, n, t), c in zip(plan.jobs, found):
        real = reported.get(n, {}).get(t)
        searches[f"{kind} {n}/{t}"] = {"kind": kind, "model": n, "task": t, "full_report": c.full_loss,
                                      "pruned_fit": c.train_loss, "pruned_report": c.test_loss,
                                      "fit_nodes": c.train_nodes, "valid": c.valid, "passed": not c.valid,
                                      "real_nodes": real.n_nodes if real is not None else None}
        p = passed.setdefault(kind, [0, 0])
        p[0] += not c.valid
        p[1] += 1
    random_sets = {}
    rp = passed.setdefault("random_sets", [0, 0])
    for n, per in reported.items():
        for t, c in per.items():
            allowed = edges.answer_connected(models[n], task_report[t].answer_ids)
            rnd = pruning.composition_matched_losses(models[n], task_report[t], c.kept, means[n], allowed, draws, seed)
            const = pruning.task_loss(models[n], task_report[t], {h: torch.zeros_like(m, dtype=torch.float)
                                                                  for h, m in c.kept.items()}, means[n])
            ok = c.test_loss < min(rnd)
            random_sets[f"{n}/{t}"] = {"nodes": c.n_nodes, "circuit_report": c.test_loss, "random_mean":
                                       sum(rnd) / len(rnd), "random_min": min(rnd), "constant": const, "passed": ok}
            rp[0] += ok
            rp[1] += 1
    return Controls(plan.control_model, searches, random_sets, passed, plan.unsolved_by_all)


CONTROL_WORDS = {
    "random_init": "random init (an untrained model of the same shape; pass: no held-out-valid circuit)",
    "flipped": "flipped task (every answer swapped, a consistent rule no model was taught; pass: no circuit)",
    "unsolved": "unsolved task (a task the full model does not solve; pass: pruning does not create a circuit)",
    "random_sets": "composition-matched random node sets (same count per site, connected to the answers; pass: "
                   "the circuit's report loss below all 8 draws)",
}


def controls_text(ctl: Controls) -> str:
    """One line per control search, then one per circuit against its random node sets."""
    rows = [f"{k}: full {v['full_report']:.3f}, pruned fit {v['pruned_fit']:.3f} (k={v['fit_nodes']}) / report "
            f"{v['pruned_report']:.3f} -> {'PASS' if v['passed'] else 'FAIL: a held-out-valid circuit'}"
            + (f" (the real circuit for the task: {v['real_nodes']} nodes)" if v.get("real_nodes") else "")
            for k, v in ctl.searches.items()]
    rows += [f"{k}: circuit {v['circuit_report']:.3f} ({v['nodes']} nodes) vs random sets mean {v['random_mean']:.3f}, "
             f"best {v['random_min']:.3f}; constant predictor {v['constant']:.3f} -> {'PASS' if v['passed'] else 'FAIL'}"
             for k, v in ctl.random_sets.items()]
    return "\n".join(rows)


def controls_markdown(ctl: Controls) -> str:
    """Markdown: each control's criterion and how many of its runs passed; what a failure would mean."""
    items = [f"- **{CONTROL_WORDS[k]}**: {p[0]} of {p[1]} passed" for k, p in ctl.passed.items() if p[1]]
    failed = [k for k, p in ctl.passed.items() if p[1] and p[0] < p[1]]
    rs = list(ctl.random_sets.values())
    gap = [v["random_mean"] - v["circuit_report"] for v in rs]
    return ("\n".join(items) + "\n\n"
            + (f"On the report prompts the random node sets' mean loss is {sum(gap) / len(gap):.3f} above the "
               f"circuits' (range {min(gap):.3f} to {max(gap):.3f}); the constant predictor (every node at its mean) "
               f"averages {sum(v['constant'] for v in rs) / len(rs):.3f}. " if rs else "")
            + (f"Tasks no frontier model solves: {', '.join(ctl.unsolved_by_all)}. " if ctl.unsolved_by_all else
               "Every task is solved by some model, so the unsolved-task control uses tasks the control model does "
               "not solve. ")
            + ("**Failed:** " + ", ".join(failed) + ". Where a control fails, mean-ablation pruning manufactured a "
               "behaviour the model does not have: with enough nodes kept and the rest frozen at their means, the "
               "remaining nodes can be recombined into a different rule. " + manufactured_text(ctl)
               if failed else
               "Every control passed: on these models and tasks, pruning did not manufacture circuits."))


def failed_control_tasks(ctl: Controls) -> tuple[str, ...]:
    """The tasks on which a search control (random init, flipped, unsolved) produced a held-out-valid circuit:
    circuits of those tasks may be partly manufactured by the pruning."""
    return tuple(dict.fromkeys(v["task"] for v in ctl.searches.values() if not v["passed"]))


def robustness_markdown(failed: Sequence[str], s: FrontierSummary | None) -> str:
    """Markdown: the frontier's table again without the tasks where a control failed (``s``: its summary)."""
    if not failed:
        return "No search control produced a circuit, so the frontier above stands as it is."
    if s is None or not any(g["n_pairs"] for g in s.groups.values()):
        return (f"Without the tasks where a control produced a circuit ({', '.join(failed)}) no sparse circuit is "
                "left to compare.")
    rows = ["| sparse group | pairs | node ratio | edge ratio | edges / null |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| {g} | {x['n_pairs']} | {interval_text(x['node'])} | {interval_text(x['edge'])} | "
             f"{interval_text(x['excess'])} |" for g, x in s.groups.items() if x["n_pairs"]]
    return (f"**The frontier without the tasks where a control produced a circuit** ({', '.join(failed)}): their "
            "circuits may be partly manufactured, so the comparison is repeated without them. This is the version "
            "the run's headline (`metrics.json`, the report) uses.\n\n" + "\n".join(rows) + "\n\n" + finding_text(s))


def manufactured_text(ctl: Controls) -> str:
    """How large the manufactured circuits are against the real circuits of the same model and task."""
    pairs = [(v["fit_nodes"], v["real_nodes"]) for v in ctl.searches.values()
             if not v["passed"] and v["fit_nodes"] and v.get("real_nodes")]
    big = [v["fit_nodes"] for v in ctl.searches.values() if not v["passed"] and v["fit_nodes"]]
    if not big:
        return ""
    out = f"The manufactured node sets keep {min(big)}-{max(big)} nodes"
    if pairs:
        r = [a / b for a, b in pairs]
        out += (f"; where the model has a real circuit for the same task, {min(r):.1f}-{max(r):.1f}x its nodes "
                f"({len(pairs)} case(s))")
    return out + (". A circuit size says something about a mechanism only where it is far below what pruning "
                  "can manufacture; a large circuit may be partly manufactured.")


# --------------------------------------------------------------------------- section 7: the wiring diagram


@dataclasses.dataclass(frozen=True)
class DiagramChoice:
    """The circuit the wiring diagram draws: the smallest held-out-valid shrunk core of a sparse model."""

    model: str  # the sparse model
    task: str  # the task
    group: str  # the model's group in the reference set
    edge_threshold: float  # |w| threshold of the core (0.0: any nonzero weight)
    circuit: Circuit  # the circuit drawn: the core, the shrunk circuit, or the bisection's circuit itself
    shrunk_nodes: int | None  # nodes left by backward elimination, None when that gave no valid circuit
    bisection: Circuit  # the bisection's circuit it was cut from

    @property
    def is_bisection(self) -> bool:
        """True when no smaller node set was valid, so the bisection's circuit itself is drawn."""
        return self.circuit is self.bisection


def smallest_core(pool: Sequence[tuple[str, str]], models: Mapping[str, SparseTransformer],
                  reported: Mapping[str, Mapping[str, Circuit]], entries: Mapping[str, Mapping],
                  task_train: Mapping[str, TaskData], task_test: Mapping[str, TaskData],
                  means: Mapping[str, dict[str, torch.Tensor]], goal: float, thresholds: Sequence[float],
                  edge_fn: EdgeFn, accept_fn: AcceptFn, diagram_task: str) -> DiagramChoice | None:
    """Shrink each ``(model, task)`` circuit of ``pool`` and pick the one to draw.

    Each circuit is shrunk by backward elimination on the fit prompts down to ``goal``
    (:func:`pruning.greedy_shrink`; kept when held-out-valid, else the bisection's circuit stays), then cut to
    its core at each threshold (:func:`plots.connected_core`, :func:`pruning.restrict_circuit`): the largest
    threshold whose core still reaches ``goal`` on the *fit* prompts (``task_train``) and is no larger wins, so
    the report prompts (``task_test``) only judge the result. The smallest result over the pool is returned,
    ``diagram_task`` first among equals, then model and task names; None for an empty pool.
    """
    cores = {}
    for n, t in pool:
        c = reported[n][t]
        shrunk = pruning.greedy_shrink(models[n], c, task_train[t], task_test[t], means[n], goal, edge_fn, accept_fn)
        start = shrunk if shrunk.valid else c
        best = (0.0, start, shrunk.n_nodes if shrunk.valid else None)
        for th in thresholds:
            core = plots.connected_core(models[n], start, task_train[t], th)
            cc = pruning.restrict_circuit(models[n], c, core, task_train[t], task_test[t], means[n], edge_fn, accept_fn)
            if cc.train_loss <= goal and len(core) <= len(best[1].kept_nodes):
                best = (th, cc, best[2])
        cores[(n, t)] = best
    cands = sorted((len(c.kept_nodes), t != diagram_task, n, t) for (n, t), (_, c, _) in cores.items())
    if not cands:
        return None
    _, _, name, task = cands[0]
    threshold, circuit, shrunk_nodes = cores[(name, task)]
    return DiagramChoice(name, task, entries[name]["group"], threshold, circuit, shrunk_nodes, reported[name][task])


def diagram_notes(model: SparseTransformer, circuit: Circuit, evidence: Mapping[tuple[str, int], Mapping[str, float]]
                  ) -> dict[tuple[str, int], str]:
    """The second label line of each node in the wiring diagram, from :func:`pruning.node_evidence`:
    ``vote +1.2 | ablate +0.31`` (activation difference between the two answers at the answer position, loss
    increase when it is ablated too), plus ``query mean-ablated`` on an attention channel whose head keeps no
    query channel (its attention pattern is then computed from the mean query)."""
    dh = model.cfg.d_head
    kept_q = {(h.replace("hook_q", ""), c // dh) for h, c in circuit.kept_nodes if h.endswith("attn.hook_q")}
    out = {}
    for (h, c), e in evidence.items():
        note = f"vote {e['act_diff']:+.2f} | ablate {e['ablation']:+.2f}"
        if h.endswith(("attn.hook_k", "attn.hook_v")) and (h[:-6], c // dh) not in kept_q:
            note += " | query mean-ablated"
        out[(h, c)] = note
    return out


def diagram_markdown(d: DiagramChoice | None, target_loss: float, max_nodes: int = 40) -> str:
    """Markdown: which circuit is drawn, its bisection size, what backward elimination and the core left."""
    if d is None:
        return "No sparse model has a held-out-valid circuit in this run, so there is no diagram."
    full_c, diag, th = d.bisection, d.circuit, d.edge_threshold
    return (
        f"Drawn: **{d.task}** in **{d.model}** ({d.group}). The bisection's circuit has "
        f"{full_c.n_nodes} nodes and {full_c.edges} edges (held-out loss {full_c.test_loss:.3f})"
        + (f"; backward elimination on the fit prompts leaves {d.shrunk_nodes} nodes" if d.shrunk_nodes else
           "; backward elimination gave no held-out-valid circuit")
        + (f"; its core through weights of |w| >= {th:g} (the largest threshold whose core still reaches the goal "
           f"on the fit prompts) has **{len(diag.kept_nodes)} nodes**, and on the report prompts it reaches "
           f"{diag.test_loss:.3f} on its own (target {target_loss}, full model {diag.full_loss:.3f}: "
           + ("a held-out-valid circuit" if diag.valid else "**not** held-out-valid on its own") + f"). That core "
           f"is drawn, with lines for the weights of |w| >= {th:g}."
           if not d.is_bisection else ". No smaller node set reaches the goal on the fit prompts, so the whole circuit "
           "is drawn.")
        + ("" if len(diag.kept_nodes) <= max_nodes else f" It has more than {max_nodes} nodes, so the diagram shows the "
           f"{max_nodes} highest-ranked of them that connect to the answers; the explorer below lists all.")
        + " Each node's second line is its evidence on the fit prompts: `vote` is its mean activation at the answer "
        "position when the first answer is correct minus when the second is, `ablate` the rise in the circuit's "
        "task loss when that node is mean-ablated as well. Attention channels of a head whose query channels were all "
        "pruned say `query mean-ablated`: every position of that head attends with the same (mean) query, so its "
        "pattern still depends on the keys but not on what the attending position asks for. The drawn circuit is the "
        "smallest core among the run's smallest sparse circuits: an extreme, chosen to be readable, not a typical "
        "circuit (the table in section 4 gives every size).")


# --------------------------------------------------------------------------- section 9: metrics


@dataclasses.dataclass(frozen=True)
class LessonMetrics:
    """Notebook 02's ``metrics.json`` payload (``dataclasses.asdict``; the run adds profile, seed, timing)."""

    target_loss: float  # task loss a circuit must reach on the report prompts
    solved_loss: float  # full-model loss on the solve prompts at which a task counts as solved
    n_prompts_per_split: int  # prompts per task and split (solve, fit, report)
    prune_config: PruneConfig  # mask learning and bisection settings
    reference_set: dict[str, Any]  # source, folder, command, machine and task mix of the model set
    models: dict[str, dict[str, Any]]  # name -> group, width, steps, validation losses, nonzeros, training time
    frontier_models: list[str]  # the models the frontier compares (sparse + dense on the same data)
    full_task_loss: dict[str, dict[str, dict[str, float]]]  # split -> model -> task -> unpruned loss
    solved_tasks: dict[str, list[str]]  # model -> tasks it solves (on the solve prompts)
    circuits: dict[str, dict[str, dict[str, Any]]]  # model -> task -> the mask-seed-0 search's losses and sizes
    frontier: dict[str, Any]  # course_lib.circuits.frontier.analyse's result
    noise: NoiseSummary  # mask seeds and zero ablation on the noise models
    width_comparison: dict[str, WidthGroup]  # :func:`width_comparison`
    controls: Controls  # :func:`collect_controls`
    diagram: dict[str, Any]  # the drawn circuit: model, task, nodes, held-out loss and validity, threshold
    total_nodes: dict[str, int]  # model -> nodes the pruning can keep
    dense_pruned_after: dict[str, dict[str, PrunedOnce]]  # width -> kept fraction -> :class:`PrunedOnce`


def lesson_metrics(s: Settings, ref_dir: Path, manifest: Mapping[str, Any], entries: Mapping[str, Mapping],
                   models: Mapping[str, SparseTransformer], val_loss: Mapping[str, float],
                   full_task_loss: dict[str, dict[str, dict[str, float]]], solved: dict[str, list[str]],
                   names: Sequence[str], results: Mapping[str, Mapping[str, Circuit]], front: dict[str, Any],
                   noise: NoiseSummary, width_cmp: dict[str, WidthGroup], controls: Controls,
                   diagram: DiagramChoice | None, pruned_after: Mapping[int, Mapping[float, PrunedOnce]]) -> LessonMetrics:
    """Assemble the notebook's headline numbers (:class:`LessonMetrics`) from its results."""
    d = diagram
    return LessonMetrics(
        target_loss=s.target_loss, solved_loss=s.solved_loss, n_prompts_per_split=s.n_prompts, prune_config=s.prune_cfg,
        reference_set={"source": s.source, "folder": str(ref_dir), "command": manifest["command"],
                       "machine": manifest["machine"],
                       "task_mix": sorted({e.get("task_mix", 0.0) for e in entries.values()})},
        models={n: {"group": e["group"], "width": e["model"]["d_model"], "steps": e["steps"],
                    "val_loss": val_loss[n], "val_loss_recorded": e["val_loss"],
                    "val_loss_full_split": e.get("val_loss_full"),
                    "nonzero_fraction": e["nonzero_fraction"], "nonzero_weights": e["nonzero_weights"],
                    "train_cpu_s": e["cpu_time_s"], "train_wall_s": e["wall_time_s"]}
                for n, e in entries.items()},
        frontier_models=list(names), full_task_loss=full_task_loss, solved_tasks=solved,
        circuits={n: {t: {"valid": c.valid, "full_fit_loss": c.full_train_loss, "full_report_loss": c.full_loss,
                          "pruned_fit_loss": c.train_loss, "pruned_report_loss": c.test_loss,
                          "fit_nodes": c.train_nodes, "nodes": c.n_nodes, "edges": c.edges,
                          "possible_edges": c.possible_edges}
                      for t, c in per.items()} for n, per in results.items()},
        frontier=front, noise=noise, width_comparison=width_cmp, controls=controls,
        diagram={"model": d.model if d else None, "task": d.task if d else None,
                 "nodes": len(d.circuit.kept_nodes) if d else None, "valid": d.circuit.valid if d else None,
                 "report_loss": d.circuit.test_loss if d else None, "edge_threshold": d.edge_threshold if d else None,
                 "bisection_nodes": d.bisection.n_nodes if d else None,
                 "bisection_edges": d.bisection.edges if d else None},
        total_nodes={n: pruning.total_nodes(m) for n, m in models.items()},
        dense_pruned_after={str(w): {str(f): r for f, r in per.items()} for w, per in pruned_after.items()})
