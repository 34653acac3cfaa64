"""course_lib.circuits.pruning: masks, mean ablation, node means, circuit search."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from course_lib import circuits, corpus


@pytest.fixture(scope="module")
def tokenizer():
    return corpus.train_tokenizer(corpus.config_for("smoke"))

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

@pytest.fixture(scope="module")
def windows():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 2048, (8, 32), generator=g)

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
