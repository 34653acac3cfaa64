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
