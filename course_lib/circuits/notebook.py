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

from course_lib import runtime
from course_lib.circuits import plots, pruning
from course_lib.circuits import reference_training as rt
from course_lib.circuits.edges import EdgeFn
from course_lib.circuits.pruning import AcceptFn, Circuit, PruneConfig
from course_lib.circuits.tasks import SUITE, TaskData
from course_lib.circuits.training import eval_loss
from course_lib.circuits.transformer import SparseTransformer

TARGET_LOSS_MAX = 0.69  # ~ ln 2: chance level on a two-answer task
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
    set_name: str  # "smoke" (3 tiny models, trained here) or "reference" (the 27-model set)
    source: str  # where the set comes from: "shipped", "retrain" or the folder of an exported set
    n_prompts: int  # prompts per task and split (train: masks and bisection; test: reported)
    prune_cfg: PruneConfig  # mask learning, bisection and the solved threshold
    mean_windows: int  # corpus windows for the ablation means
    n_control_tasks: int  # tasks the per-model controls run on


def settings(run: runtime.Run, use_reference_solutions: object, target_loss: object, diagram_task: object,
             reference_set: object) -> Settings:
    """Validate notebook 02's own parameters and derive its sizes from ``run.profile``.

    Raises :class:`runtime.ParameterError` naming the parameter and its valid values: ``USE_REFERENCE_SOLUTIONS``
    a bool; ``TARGET_LOSS`` ``"auto"`` (0.6 smoke, 0.3 workshop, 0.15 full) or a number in ``[0, 0.69]``;
    ``DIAGRAM_TASK`` a task of :data:`SUITE`; ``REFERENCE_SET`` ``"auto"``, ``"retrain"`` or a folder holding a
    reference-set manifest. A task is "solved" by a model when its unpruned held-out loss already reaches the
    target a circuit must reach; the bisection aims 15% below the target on the train prompts, a margin for the
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
    prune_cfg = PruneConfig(steps=run.pick(smoke=20, workshop=150, full=600), target_loss=target,
                            grid_points=run.pick(smoke=8, workshop=20, full=32), solved_loss=target,
                            train_target_ratio=0.85)
    return Settings(
        use_reference_solutions=bool(use_reference_solutions), target_loss=target, diagram_task=diagram_task,
        reference_set=reference_set, set_name=run.pick(smoke="smoke", workshop="reference", full="reference"),
        source=source, n_prompts=run.pick(smoke=16, workshop=48, full=128), prune_cfg=prune_cfg,
        mean_windows=run.pick(smoke=8, workshop=32, full=256), n_control_tasks=run.pick(smoke=1, workshop=3, full=7))


def settings_text(s: Settings, profile: str, device: torch.device) -> str:
    """One line naming the profile, device, reference set, prompt count, target and mask-learning steps."""
    return (f"profile={profile} device={device} set={s.set_name} ({s.source}); {s.n_prompts} prompts per task and "
            f"split; target {s.target_loss}; mask learning {s.prune_cfg.steps} steps")


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
    logged at each logged step of each manifest entry; the largest absolute difference."""
    gaps = {}
    for name, e in entries.items():
        t, lg = e["train"], e["log"]
        yours = [fraction_fn(s, t["steps"], t["target_fraction"], t["anneal_start"], t["anneal_end"]) for s in lg["step"]]
        gaps[name] = max(abs(a - b) for a, b in zip(yours, lg["kept_fraction"]))
    return ScheduleCheck(max(gaps.values()), sum(len(e["log"]["step"]) for e in entries.values()), len(entries))


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
    overfit: tuple[tuple[str, str], ...]  # (model, task) whose node set reached the target on train prompts only


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


def search_summary(results: Mapping[str, Mapping[str, Circuit]]) -> SearchSummary:
    """Count the searches, the held-out-valid circuits and the node sets valid on the train prompts only."""
    overfit = tuple((n, t) for n, per in results.items() for t, c in per.items()
                    if c.train_nodes is not None and not c.valid)
    return SearchSummary(sum(map(len, results.values())),
                         sum(c.valid for per in results.values() for c in per.values()), overfit)


def search_markdown(s: SearchSummary) -> str:
    """Markdown: valid circuits out of searched pairs, the train-only node sets by name, the rest."""
    return (f"**{s.n_valid} held-out-valid circuit(s)** from {s.n_pairs} solved (model, task) pairs. "
            f"{len(s.overfit)} node sets reached the target on the train prompts only and are not reported"
            + (": " + ", ".join(f"{n}/{t}" for n, t in s.overfit) if s.overfit else "") + "; "
            + f"{s.n_pairs - s.n_valid - len(s.overfit)} never reached it.")


# --------------------------------------------------------------------------- section 5: the frontier


def ratio_text(s: Mapping[str, Any]) -> str:
    """A group's matched ratio (a :func:`course_lib.circuits.frontier.geo_mean_ci` summary) in words: geometric mean, CI, counts."""
    if not s["geo_mean"]:
        return "no matched pair"
    ci = f", 95% CI [{s['lo']:.2f}, {s['hi']:.2f}]" if s["lo"] else ""
    return f"**{s['geo_mean']:.2f}x**{ci} ({s['n_pairs']} pairs, {s['n_models']} models, {s['n_tasks']} tasks)"


def frontier_text(front: Mapping[str, Any]) -> str:
    """Per task: the dense curve (validation loss: edges), then each sparse circuit's loss, edges and ratio."""
    lines = []
    for t, e in front["per_task"].items():
        dense_txt = ", ".join(f"{loss:.2f}: {edges:.0f}" for loss, edges in e["dense"]) or "none"
        lines.append(f"{t:14s} dense curve (val loss: edges) {dense_txt}")
        for n, s in e["sparse"].items():
            r = "outside the dense range" if s["ratio"] is None else f"dense {s['matched_edges']:.0f} -> ratio {s['ratio']:.2f}x"
            lines.append(f"    {n:28s} val {s['val_loss']:.3f}, {s['edges']} edges; {r}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class FrontierSummary:
    """The matched comparison of :func:`course_lib.circuits.frontier.analyse_per_task`, with why some circuits got no ratio."""

    groups: dict[str, dict[str, Any]]  # sparse group -> its geo_mean_ci summary ("all sparse" left out)
    all_sparse: dict[str, Any]  # the summary over every sparse model
    seeds: tuple[int, ...]  # training seeds of the models with a matched ratio, sorted
    weaker: tuple[tuple[str, str], ...]  # above the dense range although dense models as weak exist (no circuit)
    beyond: tuple[tuple[str, str], ...]  # above the dense range: worse than every dense model
    below_range: int  # sparse circuits below the dense range
    no_curve: int  # sparse circuits of tasks with fewer than two dense configurations with a circuit


def frontier_summary(front: Mapping[str, Any], entries: Mapping[str, Mapping], val_loss: Mapping[str, float],
                     dense_names: Sequence[str]) -> FrontierSummary:
    """Sort the unmatched sparse circuits of ``front``: above the dense range, a circuit is *weaker* when dense
    models with a validation loss at least as high exist (none with a circuit for the task), else *beyond*
    the dense curve; the seeds are those of the models with a ratio."""
    seeds = sorted({entries[k.split("|")[0]]["train"]["seed"] for k, v in front["pairs"].items() if v})
    above = [(n, t) for t, e in front["per_task"].items() for n, s in e["sparse"].items()
             if s["unmatched"] == "above_range"]
    dense_losses = [val_loss[n] for n in dense_names]
    weaker = [(n, t) for n, t in above if any(v >= val_loss[n] for v in dense_losses)]
    beyond = [(n, t) for n, t in above if (n, t) not in weaker]
    um = front["unmatched"]
    return FrontierSummary({g: s for g, s in front["summary"].items() if g != "all sparse"},
                           front["summary"]["all sparse"], tuple(seeds), tuple(weaker), tuple(beyond),
                           um["below_range"], um["no_curve"])


def frontier_markdown(s: FrontierSummary) -> str:
    """Markdown: the matched ratio per group and overall against the paper's ~16x, what its interval says,
    how thin the comparison is, and the sparse circuits without a ratio."""
    allsum, seeds_in = s.all_sparse, list(s.seeds)
    above_txt = ""
    if s.weaker:
        above_txt += (f" **{len(s.weaker)} sparse circuit(s) have no dense counterpart at their loss:** dense models "
                      "with a validation loss at least as high exist, but none of them has a held-out-valid circuit for "
                      "the task, so no ratio can be read; the sparse model does a task that dense models of its "
                      "capability do not (" + ", ".join(f"{n}/{t}" for n, t in s.weaker) + ").")
    if s.beyond:
        above_txt += (f" {len(s.beyond)} sparse circuit(s) belong to models with a higher validation loss than every "
                      "dense model, beyond the dense curve (" + ", ".join(f"{n}/{t}" for n, t in s.beyond) + ").")
    return (
        "**Dense/sparse edge ratio at matched validation loss** (geometric mean over (model, task) pairs): "
        + "; ".join(f"{g}: {ratio_text(x)}" for g, x in s.groups.items())
        + f". All sparse models together: {ratio_text(allsum)}"
        + (f", from seeds {seeds_in}." if seeds_in else ".")
        + " The paper reports about 16x."
        + ((" Here the 95% interval lies " + ("below the paper's 16x" if allsum["hi"] < 16 else "reaches 16x") + " and "
            + ("above 1x: at equal loss the sparse circuits are smaller." if allsum["lo"] > 1 else
               "below 1x: at equal loss the sparse circuits are larger." if allsum["hi"] < 1 else
               "includes 1x: no difference in circuit size can be claimed."))
           if allsum["lo"] else "")
        + (f" Only {allsum['n_tasks']} task(s) and {len(seeds_in)} seed(s) enter the comparison (the plan was at "
           "least 6 tasks and 3 seeds), so the spread is thin." if allsum["n_tasks"] < 6 or len(seeds_in) < 3 else "")
        + above_txt
        + (f" {s.below_range} sparse circuit(s) lie below the dense range (a sparse model better than every dense "
           "one with a circuit)." if s.below_range else "")
        + (f" {s.no_curve} belong to tasks with fewer than two dense configurations with a circuit."
           if s.no_curve else ""))


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
            + f"{w.circuits} held-out-valid circuits; matched ratio {ratio_text(w.ratio) if w.ratio else 'n/a'}; "
            + f"{w.embedding_nonzero:,.0f} of the nonzero weights in the embedding and unembedding")


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
        + "Matched ratios: "
        f"width {a.width} {ratio_text(a.ratio) if a.ratio else 'n/a'}, width {b.width} "
        f"{ratio_text(b.ratio) if b.ratio else 'n/a'}. Where the budget goes: the embedding and unembedding "
        f"hold {a.embedding_nonzero / a.nonzero_weights:.0%} of the nonzero weights at width {a.width} and "
        f"{b.embedding_nonzero / b.nonzero_weights:.0%} at width {b.width} (a 2048-token vocabulary is large "
        "next to blocks this small; the paper's models are far larger, so its blocks dominate).")


# --------------------------------------------------------------------------- section 6: controls


@dataclasses.dataclass(frozen=True)
class Controls:
    """The faithfulness controls, as ``metrics.json`` records them (``dataclasses.asdict``)."""

    control_model: str  # the sparse model the per-model controls run on (most circuits, then lowest loss)
    tasks: list[str]  # the tasks they run on
    random_init: dict[str, dict[str, Any]]  # task -> the random-init model's search: losses, train k, valid
    nonsense_task: dict[str, dict[str, Any]]  # task -> the search with answers shuffled across prompts
    zero_ablation: dict[str, dict[str, Any]]  # task -> circuit size under mean vs zero ablation
    random_circuit: dict[str, dict[str, Any]]  # "model/task" -> the circuit vs 8 random node sets of its size


def control_jobs(tasks: Sequence[str], reported_control: Mapping[str, Circuit]) -> list[tuple[str, str]]:
    """The control searches as ``(kind, task)``: random init and nonsense labels on every task, zero ablation
    on the tasks the control model has a held-out-valid circuit for."""
    return ([("random_init", t) for t in tasks] + [("nonsense_task", t) for t in tasks]
            + [("zero_ablation", t) for t in tasks if t in reported_control])


def collect_controls(control_model: str, tasks: Sequence[str], jobs: Sequence[tuple[str, str]],
                     found: Sequence[Circuit], reported: Mapping[str, Mapping[str, Circuit]],
                     models: Mapping[str, SparseTransformer], task_test: Mapping[str, TaskData],
                     means: Mapping[str, dict[str, torch.Tensor]], seed: int) -> Controls:
    """Record the control searches (``found[i]`` answers ``jobs[i]``) and compare every reported circuit with
    8 random node sets of its size on the held-out prompts (:func:`pruning.random_circuit_losses`)."""
    searches: dict[str, dict[str, dict[str, Any]]] = {"random_init": {}, "nonsense_task": {}, "zero_ablation": {}}
    for (kind, t), c in zip(jobs, found):
        if kind == "zero_ablation":
            m_c = reported[control_model][t]
            searches[kind][t] = {"mean_nodes": m_c.n_nodes, "mean_edges": m_c.edges, "zero_nodes": c.n_nodes,
                                 "zero_edges": c.edges, "zero_test": c.test_loss, "zero_valid": c.valid}
        else:
            searches[kind][t] = {"full_test": c.full_loss, "pruned_train": c.train_loss,
                                 "pruned_test": c.test_loss, "train_nodes": c.train_nodes, "valid": c.valid}
    random_circuit = {}
    for n, per in reported.items():
        for t, c in per.items():
            rnd = pruning.random_circuit_losses(models[n], task_test[t], c.n_nodes, means[n], draws=8, seed=seed)  # type: ignore[arg-type]
            random_circuit[f"{n}/{t}"] = {"nodes": c.n_nodes, "circuit_test": c.test_loss,
                                          "random_test_mean": sum(rnd) / len(rnd), "random_test_min": min(rnd)}
    return Controls(control_model, list(tasks), searches["random_init"], searches["nonsense_task"],
                    searches["zero_ablation"], random_circuit)


def controls_text(ctl: Controls) -> str:
    """One line per control search: random init, then nonsense labels, then zero vs mean ablation."""
    rows = []
    for t, v in ctl.random_init.items():
        rows.append(f"random init, {t}: full {v['full_test']:.3f}, pruned train {v['pruned_train']:.3f} / held-out "
                    f"{v['pruned_test']:.3f} -> {'VALID circuit' if v['valid'] else 'no held-out-valid circuit'}")
    for t, v in ctl.nonsense_task.items():
        rows.append(f"nonsense {t}: full {v['full_test']:.3f}, pruned train {v['pruned_train']:.3f} "
                    f"(k={v['train_nodes']}) / held-out {v['pruned_test']:.3f} -> "
                    f"{'VALID circuit' if v['valid'] else 'no held-out-valid circuit'}")
    for t, v in ctl.zero_ablation.items():
        rows.append(f"{t}: mean ablation {v['mean_nodes']} nodes / {v['mean_edges']} edges; zero ablation "
                    + (f"{v['zero_nodes']} nodes / {v['zero_edges']} edges" if v["zero_valid"]
                       else f"no held-out-valid circuit (held-out {v['zero_test']:.3f})"))
    return "\n".join(rows)


def controls_markdown(ctl: Controls) -> str:
    """Markdown: valid circuits of the random-init model and of the nonsense task, the found circuits against
    size-matched random node sets, and circuit sizes under mean vs zero ablation."""
    n_rand = sum(v["valid"] for v in ctl.random_init.values())
    n_non = sum(v["valid"] for v in ctl.nonsense_task.values())
    rc = ctl.random_circuit.values()
    beats = sum(v["circuit_test"] < v["random_test_min"] for v in rc)
    gap = [v["random_test_mean"] - v["circuit_test"] for v in rc]
    za = ctl.zero_ablation
    n_tasks = len(ctl.tasks)
    return (
        f"**Controls** (control model {ctl.control_model}, tasks {', '.join(ctl.tasks)}). Random init: **{n_rand} of "
        f"{n_tasks}** tasks give a held-out-valid circuit. Nonsense task: **{n_non} of {n_tasks}**. "
        + (f"Size-matched random node sets: the found circuit beats the best of 8 random sets of its size on held-out "
           f"prompts in **{beats} of {len(gap)}** circuits; the random sets' mean held-out loss is higher by "
           f"{sum(gap) / len(gap):.3f} on average (range {min(gap):.3f} to {max(gap):.3f}). " if gap else
           "No reported circuit, so no size-matched comparison. ")
        + ("Zero vs mean ablation: " + "; ".join(
            f"{t} {v['mean_nodes']} -> " + (f"{v['zero_nodes']} nodes ({v['mean_edges']} -> {v['zero_edges']} edges)"
                                            if v["zero_valid"] else "no valid circuit")
            for t, v in za.items()) + " (mean -> zero)." if za else ""))


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

    Each circuit is shrunk by backward elimination on the train prompts down to ``goal``
    (:func:`pruning.greedy_shrink`; kept when held-out-valid, else the bisection's circuit stays), then cut to
    its core at each threshold (:func:`plots.connected_core`, :func:`pruning.restrict_circuit`): the largest
    threshold whose core is held-out-valid and no larger wins. The smallest result over the pool is returned,
    ``diagram_task`` first among equals, then model and task names; None for an empty pool.
    """
    cores = {}
    for n, t in pool:
        c = reported[n][t]
        shrunk = pruning.greedy_shrink(models[n], c, task_train[t], task_test[t], means[n], goal, edge_fn, accept_fn)
        start = shrunk if shrunk.valid else c
        best = (0.0, start, shrunk.n_nodes if shrunk.valid else None)
        for th in thresholds:
            core = plots.connected_core(models[n], start, task_test[t], th)
            cc = pruning.restrict_circuit(models[n], c, core, task_train[t], task_test[t], means[n], edge_fn, accept_fn)
            if cc.valid and cc.n_nodes <= best[1].n_nodes:  # type: ignore[operator]
                best = (th, cc, best[2])
        cores[(n, t)] = best
    cands = sorted((c.n_nodes, t != diagram_task, n, t) for (n, t), (_, c, _) in cores.items())
    if not cands:
        return None
    _, _, name, task = cands[0]
    threshold, circuit, shrunk_nodes = cores[(name, task)]
    return DiagramChoice(name, task, entries[name]["group"], threshold, circuit, shrunk_nodes, reported[name][task])


def diagram_markdown(d: DiagramChoice | None, target_loss: float, max_nodes: int = 40) -> str:
    """Markdown: which circuit is drawn, its bisection size, what backward elimination and the core left."""
    if d is None:
        return "No sparse model has a held-out-valid circuit in this run, so there is no diagram."
    full_c, diag, th = d.bisection, d.circuit, d.edge_threshold
    return (
        f"Drawn: **{d.task}** in **{d.model}** ({d.group}). The bisection's circuit has "
        f"{full_c.n_nodes} nodes and {full_c.edges} edges (held-out loss {full_c.test_loss:.3f})"
        + (f"; backward elimination on the train prompts leaves {d.shrunk_nodes} nodes" if d.shrunk_nodes else
           "; backward elimination gave no held-out-valid circuit")
        + (f"; its core through weights of |w| >= {th:g} has **{diag.n_nodes} nodes and {diag.edges} "
           f"edges** and reaches held-out loss {diag.test_loss:.3f} on its own (target {target_loss}, full model "
           f"{diag.full_loss:.3f}). That core is drawn, with lines for the weights of |w| >= {th:g}."
           if not d.is_bisection else ". No smaller node set is a valid circuit on its own, so the whole circuit is drawn.")
        + ("" if diag.n_nodes <= max_nodes else f" It has more than {max_nodes} nodes, so the diagram shows the "  # type: ignore[operator]
           f"{max_nodes} highest-ranked of them that connect to the answers; the explorer below lists all."))


# --------------------------------------------------------------------------- section 9: metrics


@dataclasses.dataclass(frozen=True)
class LessonMetrics:
    """Notebook 02's ``metrics.json`` payload (``dataclasses.asdict``; the run adds profile, seed, timing)."""

    target_loss: float  # task loss a circuit must reach on held-out prompts
    n_prompts_per_split: int  # prompts per task and split
    prune_config: PruneConfig  # mask learning and bisection settings
    reference_set: dict[str, Any]  # source, folder, command, machine and task mix of the model set
    models: dict[str, dict[str, Any]]  # name -> group, width, steps, validation loss, nonzeros, training time
    full_task_loss: dict[str, dict[str, float]]  # model (and "random init") -> task -> unpruned held-out loss
    solved_tasks: dict[str, list[str]]  # model -> tasks it solves
    circuits: dict[str, dict[str, dict[str, Any]]]  # model -> task -> the search's losses, sizes and validity
    frontier: dict[str, Any]  # course_lib.circuits.frontier.analyse_per_task's result
    matched_ratio: dict[str, Any]  # its summary: group -> geometric mean, CI and counts
    width_comparison: dict[str, WidthGroup]  # :func:`width_comparison`
    controls: Controls  # :func:`collect_controls`
    diagram: dict[str, Any]  # the drawn circuit: model, task, nodes, edges, held-out loss, threshold, bisection size
    total_nodes: dict[str, int]  # model -> nodes the pruning can keep
    dense_pruned_after: dict[str, dict[str, PrunedOnce]]  # width -> kept fraction -> :class:`PrunedOnce`


def lesson_metrics(s: Settings, ref_dir: Path, manifest: Mapping[str, Any], entries: Mapping[str, Mapping],
                   models: Mapping[str, SparseTransformer], val_loss: Mapping[str, float],
                   full_task_loss: dict[str, dict[str, float]], solved: dict[str, list[str]],
                   results: Mapping[str, Mapping[str, Circuit]], front: dict[str, Any],
                   width_cmp: dict[str, WidthGroup], controls: Controls, diagram: DiagramChoice | None,
                   pruned_after: Mapping[int, Mapping[float, PrunedOnce]]) -> LessonMetrics:
    """Assemble the notebook's headline numbers (:class:`LessonMetrics`) from its results."""
    d = diagram
    return LessonMetrics(
        target_loss=s.target_loss, n_prompts_per_split=s.n_prompts, prune_config=s.prune_cfg,
        reference_set={"source": s.source, "folder": str(ref_dir), "command": manifest["command"],
                       "machine": manifest["machine"],
                       "task_mix": sorted({e.get("task_mix", 0.0) for e in entries.values()})},
        models={n: {"group": e["group"], "width": e["model"]["d_model"], "steps": e["steps"],
                    "val_loss": val_loss[n], "val_loss_recorded": e["val_loss"],
                    "nonzero_fraction": e["nonzero_fraction"], "nonzero_weights": e["nonzero_weights"],
                    "train_cpu_s": e["cpu_time_s"], "train_wall_s": e["wall_time_s"]}
                for n, e in entries.items()},
        full_task_loss=full_task_loss, solved_tasks=solved,
        circuits={n: {t: {"valid": c.valid, "full_train_loss": c.full_train_loss, "full_test_loss": c.full_loss,
                          "pruned_train_loss": c.train_loss, "pruned_test_loss": c.test_loss,
                          "train_nodes": c.train_nodes, "nodes": c.n_nodes, "edges": c.edges}
                      for t, c in per.items()} for n, per in results.items()},
        frontier=front, matched_ratio=front["summary"], width_comparison=width_cmp, controls=controls,
        diagram={"model": d.model if d else None, "task": d.task if d else None,
                 "nodes": d.circuit.n_nodes if d else None, "edges": d.circuit.edges if d else None,
                 "held_out_loss": d.circuit.test_loss if d else None, "edge_threshold": d.edge_threshold if d else None,
                 "bisection_nodes": d.bisection.n_nodes if d else None,
                 "bisection_edges": d.bisection.edges if d else None},
        total_nodes={n: pruning.total_nodes(m) for n, m in models.items()},
        dense_pruned_after={str(w): {str(f): r for f, r in per.items()} for w, per in pruned_after.items()})
