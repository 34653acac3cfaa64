"""Circuit size at matched pretraining loss, against the nulls that would produce it (Gao et al., 2025).

Input: models, each with its validation (pretraining) loss ``L`` and, per task, its held-out-valid circuit's
node count ``N``, edge count ``E`` (nonzero weights between kept nodes) and *possible* edges ``P`` (the
weights between the same kept nodes, zero or not), so its edge density is ``rho = E / P``; ``None`` where the
model has no valid circuit for the task.

**The dense frontier** of a task is a monotone lower envelope over dense *widths*. Each dense width (its
seeds) is one point: the mean validation loss of its seeds and, per task, the geometric mean of the circuit
sizes of the seeds that have a held-out-valid circuit. At loss ``L`` the frontier is the fewest nodes (and,
separately, the fewest edges) of any width at least as capable (``L_w <= L``)::

    N_dense,t(L) = min { N_w,t : L_w <= L },      E_dense,t(L) = min { E_w,t : L_w <= L }

It never rises with ``L`` and is never interpolated; a sparse model more capable than every dense width with a
circuit for the task gets no match. Averaging seeds within a width before the minimum keeps one lucky seed from
setting the frontier, and lets the bootstrap move it both ways (a minimum over single models can only rise when
models are resampled).

**Three ratios** per (sparse model ``s``, task ``t``), each > 1 when the sparse circuit is smaller::

    node ratio   = N_dense,t(L_s) / N_s,t
    edge ratio   = E_dense,t(L_s) / E_s,t
    density null = D_d,t / D_s,t       (D: the whole model's edge density, every node kept; d: the dense point)
    edges / null = edge ratio / density null

``D`` is ``count_edges / possible_edges`` of the whole model (:func:`course_lib.circuits.pruning.model_density`):
1 for a dense model, about ``f`` for one keeping a fraction ``f`` of its block weights. The density null is the
edge ratio that weight density alone produces: a circuit on the *same* nodes, wired at its model's density, has
``D`` times the dense edges. It is fixed by the models, not by the circuits, so edges / null can fall either way:
below 1 when the sparse circuit keeps more nodes or keeps its nodes more densely wired than its model.
The second part is reported on its own as the **concentration**, ``(E_s / P_s) / D_s`` (``P``: the weights
between the circuit's nodes, zero or not): how much denser a sparse circuit is wired than its model.

**Summaries** per kept fraction (never pooled across fractions, whose nulls differ): geometric means over
(model, task) pairs with a crossed bootstrap that resamples the group's sparse models, the dense seeds within
each width (the frontier is rebuilt in every draw) and the tasks. **Slope**: least squares of ``log ratio`` on
``log(1/f)`` over every pair; if density alone acted, the edge ratio's slope would be the null's own (about 1)
and the node ratio's and the excess's 0.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence

from course_lib.runtime import Headline

RATIOS = ("node", "edge", "excess")  # excess: edge ratio / density null
SLOPES = RATIOS + ("null",)  # the slopes also of the density null


@dataclasses.dataclass(frozen=True)
class FrontierModel:
    name: str  # unique, e.g. "sparse0.1-d64-16k-s1-mix5"
    group: str  # "dense, equal data", "sparse 0.1", ...
    val_loss: float  # pretraining (validation) loss, nats/token
    nodes: Mapping[str, int | None]  # task -> nodes of the held-out-valid circuit, None: no circuit
    edges: Mapping[str, int | None]  # task -> its edges
    possible: Mapping[str, int | None]  # task -> weights between its kept nodes, zero or not
    fraction: float = 1.0  # kept fraction of the block weights (1.0: dense)
    width: int = 0  # d_model
    density: Mapping[str, float] = dataclasses.field(default_factory=dict)  # task -> model edge density

    def model_density(self, task: str) -> float:
        """The whole model's edge density for ``task`` (:func:`course_lib.circuits.pruning.model_density`);
        without a measurement, 1 for a dense model and the kept fraction for a sparse one."""
        return float(self.density.get(task) or (1.0 if self.dense else self.fraction))

    @property
    def dense(self) -> bool:
        return self.fraction >= 1.0


def model_from_entry(entry: Mapping, val_loss: float, sizes: Mapping[str, tuple[int, int, int] | None],
                     density: Mapping[str, float] | None = None) -> FrontierModel:
    """A :class:`FrontierModel` from a reference-set manifest entry, ``{task: (nodes, edges, possible)}``
    (``None``: no held-out-valid circuit) and the model's edge density per task."""
    def part(i: int) -> dict[str, int | None]:
        return {t: (v[i] if v else None) for t, v in sizes.items()}

    return FrontierModel(entry["name"], entry["group"], float(val_loss), part(0), part(1), part(2),
                         float(entry["train"]["target_fraction"]), int(entry["model"]["d_model"]), dict(density or {}))


def _widths(dense: Sequence[FrontierModel]) -> dict[tuple[str, int], list[FrontierModel]]:
    """The dense models by ``(group, width)``, in order of first appearance."""
    out: dict[tuple[str, int], list[FrontierModel]] = {}
    for m in dense:
        out.setdefault((m.group, m.width), []).append(m)
    return out


def by_width(dense: Sequence[FrontierModel]) -> list[FrontierModel]:
    """One :class:`FrontierModel` per dense ``(group, width)``: the mean validation loss of its members and, per
    task, the geometric means of nodes, edges, possible edges and model density over its members (sizes over the
    members with a circuit; None when no member has one). Its name is ``"<group> w<width>"``."""
    def gmean(vs: list[float]) -> float | None:
        return math.exp(sum(map(math.log, vs)) / len(vs)) if vs else None

    out = []
    for (group, width), ms in _widths(dense).items():
        tasks = list(dict.fromkeys(t for m in ms for t in m.edges))
        size = {a: {t: gmean([getattr(m, a)[t] for m in ms if m.edges.get(t) and getattr(m, a).get(t)]) for t in tasks}
                for a in ("nodes", "edges", "possible")}
        dens = {t: gmean([m.model_density(t) for m in ms]) or 1.0 for t in tasks}
        out.append(FrontierModel(f"{group} w{width}", group, sum(m.val_loss for m in ms) / len(ms), size["nodes"],
                                 size["edges"], size["possible"], 1.0, width, dens))
    return out


def resample_by_width(dense: Sequence[FrontierModel], rng: random.Random) -> list[FrontierModel]:
    """A bootstrap draw of the dense side: each width's members drawn with replacement, then :func:`by_width`."""
    return by_width([rng.choice(ms) for ms in _widths(dense).values() for _ in ms])


def envelope(dense: Sequence[FrontierModel], task: str, loss: float, key: str) -> tuple[float, FrontierModel] | None:
    """``(min value, the dense point holding it)`` of ``key`` ("nodes" or "edges") over the dense points (models
    or :func:`by_width` widths) with a circuit for ``task`` and ``val_loss <= loss``; None when there is none."""
    best = None
    for d in dense:
        v = getattr(d, key).get(task)
        if v and d.val_loss <= loss and (best is None or v < best[0]):
            best = (float(v), d)
    return best


def pair_ratios(dense: Sequence[FrontierModel], s: FrontierModel, task: str) -> dict[str, float] | None:
    """Logs of the node ratio, the edge ratio, the density null, their quotient and the concentration for one
    sparse circuit, the dense point it is matched with and their loss gap (> 0: the dense point is more capable); None
    when it has no circuit or no dense model at least as capable has one."""
    n_s, e_s, p_s = s.nodes.get(task), s.edges.get(task), s.possible.get(task)
    if not (n_s and e_s and p_s):
        return None
    n_env, e_env = envelope(dense, task, s.val_loss, "nodes"), envelope(dense, task, s.val_loss, "edges")
    if n_env is None or e_env is None:
        return None
    d = e_env[1]
    edge = math.log(e_env[0] / e_s)
    null = math.log(d.model_density(task) / s.model_density(task))  # what the two models' weight density gives
    return {"node": math.log(n_env[0] / n_s), "edge": edge, "null": null, "excess": edge - null,
            "concentration": math.log((e_s / p_s) / s.model_density(task)),
            "dense_nodes": n_env[0], "dense_edges": e_env[0], "dense_model": d.name,
            "loss_gap": s.val_loss - d.val_loss}


def _quantiles(draws: list[float], level: float) -> tuple[float | None, float | None]:
    if len(draws) < 20:
        return None, None
    draws = sorted(draws)
    a = (1 - level) / 2
    return draws[int(a * (len(draws) - 1))], draws[int(round((1 - a) * (len(draws) - 1)))]


def group_summary(dense: Sequence[FrontierModel], sparse: Sequence[FrontierModel], tasks: Sequence[str],
                  n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Geometric means of the node ratio, edge ratio, density null and excess over the (model, task) pairs of
    one sparse group against the frontier over :func:`by_width` points, each with a crossed bootstrap interval
    (sparse models, dense seeds within each width and tasks resampled independently; the frontier rebuilt in
    every draw). ``{"node": {"value", "lo", "hi"}, ...,
    "n_pairs", "n_models", "n_tasks", "fraction"}``."""
    widths = by_width(dense)
    pairs = {(s.name, t): r for s in sparse for t in tasks if (r := pair_ratios(widths, s, t))}
    keys = RATIOS + ("null", "concentration")
    out: dict = {"n_pairs": len(pairs), "n_models": len({m for m, _ in pairs}), "n_tasks": len({t for _, t in pairs}),
                 "fraction": sparse[0].fraction if sparse else None}
    if not pairs:
        return out | {k: {"value": None, "lo": None, "hi": None} for k in keys}
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n_boot):
        ds = resample_by_width(dense, rng)
        ss = [rng.choice(sparse) for _ in sparse]
        ts = [rng.choice(list(tasks)) for _ in tasks]
        rs = [r for s in ss for t in ts if (r := pair_ratios(ds, s, t))]
        if rs:
            for k in keys:
                draws[k].append(sum(r[k] for r in rs) / len(rs))
    for k in keys:
        lo, hi = _quantiles(draws[k], level) if len(pairs) >= 2 else (None, None)  # one pair: no spread to show
        out[k] = {"value": math.exp(sum(r[k] for r in pairs.values()) / len(pairs)),
                  "lo": math.exp(lo) if lo is not None else None, "hi": math.exp(hi) if hi is not None else None}
    return out


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``y`` on ``x`` over ``[(x, y)]``; None with fewer than two distinct ``x``."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def slopes(dense: Sequence[FrontierModel], sparse: Sequence[FrontierModel], tasks: Sequence[str],
           n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, dict[str, float | None]]:
    """Slope of ``log ratio`` against ``log(1/f)`` over every sparse (model, task) pair, for the node ratio,
    the edge ratio, the excess and the density null itself (the edge ratio's slope if only density acted), with
    crossed bootstrap intervals (models, dense seeds within widths, tasks)."""
    def fit(ds, ss, ts) -> dict[str, float | None]:
        rows = [(math.log(1 / s.fraction), r) for s in ss for t in ts if (r := pair_ratios(ds, s, t))]
        return {k: slope([(x, r[k]) for x, r in rows]) for k in SLOPES}

    point = fit(by_width(dense), sparse, tasks)
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {k: [] for k in SLOPES}
    for _ in range(n_boot):
        got = fit(resample_by_width(dense, rng), [rng.choice(sparse) for _ in sparse],
                  [rng.choice(list(tasks)) for _ in tasks])
        for k, v in got.items():
            if v is not None:
                draws[k].append(v)
    out = {}
    for k in SLOPES:
        lo, hi = _quantiles(draws[k], level)
        out[k] = {"value": point[k], "lo": lo, "hi": hi}
    return out


def analyse(models: Sequence[FrontierModel], tasks: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """The whole comparison: ``{"tasks", "pairs": {"model|task": pair_ratios or None}, "unmatched":
    {"no_circuit_as_capable": [...], "more_capable_than_dense": [...]}, "groups": {group: group_summary},
    "slopes": slopes(...), "dense": {task: [[L, N, E, width], ...]}}`` (``dense``: the :func:`by_width` points).

    A sparse circuit is unmatched when no dense model at least as capable has a circuit for the task: either
    dense models that capable exist but none has one (the sparse model does a task they do not), or the
    sparse model is more capable than every dense model with a circuit."""
    dense = [m for m in models if m.dense]
    sparse = [m for m in models if not m.dense]
    widths = by_width(dense)
    pairs, no_circ, beyond = {}, [], []
    for s in sparse:
        for t in tasks:
            if not s.edges.get(t):
                continue
            r = pair_ratios(widths, s, t)
            pairs[f"{s.name}|{t}"] = r
            if r is None:
                capable = [d for d in widths if d.val_loss <= s.val_loss]
                (no_circ if capable else beyond).append(f"{s.name}|{t}")
    groups = {}
    for g in dict.fromkeys(m.group for m in sparse):
        members = [m for m in sparse if m.group == g]
        groups[g] = group_summary(dense, members, tasks, n_boot, seed=seed)
    return {"tasks": list(tasks), "pairs": pairs,
            "unmatched": {"no_circuit_as_capable": no_circ, "more_capable_than_dense": beyond},
            "groups": groups, "slopes": slopes(dense, sparse, tasks, n_boot, seed=seed),
            "dense": {t: sorted([d.val_loss, d.nodes[t], d.edges[t], d.width] for d in widths if d.edges.get(t))
                      for t in tasks}}


def headline(front: Mapping, excluded: Sequence[str] = ()) -> list[Headline]:
    """Notebook 02's headline claims: per kept fraction, the node ratio and the edge ratio at matched loss beside
    the density null and edges / null (geometric means with bootstrap intervals); ``excluded``: tasks left out
    because a control produced a circuit on them (named in the claim)."""
    out = []
    left_out = f" (without {', '.join(excluded)}: a control produced a circuit there)" if excluded else ""
    for g, s in front.get("groups", {}).items():
        e, n, x = s["edge"], s["node"], s["excess"]
        if e["value"] is None:
            continue
        ci = f"nodes [{n['lo']:.3g}, {n['hi']:.3g}]" if n["lo"] else None
        out.append(Headline(
            f"{g}: circuit nodes and edges, dense / sparse, at matched pretraining loss{left_out}",
            "~16x in edges (at ~1/1000 of the weights kept); nodes not reported",
            f"nodes {n['value']:.3g}x; edges {e['value']:.3g}x against a density null of {s['null']['value']:.3g}x; "
            f"edges / null {x['value']:.3g}x " + (f"[{x['lo']:.3g}, {x['hi']:.3g}]" if x["lo"] else "")
            + f" ({s['n_pairs']} pairs)",
            ci, note="the density null is the edge ratio that the two models' weight density alone gives a circuit on "
                     "the same nodes; the node ratio and edges / null say whether sparse circuits are smaller beyond "
                     "that"))
    return out
