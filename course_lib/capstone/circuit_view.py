"""How many of a task circuit's units have an explanation that beats the null (a clearly scoped version).

Notebook 02 prunes a model to the smallest node set that still does a task (:func:`course_lib.circuits.find_circuit_cached`,
02's configuration for the profile). Here, for one matched pair and the tasks **both** of its models solve, each
model's circuit is searched the same way; its **units** are the circuit's nodes at two of 02's node sites of
every block: MLP neurons (``blocks.l.mlp.hook_post``) and residual read channels (``blocks.l.hook_mlp_in``);
its other nodes (attention q/k/v channels, write channels, the unembedding's read channels) are counted but not
explained. Each unit gets the statistics explanation from the selection split and its keyword-simulator ``r`` on
the scoring split (:mod:`course_lib.capstone.explain`); it counts as **explained** when ``r`` beats its class's
null threshold from the main comparison (the 95th percentile of what another unit's explanation scores:
:func:`~course_lib.capstone.explain.null_thresholds`, measured on the last block's units)::

    explained share = #explained units / #units at the two sites

Scope: one pair per kept fraction, a few tasks; the threshold comes from last-block units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from course_lib import corpus
from course_lib.autointerp.records import RecordConfig
from course_lib.autointerp.scoring import simulation_score
from course_lib.autointerp.simulator import KeywordSimulator
from course_lib.capstone import explain, units
from course_lib.capstone.matching import MatchedPair
from course_lib.circuits import (
    PruneConfig,
    SparseTransformer,
    TaskData,
    find_circuit_cached,
    node_means,
    task_loss,
)


@dataclasses.dataclass(frozen=True)
class CircuitUnits:
    pair: str  # the matched pair's label
    fraction: float  # its kept fraction
    side: str  # "dense" or "sparse"
    model: str  # the model's name
    task: str  # the task of 02's suite
    n_nodes: int  # every node of the circuit
    n_units: int  # its nodes at the two explained sites
    n_explained: int  # of those, how many beat their class's null threshold
    explained_units: tuple[str, ...]  # their names
    scores: tuple[float | None, ...]  # each unit's keyword r, in the order of the circuit's units


def sites(model: SparseTransformer) -> list[tuple[str, str, bool]]:
    """``(hook, kind, signed)`` of the explained sites, every block: neurons, then residual read channels."""
    out = []
    for layer in range(model.cfg.n_layers):
        out += [(f"blocks.{layer}.mlp.hook_post", "neuron", False), (f"blocks.{layer}.hook_mlp_in", "channel", True)]
    return out


def solved_tasks(models: Sequence[SparseTransformer], splits: Mapping[str, Mapping[str, TaskData]],
                 solved_loss: float) -> list[str]:
    """The tasks every model of ``models`` solves (unpruned task loss on the ``solve`` prompts <= ``solved_loss``)."""
    return [t for t, sp in splits.items() if all(task_loss(m, sp["solve"]) <= solved_loss for m in models)]


def circuit_units(pair: MatchedPair, side: str, model: SparseTransformer, task: str, splits: Mapping[str, TaskData],
                  mean_windows: torch.Tensor, windows: Mapping[str, torch.Tensor], tokenizer: Any,
                  rec_cfg: RecordConfig, thresholds: Mapping[str, float], prune_cfg: PruneConfig, seed: int,
                  orient_fn: units.OrientFn = units.orient) -> CircuitUnits | None:
    """Search ``model``'s circuit for ``task`` (02's search, cached) and explain its units (module docstring); None
    when no held-out-valid circuit is found."""
    name = pair.dense if side == "dense" else pair.sparse
    c = find_circuit_cached(model, name, splits["fit"], splits["report"], node_means(model, mean_windows), prune_cfg)
    if not c.valid or c.n_nodes is None:
        return None
    hooks = [h for h, _, _ in sites(model)]
    got = {split: units.harvest(model, windows[split], hooks) for split in ("select", "score")}
    gen = torch.Generator().manual_seed(seed)
    simulator = KeywordSimulator()
    names, scores, good = [], [], []
    for hook, kind, signed in sites(model):
        ids = torch.nonzero(c.kept[hook]).flatten().tolist() if hook in c.kept else []
        for i in ids:
            sel, sco = got["select"][hook][..., i], got["score"][hook][..., i]
            sign = int(orient_fn(sel[:, 1:])) if signed else 1
            unit = f"{side} {kind}/{name}/{hook.split('.')[1]}.{i}" + ("-" if sign < 0 else "")
            ur = explain.split_records(unit, f"{side} {kind}", sign * sel, sign * sco, windows["select"],
                                       windows["score"], tokenizer, rec_cfg, gen)
            text = explain.EXPLAINER.explain(ur).text
            r = None if text is None else simulation_score(simulator, text, ur)[0]["correlation"]
            r = None if r is None or not np.isfinite(r) else float(r)
            names.append(unit)
            scores.append(r)
            t = thresholds.get(f"{side} {kind}")
            if r is not None and t is not None and r > t:
                good.append(unit)
    return CircuitUnits(pair.label, pair.fraction, side, name, task, int(c.n_nodes), len(names), len(good),
                        tuple(good), tuple(scores))


def mean_windows_of(stream: torch.Tensor, n_ctx: int, n: int) -> torch.Tensor:
    """02's windows for the ablation means: the first ``n`` windows of ``n_ctx`` tokens of ``stream``."""
    return corpus.windows(stream, n_ctx)[:n]


def summary(rows: Sequence[CircuitUnits]) -> dict[str, dict[str, Any]]:
    """Per side: circuits, mean nodes, mean units at the sites, and the pooled explained share
    ``sum explained / sum units``: ``{side: {"circuits", "nodes", "units", "explained", "share"}}``."""
    out = {}
    for side in ("dense", "sparse"):
        rs = [r for r in rows if r.side == side]
        n_units = sum(r.n_units for r in rs)
        out[side] = {"circuits": len(rs), "nodes": float(np.mean([r.n_nodes for r in rs])) if rs else None,
                     "units": float(np.mean([r.n_units for r in rs])) if rs else None,
                     "explained": float(np.mean([r.n_explained for r in rs])) if rs else None,
                     "share": sum(r.n_explained for r in rs) / n_units if n_units else None}
    return out
