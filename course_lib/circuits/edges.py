"""Circuit size: edges between kept nodes (after Gao et al., 2025).

Edges are nonzero weights between two kept nodes: ``W_Q/W_K/W_V`` (read channel -> q/k/v channel),
matching q-k channel pairs (the dot product), ``W_O`` (v channel -> write channel), ``W_in`` (read
channel -> neuron), ``W_out`` (neuron -> write channel), the residual stream (a write channel to the
same channel of every later read) and ``W_U`` (final read channel -> the task's answer tokens).

``kept`` maps every node hook (:func:`course_lib.circuits.pruning.iter_node_hooks`) to a bool mask
``[channels]``.
"""

from __future__ import annotations

import math

import torch

from course_lib.circuits.tasks import TaskData
from course_lib.circuits.transformer import SparseTransformer


@torch.no_grad()
def count_edges(model: SparseTransformer, kept: dict[str, torch.Tensor], data: TaskData | None = None) -> int:
    """Nonzero weights between kept nodes (see the module docstring for the edge types)."""
    return sum(n for _, _, n in edge_list_counts(model, kept, data))


@torch.no_grad()
def edge_list_counts(
    model: SparseTransformer, kept: dict[str, torch.Tensor], data: TaskData | None = None
) -> list[tuple[str, str, int]]:
    """``(source hook, target hook, edges)`` for every pair of node sites that weights connect."""
    cfg = model.cfg
    out: list[tuple[str, str, int]] = []

    def nz(w: torch.Tensor, src: str, dst: str) -> None:
        a, b = kept[src], kept[dst]
        out.append((src, dst, int((w[a][:, b] != 0).sum())))

    writes: list[str] = []
    for layer, block in enumerate(model.blocks):
        p = f"blocks.{layer}"
        reads = [f"{p}.hook_attn_in"]
        for w in writes:
            out.append((w, reads[0], int((kept[w] & kept[reads[0]]).sum())))
        for name, W in (("q", block.attn.W_Q), ("k", block.attn.W_K), ("v", block.attn.W_V)):
            nz(W, f"{p}.hook_attn_in", f"{p}.attn.hook_{name}")
        out.append((f"{p}.attn.hook_q", f"{p}.attn.hook_k",
                    int((kept[f"{p}.attn.hook_q"] & kept[f"{p}.attn.hook_k"]).sum())))
        nz(block.attn.W_O, f"{p}.attn.hook_v", f"{p}.hook_attn_out")
        writes.append(f"{p}.hook_attn_out")
        for w in writes:
            out.append((w, f"{p}.hook_mlp_in", int((kept[w] & kept[f"{p}.hook_mlp_in"]).sum())))
        nz(block.mlp.W_in, f"{p}.hook_mlp_in", f"{p}.mlp.hook_post")
        nz(block.mlp.W_out, f"{p}.mlp.hook_post", f"{p}.hook_mlp_out")
        writes.append(f"{p}.hook_mlp_out")
    for w in writes:
        out.append((w, "hook_final_in", int((kept[w] & kept["hook_final_in"]).sum())))
    if data is not None:
        ids = torch.unique(data.answer_ids)
        out.append(("hook_final_in", "answers", int((model.W_U[kept["hook_final_in"]][:, ids] != 0).sum())))
    del cfg
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
