"""Tests for course_lib.circuits (tasks, masks, mean ablation, circuit search, edges)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from course_lib import circuits, corpus
from course_lib import sparse_transformer as st


@pytest.fixture(scope="module")
def tokenizer():
    return corpus.train_tokenizer(corpus.config_for("smoke"))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = st.SparseTransformerConfig(d_vocab=2048, d_model=32, n_layers=2, d_mlp=48, n_ctx=32)
    m = st.SparseTransformer(cfg)
    with torch.no_grad():  # make the random model less uniform so that ablations matter
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return m.eval()


@pytest.fixture(scope="module")
def windows():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 2048, (8, 32), generator=g)


@pytest.mark.parametrize("task", sorted(circuits.TASKS))
def test_answers_are_single_tokens_and_the_next_token(task, tokenizer):
    t = circuits.TASKS[task]
    ids = [circuits.single_token_id(tokenizer, a) for a in t.answers]
    assert len(set(ids)) == 2
    data = circuits.make_task_data(task, tokenizer, 40, seed=0, split="train")
    for prompt, row, last, (c, w) in zip(data.prompts, data.tokens, data.last, data.answer_ids.tolist()):
        assert {c, w} == set(ids)
        assert tokenizer.encode(prompt).ids == row[: last + 1].tolist()
        # the prompt followed by its correct answer tokenizes as prompt tokens + one answer token
        assert tokenizer.encode(prompt + tokenizer.decode([c])).ids == row[: last + 1].tolist() + [c]
    # both classes present, balanced
    correct = data.answer_ids[:, 0]
    assert (correct == ids[0]).sum() == (correct == ids[1]).sum() == 20


def test_single_token_check_rejects_multi_token_answers(tokenizer):
    with pytest.raises(ValueError, match="not one"):
        circuits.single_token_id(tokenizer, "]] and more")


def test_train_and_test_prompts_differ(tokenizer):
    tr = circuits.make_task_data("quote_close", tokenizer, 32, seed=0, split="train")
    te = circuits.make_task_data("quote_close", tokenizer, 32, seed=0, split="test")
    assert tr.prompts != te.prompts
    assert len(set(tr.prompts) & set(te.prompts)) < 8


def test_all_ones_masks_reproduce_logits(model, tokenizer, windows):
    data = circuits.make_task_data("bracket_type", tokenizer, 12, seed=0, split="train")
    means = circuits.node_means(model, windows)
    ones = {h: torch.ones_like(m) for h, m in means.items()}
    with torch.no_grad():
        full = model(data.tokens)
    ref = full[torch.arange(12), data.last].gather(1, data.answer_ids)
    assert torch.allclose(circuits.task_logits(model, data, ones, means), ref, atol=1e-5)
    assert torch.allclose(circuits.task_logits(model, data), ref, atol=1e-5)


def test_mean_ablation_of_every_node_gives_the_mean_prediction(model, tokenizer, windows):
    data = circuits.make_task_data("quote_close", tokenizer, 16, seed=0, split="train")
    means = circuits.node_means(model, windows)
    zeros = {h: torch.zeros_like(m) for h, m in means.items()}
    logits = circuits.task_logits(model, data, zeros, means)
    # every prompt sees the same prediction: unembed(mean of the final read channels)
    mean_logits = means["hook_final_in"] @ model.W_U + model.b_U
    assert torch.allclose(logits, mean_logits[data.answer_ids], atol=1e-5)
    mean_logits = mean_logits.detach()
    want = torch.nn.functional.softplus(mean_logits[data.answer_ids[:, 1]] - mean_logits[data.answer_ids[:, 0]])
    assert circuits.task_loss(model, data, zeros, means) == pytest.approx(float(want.mean()), abs=1e-6)
    # and it differs from the unablated model
    assert not torch.allclose(logits, circuits.task_logits(model, data), atol=1e-3)


def test_node_means_are_means(model, windows):
    means = circuits.node_means(model, windows, batch_size=3)
    _, cache = model.run_with_cache(windows)
    q = cache["blocks.1.attn.hook_q"].reshape(-1, model.cfg.d_model).mean(0)
    assert torch.allclose(means["blocks.1.attn.hook_q"], q, atol=1e-5)


def test_hard_mask_surrogate_gradient():
    s = torch.tensor([-2.0, -0.1, 0.3, 4.0], requires_grad=True)
    m = circuits.hard_mask(s, temperature=0.5)
    assert m.tolist() == [0.0, 0.0, 1.0, 1.0]
    m.sum().backward()
    sig = torch.sigmoid(s.detach() / 0.5)
    assert torch.allclose(s.grad, sig * (1 - sig) / 0.5)


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
    m2 = st.SparseTransformer(cfg)
    m2.load_state_dict(model.state_dict())
    with torch.no_grad():
        m2.blocks[0].mlp.W_in[3, 5] = 0.0
    assert circuits.count_edges(m2, kept) == circuits.count_edges(model, kept) - 1
    kept2 = {h: v.clone() for h, v in kept.items()}
    kept2["blocks.0.mlp.hook_post"][5] = False
    lost = d + d  # W_in column and W_out row of neuron 5
    assert circuits.count_edges(model, kept2) == circuits.count_edges(model, kept) - lost


def test_find_circuit_meets_target_or_says_not(model, tokenizer, windows):
    tr = circuits.make_task_data("set_or_string", tokenizer, 16, seed=0, split="train")
    te = circuits.make_task_data("set_or_string", tokenizer, 16, seed=0, split="test")
    means = circuits.node_means(model, windows)
    pcfg = circuits.PruneConfig(steps=15, grid_points=8, target_loss=0.6)
    c = circuits.find_circuit(model, "random", tr, te, means, pcfg)
    n = circuits.total_nodes(model)
    assert len(c.order) == n and len(set(c.order)) == n
    assert c.curve_k[0] == 0 and c.curve_k[-1] == n
    assert sum(int(m.sum()) for m in c.kept.values()) == (c.n_nodes if c.n_nodes is not None else c.curve_k[
        c.curve_loss.index(min(c.curve_loss))])
    if c.n_nodes is not None:
        assert c.train_loss <= 0.6
        assert c.edges is not None and c.edges <= circuits.count_edges(model, circuits.all_kept(model), tr)
        if c.n_nodes > 0:  # one node fewer (the bisection's lower neighbour) misses the target
            masks = circuits.masks_from_order(model, c.order, c.n_nodes - 1)
            assert circuits.task_loss(model, tr, masks, means) > 0.6
    assert math.isfinite(c.test_loss) and math.isfinite(c.full_loss)


def test_prune_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        circuits.PruneConfig().steps = 3  # type: ignore[misc]
