"""course_lib.circuits.edges: nonzero weights between kept nodes."""

from __future__ import annotations

import pytest
import torch

from course_lib import circuits


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = circuits.SparseTransformerConfig(d_vocab=2048, d_model=32, n_layers=2, d_mlp=48, n_ctx=32)
    m = circuits.SparseTransformer(cfg)
    with torch.no_grad():  # make the random model less uniform so that ablations matter
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return m.eval()

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
