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


def _all_weights(W: torch.Tensor, src_kept: torch.Tensor, dst_kept: torch.Tensor) -> int:
    """Every entry of ``W`` between kept nodes, zero or not (an identity link still joins channel i to i only)."""
    if W.shape[0] == W.shape[1] and torch.equal(W, torch.eye(W.shape[0], device=W.device, dtype=W.dtype)):
        return int(W[src_kept][:, dst_kept].count_nonzero())
    return int(src_kept.sum()) * int(dst_kept.sum())


@torch.no_grad()
def possible_edges(model: SparseTransformer, kept: dict[str, torch.Tensor], data: TaskData | None = None) -> int:
    """The weights between kept nodes whether zero or not: the edges the same node set would have in a dense
    model. ``count_edges / possible_edges`` is the circuit's edge density, the density null's ingredient
    (:mod:`course_lib.circuits.frontier`)."""
    return count_edges(model, kept, data, _all_weights)


@torch.no_grad()
def answer_connected(model: SparseTransformer, answer_ids: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
    """``{hook: bool [channels]}``: the nodes with a directed path of nonzero weights to the logits of
    ``answer_ids`` (vectorised; the same links as the wiring diagram's: weights, residual links from a write
    channel to every later read of it, and a query or key channel to the value channels of its head).

    Swept backwards: a node is connected when one of its outgoing weights reaches a connected node."""
    ids = torch.as_tensor(answer_ids, device=model.W_U.device).flatten().unique()
    conn: dict[str, torch.Tensor] = {"hook_final_in": (model.W_U[:, ids] != 0).any(1)}
    reads = ["hook_final_in"]  # read sites after the current point, each [d_model]
    dh = model.cfg.d_head
    for layer in reversed(range(len(model.blocks))):
        block, p = model.blocks[layer], f"blocks.{layer}"

        def later_reads() -> torch.Tensor:
            return torch.stack([conn[r] for r in reads]).any(0)

        conn[f"{p}.hook_mlp_out"] = later_reads()
        conn[f"{p}.mlp.hook_post"] = (block.mlp.W_out[:, conn[f"{p}.hook_mlp_out"]] != 0).any(1)
        conn[f"{p}.hook_mlp_in"] = (block.mlp.W_in[:, conn[f"{p}.mlp.hook_post"]] != 0).any(1)
        reads.append(f"{p}.hook_mlp_in")
        conn[f"{p}.hook_attn_out"] = later_reads()
        v = (block.attn.W_O[:, conn[f"{p}.hook_attn_out"]] != 0).any(1)
        conn[f"{p}.attn.hook_v"] = v
        head_live = v.view(-1, dh).any(1).repeat_interleave(dh)
        conn[f"{p}.attn.hook_q"] = head_live.clone()
        conn[f"{p}.attn.hook_k"] = head_live.clone()
        attn_in = torch.zeros_like(v[: model.cfg.d_model])
        for name, W in (("q", block.attn.W_Q), ("k", block.attn.W_K), ("v", block.attn.W_V)):
            attn_in |= (W[:, conn[f"{p}.attn.hook_{name}"]] != 0).any(1)
        conn[f"{p}.hook_attn_in"] = attn_in
        reads.append(f"{p}.hook_attn_in")
    return conn
