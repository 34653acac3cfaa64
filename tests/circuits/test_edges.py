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


def test_possible_edges_count_zero_weights_too_and_bound_the_edges():
    import torch

    from course_lib import weight_sparsity
    from course_lib.circuits import SparseTransformer, SparseTransformerConfig
    from course_lib.circuits.edges import count_edges, possible_edges
    from course_lib.circuits.pruning import all_kept

    torch.manual_seed(0)
    m = SparseTransformer(SparseTransformerConfig(d_model=32, n_layers=1, d_mlp=64, n_ctx=16, d_vocab=64))
    kept = all_kept(m)
    dense_e, dense_p = count_edges(m, kept), possible_edges(m, kept)
    assert dense_e == dense_p  # random init: no weight is exactly zero
    with torch.no_grad():
        for p in m.sparsified_parameters().values():
            p.copy_(weight_sparsity.project_topk(p, 0.1))
    e, p = count_edges(m, kept), possible_edges(m, kept)
    assert p == dense_p and e < 0.3 * p  # identity links stay, the weights keep a tenth


def test_answer_connected_matches_the_wiring_diagrams_paths():
    import torch

    from course_lib import weight_sparsity
    from course_lib.circuits import SparseTransformer, SparseTransformerConfig, plots
    from course_lib.circuits.edges import answer_connected
    from course_lib.circuits.pruning import all_kept

    torch.manual_seed(1)
    m = SparseTransformer(SparseTransformerConfig(d_model=32, n_layers=2, d_mlp=64, n_ctx=16, d_vocab=64))
    with torch.no_grad():
        for p in m.sparsified_parameters().values():
            p.copy_(weight_sparsity.project_topk(p, 0.3))
    answers = [3, 7]
    fast = answer_connected(m, answers)
    nodes = [(h, c) for h, mask in all_kept(m).items() for c in range(mask.numel())]
    slow = plots.connected_to_answers(plots.wiring_edges(m, nodes, answers))
    got = {(h, c) for h, mask in fast.items() for c in torch.nonzero(mask).flatten().tolist()}
    assert got == {n for n in slow if n[0] != "answer"}
    assert 0 < len(got) < len(nodes)  # sparse enough that some nodes have no path
