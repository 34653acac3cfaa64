"""The capability-interpretability frontier at matched pretraining loss (Gao et al., 2025, the headline).

Input: models, each with its validation (pretraining) loss ``L`` and, per task, the edge count ``E`` of
its held-out-valid circuit (``None`` when it has none). The paper averages over the tasks every model has a
circuit for (:func:`common_tasks`); at this course's scale there are none, so :func:`analyse_per_task` matches
task by task.

The **dense curve** of a task: the dense models' points ``(L, log E)``; seeds of one configuration
(same ``config``) are first averaged (mean ``L``, mean ``log E``), then the curve is the piecewise-linear
interpolation of ``log E`` in ``L`` through the configurations sorted by ``L``. It is not extrapolated:
a loss outside the dense range gives ``None``.

The **matched ratio** of a sparse model ``s`` on task ``t``::

    r(s, t) = exp(logE_dense,t(L_s)) / E_s,t          (> 1: the sparse circuit is smaller)

and a group's (e.g. all seeds at kept fraction 0.1) summary is the geometric mean over its (model, task)
pairs, ``exp(mean log r)``, with a bootstrap CI that resamples models (seeds) and tasks independently
(a crossed bootstrap: both are sources of spread).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence

from course_lib.runtime import Headline


@dataclasses.dataclass(frozen=True)
class FrontierModel:
    name: str  # unique, e.g. "sparse0.1-d64-16k-s1"
    group: str  # curve it belongs to: "dense", "sparse 0.1", "wide sparse 0.025", ...
    config: str  # configuration without the seed (seeds of one config are averaged on the dense curve)
    val_loss: float  # pretraining (validation) loss, nats/token
    edges: Mapping[str, int | None]  # task -> edges of the held-out-valid circuit, None: no circuit
    fraction: float = 1.0  # kept fraction of weights (1.0: dense)

    @property
    def dense(self) -> bool:
        return self.fraction >= 1.0


def model_from_entry(entry: Mapping, edges: Mapping[str, int | None]) -> FrontierModel:
    """A :class:`FrontierModel` from a reference-set manifest entry (``reference_training.export_set``)
    and the edges of its circuits; the config is the run name without its ``-s<seed>`` part."""
    seed = entry["train"]["seed"]
    config = entry["name"].replace(f"-s{seed}", "", 1)
    return FrontierModel(entry["name"], entry["group"], config, float(entry["val_loss"]), dict(edges),
                         float(entry["train"]["target_fraction"]))


def common_tasks(models: Sequence[FrontierModel]) -> list[str]:
    """Tasks (in the first model's order) where every model has a circuit (edges > 0)."""
    if not models:
        return []
    return [t for t in models[0].edges if all((m.edges.get(t) or 0) > 0 for m in models)]


def dense_curve(models: Sequence[FrontierModel], task: str) -> list[tuple[float, float]]:
    """``[(L, log E)]`` of the dense configurations on ``task``, sorted by ``L`` (seeds averaged)."""
    by_cfg: dict[str, list[tuple[float, float]]] = {}
    for m in models:
        if m.dense and (m.edges.get(task) or 0) > 0:
            by_cfg.setdefault(m.config, []).append((m.val_loss, math.log(m.edges[task])))
    pts = [(sum(p[0] for p in v) / len(v), sum(p[1] for p in v) / len(v)) for v in by_cfg.values()]
    return sorted(pts)


def interpolate(curve: Sequence[tuple[float, float]], loss: float) -> float | None:
    """``log E`` of the curve at ``loss`` (linear between neighbours); ``None`` outside its range."""
    if len(curve) < 2 or not curve[0][0] <= loss <= curve[-1][0]:
        return None
    for (l0, y0), (l1, y1) in zip(curve, curve[1:]):
        if l0 <= loss <= l1:
            u = 0.0 if l1 == l0 else (loss - l0) / (l1 - l0)
            return (1 - u) * y0 + u * y1
    return None


def geo_mean_ci(logs: Mapping[tuple[str, str], float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
                ) -> dict[str, float | int | None]:
    """Geometric mean of ``exp(logs)`` over (model, task) pairs with a crossed bootstrap CI.

    Each bootstrap draw resamples the models and the tasks with replacement and averages the log-ratios of
    the drawn pairs (pairs missing from ``logs`` are skipped). Returns ``{"geo_mean", "lo", "hi", "n_models",
    "n_tasks", "n_pairs"}`` (CI bounds ``None`` with fewer than 2 pairs).
    """
    models = sorted({m for m, _ in logs})
    tasks = sorted({t for _, t in logs})
    if not logs:
        return {"geo_mean": None, "lo": None, "hi": None, "n_models": 0, "n_tasks": 0, "n_pairs": 0}
    gm = math.exp(sum(logs.values()) / len(logs))
    lo = hi = None
    if len(logs) >= 2:
        rng = random.Random(seed)
        draws = []
        for _ in range(n_boot):
            ms = [rng.choice(models) for _ in models]
            ts = [rng.choice(tasks) for _ in tasks]
            vals = [logs[(m, t)] for m in ms for t in ts if (m, t) in logs]
            if vals:
                draws.append(sum(vals) / len(vals))
        draws.sort()
        a = (1 - level) / 2
        lo = math.exp(draws[int(a * (len(draws) - 1))])
        hi = math.exp(draws[int(round((1 - a) * (len(draws) - 1)))])
    return {"geo_mean": gm, "lo": lo, "hi": hi, "n_models": len(models), "n_tasks": len(tasks), "n_pairs": len(logs)}


def analyse_per_task(models: Sequence[FrontierModel], tasks: Sequence[str] | None = None, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """The matched comparison task by task (the paper's average over :func:`common_tasks` is empty when no task
    has a circuit in every model).

    For each task ``t``: the dense curve through the dense configurations that have a circuit for ``t``
    (:func:`dense_curve`), and for each sparse model with a circuit for ``t`` the ratio ``r(s, t)`` read on it
    (``None`` when ``L_s`` lies outside the curve's range, or the curve has fewer than 2 configurations).
    Returns ``{"tasks", "common_tasks", "per_task": {t: {"dense": [[L, E], ...], "sparse": {name: {"val_loss",
    "edges", "matched_edges", "ratio"}}}}, "pairs": {"model|task": r | None}, "summary": {group: geo_mean_ci},
    "unmatched": {"above_range": n, "below_range": n, "no_curve": n}}``: why sparse circuits got no ratio (their loss
    is above or below every dense configuration with a circuit for the task, or the task has fewer than two such
    configurations; each sparse entry names its reason in ``"unmatched"``); the summary also has ``"all sparse"``.
    """
    tasks = list(models[0].edges) if tasks is None and models else list(tasks or [])
    per_task, logs_by_group = {}, {}
    unmatched = {"above_range": 0, "below_range": 0, "no_curve": 0}
    groups = {m.name: m.group for m in models}
    for t in tasks:
        curve = dense_curve(models, t)
        entry = {"dense": [[loss, math.exp(y)] for loss, y in curve], "sparse": {}}
        for m in models:
            e = m.edges.get(t) or 0
            if m.dense or e <= 0:
                continue
            y = interpolate(curve, m.val_loss)
            side = None
            if y is None:
                side = "no_curve" if len(curve) < 2 else ("above_range" if m.val_loss > curve[-1][0] else "below_range")
                unmatched[side] += 1
            r = math.exp(y) / e if y is not None else None
            entry["sparse"][m.name] = {"val_loss": m.val_loss, "edges": e, "unmatched": side,
                                       "matched_edges": math.exp(y) if y is not None else None, "ratio": r}
            if r is not None:
                logs_by_group.setdefault(m.group, {})[(m.name, t)] = math.log(r)
                logs_by_group.setdefault("all sparse", {})[(m.name, t)] = math.log(r)
        per_task[t] = entry
    pairs = {f"{n}|{t}": v["ratio"] for t, e in per_task.items() for n, v in e["sparse"].items()}
    order = list(dict.fromkeys(groups[m.name] for m in models if not m.dense)) + ["all sparse"]
    summary = {g: geo_mean_ci(logs_by_group.get(g, {}), n_boot, seed=seed) for g in order}
    return {"tasks": tasks, "common_tasks": common_tasks(models), "per_task": per_task, "pairs": pairs,
            "summary": summary, "unmatched": unmatched}


def headline(summary: Mapping[str, Mapping]) -> list[Headline]:
    """Notebook 02's headline claim for the report: the dense/sparse circuit-edge ratio at matched pretraining
    loss over every sparse model (``summary["all sparse"]`` of :func:`analyse_per_task`)."""
    s = summary.get("all sparse") or {}
    geo = s.get("geo_mean")
    interval = f"[{s['lo']:.3g}, {s['hi']:.3g}] (bootstrap)" if geo and s.get("lo") else None
    return [Headline(
        "circuit edges, dense / weight-sparse, at matched pretraining loss",
        "~16x (at ~1/1000 of the weights kept)",
        None if not geo else f"{geo:.3g}x ({s['n_pairs']} pairs, {s['n_tasks']} tasks)", interval,
        note="an edge count: a circuit on the same nodes of a model keeping a fraction f of its weights has about "
             "f times the dense edges, so weight density alone predicts about 1/f")]
