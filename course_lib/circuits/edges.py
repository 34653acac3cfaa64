"""Circuit size: edges between kept nodes (after Gao et al., 2025).

Edges are nonzero weights between two kept nodes: ``W_Q/W_K/W_V`` (read channel -> q/k/v channel),
matching q-k channel pairs (the dot product), ``W_O`` (v channel -> write channel), ``W_in`` (read
channel -> neuron), ``W_out`` (neuron -> write channel), the residual stream (a write channel to the
same channel of every later read) and ``W_U`` (final read channel -> the task's answer tokens).

Every edge type is one count, :func:`weight_edges` ``(W, src_kept, dst_kept)``: the nonzero entries of a
weight ``W [n_src, n_dst]`` whose source and destination nodes are both kept. A residual link and a
q-k pair are an identity weight (channel i connects only to channel i). Notebook 02's learners write
this function and pass it as ``edge_fn``.

``kept`` maps every node hook (:func:`course_lib.circuits.pruning.iter_node_hooks`) to a bool mask
``[channels]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from course_lib.circuits.tasks import TaskData
from course_lib.circuits.transformer import SparseTransformer

EdgeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], int]  # (W [n_src, n_dst], src_kept, dst_kept) -> edges


def weight_edges(W: torch.Tensor, src_kept: torch.Tensor, dst_kept: torch.Tensor) -> int:
    """Nonzero entries of ``W [n_src, n_dst]`` between a kept source (row) and a kept destination (column)."""
    return int((W[src_kept][:, dst_kept] != 0).sum())


@torch.no_grad()
def count_edges(model: SparseTransformer, kept: dict[str, torch.Tensor], data: TaskData | None = None,
                edge_fn: EdgeFn = weight_edges) -> int:
    """Nonzero weights between kept nodes (see the module docstring for the edge types)."""
    return sum(n for _, _, n in edge_list_counts(model, kept, data, edge_fn))


@torch.no_grad()
def edge_list_counts(
    model: SparseTransformer, kept: dict[str, torch.Tensor], data: TaskData | None = None,
    edge_fn: EdgeFn = weight_edges,
) -> list[tuple[str, str, int]]:
    """``(source hook, target hook, edges)`` for every pair of node sites that weights connect.

    Each count is ``edge_fn(W, kept[source], kept[target])``; residual links and q-k pairs use an identity ``W``.
    """
    out: list[tuple[str, str, int]] = []

    def add(W: torch.Tensor | None, src: str, dst: str) -> None:
        a, b = kept[src], kept[dst]
        if W is None:  # channel i connects to channel i only
            W = torch.eye(a.numel(), device=a.device)
        out.append((src, dst, int(edge_fn(W, a, b))))

    writes: list[str] = []
    for layer, block in enumerate(model.blocks):
        p = f"blocks.{layer}"
        for w in writes:
            add(None, w, f"{p}.hook_attn_in")
        for name, W in (("q", block.attn.W_Q), ("k", block.attn.W_K), ("v", block.attn.W_V)):
            add(W, f"{p}.hook_attn_in", f"{p}.attn.hook_{name}")
        add(None, f"{p}.attn.hook_q", f"{p}.attn.hook_k")
        add(block.attn.W_O, f"{p}.attn.hook_v", f"{p}.hook_attn_out")
        writes.append(f"{p}.hook_attn_out")
        for w in writes:
            add(None, w, f"{p}.hook_mlp_in")
        add(block.mlp.W_in, f"{p}.hook_mlp_in", f"{p}.mlp.hook_post")
        add(block.mlp.W_out, f"{p}.mlp.hook_post", f"{p}.hook_mlp_out")
        writes.append(f"{p}.hook_mlp_out")
    for w in writes:
        add(None, w, "hook_final_in")
    if data is not None:
        kept = {**kept, "answers": torch.zeros(model.W_U.shape[1], dtype=torch.bool, device=model.W_U.device)}
        kept["answers"][data.answer_ids.flatten()] = True
        add(model.W_U, "hook_final_in", "answers")
    return out


def frontier(
    val_loss: dict[str, float], fraction: dict[str, float], edges: dict[str, dict[str, int | None]],
) -> dict:
    """The capability/interpretability frontier: per model ``(validation loss, circuit edges)``.

    ``edges[model][task]`` is a held-out-valid circuit's edge count or ``None``. Circuit size of a model
    is the geometric mean of its edges over the tasks where *every* model has a circuit. The dense/sparse
    ratio at matched loss interpolates ``log edges`` of the dense models (``fraction == 1``) linearly in
    validation loss at each sparse model's loss; it is ``None`` (not measurable) when fewer than two dense
    models exist or the sparse loss lies outside the dense curve's range.

    Returns ``{"tasks", "points": {model: {"val_loss", "fraction", "edges"}}, "ratio": {model: float | None}}``.
    """
    names = list(edges)
    tasks = [t for t in next(iter(edges.values()), {}) if all(edges[n].get(t) for n in names)] if names else []
    points = {}
    for n in names:
        g = math.exp(sum(math.log(edges[n][t]) for t in tasks) / len(tasks)) if tasks else None
        points[n] = {"val_loss": val_loss[n], "fraction": fraction[n], "edges": g}
    dense = sorted((p["val_loss"], p["edges"]) for p in points.values() if p["fraction"] >= 1.0 and p["edges"])
    ratio: dict[str, float | None] = {}
    for n, p in points.items():
        if p["fraction"] >= 1.0:
            continue
        r = None
        if p["edges"] and len(dense) >= 2 and dense[0][0] <= p["val_loss"] <= dense[-1][0]:
            for (l0, e0), (l1, e1) in zip(dense, dense[1:]):
                if l0 <= p["val_loss"] <= l1:
                    u = 0.0 if l1 == l0 else (p["val_loss"] - l0) / (l1 - l0)
                    r = math.exp((1 - u) * math.log(e0) + u * math.log(e1)) / p["edges"]
                    break
        ratio[n] = r
    return {"tasks": tasks, "points": points, "ratio": ratio}
