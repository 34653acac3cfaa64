"""course_lib.circuits.edges: nonzero weights between kept nodes."""

from __future__ import annotations

import types

import torch

from course_lib import circuits


def test_edge_count_dense_and_sparse(model):
    cfg = model.cfg
    kept = circuits.all_kept(model)
    d, f, L = cfg.d_model, cfg.d_mlp, cfg.n_layers
    weight_edges = L * (3 * d * d + d * d + 2 * d * f)
    qk_pairs = L * d
    # residual: writes of layer l to later reads (attn_in, mlp_in of later sublayers, final)
    n_writes_before_reads = sum(range(2 * L)) + 2 * L  # each read site sees all earlier writes
    residual = d * n_writes_before_reads
    assert circuits.count_edges(model, kept) == weight_edges + qk_pairs + residual
    m2 = circuits.SparseTransformer(cfg)
    m2.load_state_dict(model.state_dict())
    with torch.no_grad():
        m2.blocks[0].mlp.W_in[3, 5] = 0.0
    assert circuits.count_edges(m2, kept) == circuits.count_edges(model, kept) - 1
    kept2 = {h: v.clone() for h, v in kept.items()}
    kept2["blocks.0.mlp.hook_post"][5] = False
    lost = d + d  # W_in column and W_out row of neuron 5
    assert circuits.count_edges(model, kept2) == circuits.count_edges(model, kept) - lost


def test_every_count_goes_through_edge_fn_and_residual_links_are_identity_weights(model):
    g = torch.Generator().manual_seed(0)
    kept = {h: torch.rand(m.numel(), generator=g) < 0.5 for h, m in circuits.all_kept(model).items()}
    data = types.SimpleNamespace(answer_ids=torch.tensor([[3, 7], [7, 3], [3, 9]]))
    calls = []

    def spy(W, src, dst):
        calls.append(tuple(W.shape))
        return circuits.weight_edges(W, src, dst)

    rows = circuits.edge_list_counts(model, kept, data, edge_fn=spy)
    assert len(calls) == len(rows) and circuits.count_edges(model, kept, data, edge_fn=spy) == sum(n for *_, n in rows)
    for src, dst, n in rows:
        if dst == "answers":  # the answer columns of W_U
            assert n == int((model.W_U[kept[src]][:, [3, 7, 9]] != 0).sum())
        elif "hook_q" in src or src.endswith("_out"):  # q-k pairs and residual links: channel i to channel i
            assert n == int((kept[src] & kept[dst]).sum()), (src, dst)
    assert circuits.count_edges(model, kept, edge_fn=lambda W, a, b: 0) == 0
