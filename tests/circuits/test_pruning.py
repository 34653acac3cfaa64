"""course_lib.circuits.pruning: masks, mean ablation, node means, circuit search."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from course_lib import circuits, corpus


@pytest.fixture(scope="module")
def tokenizer():
    return corpus.train_tokenizer(corpus.config_for("smoke"))


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
    assert sum(int(m.sum()) for m in c.kept.values()) == (c.train_nodes if c.train_nodes is not None else c.curve_k[
        c.curve_loss.index(min(c.curve_loss))])
    # reported only when the held-out loss reaches the target too
    assert c.valid == (c.train_nodes is not None and c.test_loss <= 0.6)
    assert (c.n_nodes is not None) == c.valid and (c.edges is not None) == c.valid
    assert c.solved == (c.full_loss <= pcfg.solved_loss)
    if c.train_nodes is not None:
        assert c.train_loss <= 0.6
        assert c.edges is not None and c.edges <= circuits.count_edges(model, circuits.all_kept(model), tr)
        if c.train_nodes > 0:  # one node fewer (the bisection's lower neighbour) misses the target
            masks = circuits.masks_from_order(model, c.order, c.train_nodes - 1)
            assert circuits.task_loss(model, tr, masks, means) > 0.6
    assert math.isfinite(c.test_loss) and math.isfinite(c.full_loss)

def test_prune_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        circuits.PruneConfig().steps = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- known-answer tests


def _planted(n: int, seed: int, split: str, d_vocab: int = 16) -> circuits.TaskData:
    """One-token prompts: token 1 -> answer 3, token 2 -> answer 4 (half each)."""
    g = torch.Generator().manual_seed(hash((seed, split)) % 2**31)
    cls = torch.randperm(n, generator=g) % 2
    tokens = (1 + cls)[:, None]
    answers = torch.stack([torch.where(cls == 0, 3, 4), torch.where(cls == 0, 4, 3)], 1)
    return circuits.TaskData("planted", tokens, torch.zeros(n, dtype=torch.long), answers, [str(int(t)) for t in tokens])


@pytest.fixture(scope="module")
def planted_model():
    """A hand-built model whose task depends on exactly two nodes: unembedding read channels 0 and 1.

    Every weight is zero except: token 1 writes residual channel 0, token 2 channel 1, every token
    writes channel 5 (a constant that keeps RMSNorm finite); W_U maps channel 0 to answer 3 and
    channel 1 to answer 4. Blocks add nothing, so every other node is irrelevant.
    """
    cfg = circuits.SparseTransformerConfig(d_vocab=16, d_model=32, n_layers=1, d_mlp=32, n_ctx=8)
    m = circuits.SparseTransformer(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ln" not in name:
                p.zero_()
        m.W_E[:, 5] = 1.0
        m.W_E[1, 0] = 1.0
        m.W_E[2, 1] = 1.0
        m.W_U[0, 3] = 1.0
        m.W_U[1, 4] = 1.0
    return m.eval()


def test_planted_two_node_circuit_is_found_exactly(planted_model):
    m = planted_model
    tr, te = _planted(32, 0, "train"), _planted(32, 0, "test")
    means = circuits.node_means(m, torch.full((4, 8), 7))  # token 7: neither feature, mean 0 on channels 0/1
    assert circuits.task_loss(m, te) < 0.05
    pcfg = circuits.PruneConfig(steps=60, grid_points=8, target_loss=0.1, coef=1e-2)
    c = circuits.find_circuit(m, "planted", tr, te, means, pcfg)
    assert c.solved and c.valid
    assert c.n_nodes == 2
    assert set(c.kept_nodes) == {("hook_final_in", 0), ("hook_final_in", 1)}
    assert c.edges == 2 and c.test_loss <= 0.1
    # size-matched random circuits almost never hit those two nodes: their loss stays high
    rand = circuits.random_circuit_losses(m, te, 2, means, draws=8)
    assert min(rand) > 0.3


def test_mask_learning_on_prompt_subsets_finds_the_planted_circuit_and_depends_on_the_seed(planted_model):
    m = planted_model
    tr, te = _planted(32, 0, "train"), _planted(32, 0, "test")
    means = circuits.node_means(m, torch.full((4, 8), 7))
    pcfg = circuits.PruneConfig(steps=60, grid_points=8, target_loss=0.1, coef=1e-2, batch_size=8, init_noise=0.1)
    c = circuits.find_circuit(m, "planted", tr, te, means, pcfg)
    assert c.valid and set(c.kept_nodes) == {("hook_final_in", 0), ("hook_final_in", 1)}
    a = circuits.learn_masks(m, tr, means, pcfg)
    assert all(torch.equal(a[h], v) for h, v in circuits.learn_masks(m, tr, means, pcfg).items())  # deterministic
    full = circuits.learn_masks(m, tr, means, dataclasses.replace(pcfg, batch_size=0))
    assert any(not torch.equal(a[h], v) for h, v in full.items())  # the subsets change the path
    other = circuits.learn_masks(m, tr, means, dataclasses.replace(pcfg, mask_seed=1))
    assert any(not torch.equal(a[h], v) for h, v in other.items())


def test_nonsense_task_fails_on_held_out_prompts(planted_model):
    m = planted_model
    tr = circuits.shuffled_labels(_planted(32, 0, "train"), seed=1)
    te = circuits.shuffled_labels(_planted(32, 0, "test"), seed=2)
    assert tr.task == "planted (shuffled)"
    assert sorted(map(tuple, tr.answer_ids.tolist())) == sorted(map(tuple, _planted(32, 0, "train").answer_ids.tolist()))
    means = circuits.node_means(m, torch.full((4, 8), 7))
    c = circuits.find_circuit(m, "planted", tr, te, means, circuits.PruneConfig(steps=40, grid_points=8, target_loss=0.3))
    assert not c.valid and c.n_nodes is None and c.edges is None
    assert c.test_loss > 0.3


def test_zero_means_make_zero_ablation(model, tokenizer, windows):
    data = circuits.make_task_data("quote_close", tokenizer, 8, seed=0, split="train")
    zeros = circuits.zero_means(circuits.node_means(model, windows))
    assert all(float(v.abs().sum()) == 0 for v in zeros.values())
    off = {h: torch.zeros_like(v) for h, v in zeros.items()}
    logits = circuits.task_logits(model, data, off, zeros)
    want = model.b_U[data.answer_ids]  # every read channel zero: only the bias is left
    assert torch.allclose(logits, want, atol=1e-5)


def test_random_circuit_losses_are_size_matched_and_deterministic(model, tokenizer, windows):
    data = circuits.make_task_data("quote_close", tokenizer, 8, seed=0, split="test")
    means = circuits.node_means(model, windows)
    a = circuits.random_circuit_losses(model, data, 10, means, draws=3, seed=4)
    assert a == circuits.random_circuit_losses(model, data, 10, means, draws=3, seed=4) and len(a) == 3
    n = circuits.total_nodes(model)
    full = circuits.random_circuit_losses(model, data, n, means, draws=1)
    assert full[0] == pytest.approx(circuits.task_loss(model, data), abs=1e-5)


def test_find_circuit_uses_the_given_mask_accept_and_edge_functions(model, tokenizer, windows):
    tr = circuits.make_task_data("quote_close", tokenizer, 12, seed=0, split="train")
    te = circuits.make_task_data("quote_close", tokenizer, 12, seed=0, split="test")
    means = circuits.node_means(model, windows)
    pcfg = circuits.PruneConfig(steps=4, grid_points=6, target_loss=0.5)
    seen = {"mask": 0, "accept": [], "edge": 0}

    def mask(s, temperature):
        seen["mask"] += 1
        return circuits.hard_mask(s, temperature)

    def accept(*args):
        seen["accept"].append(args)
        return True  # accept whatever was found, so that the edges are counted

    def edge(W, a, b):
        seen["edge"] += 1
        return circuits.weight_edges(W, a, b)

    c = circuits.find_circuit(model, "m", tr, te, means, pcfg, mask_fn=mask, accept_fn=accept, edge_fn=edge)
    ref = circuits.find_circuit(model, "m", tr, te, means, pcfg)
    assert seen["mask"] == pcfg.steps * len(circuits.node_sites(model))
    assert seen["accept"] == [(c.train_nodes, c.train_loss, c.test_loss, pcfg.target_loss)]
    assert c.valid and seen["edge"] > 0 and c.edges == circuits.count_edges(model, c.kept, tr)
    assert c.order == ref.order and c.test_loss == ref.test_loss  # same masks learned
    never = circuits.find_circuit(model, "m", tr, te, means, pcfg, accept_fn=lambda *a: False)
    assert not never.valid and never.n_nodes is None and never.edges is None
    # the bisection is the given search function: one that finds nothing leaves no circuit
    none = circuits.find_circuit(model, "m", tr, te, means, pcfg, search_fn=lambda loss_at, ks, goal: None)
    assert none.train_nodes is None and not none.valid and none.train_loss == min(none.curve_loss)


def test_smallest_k_halves_the_first_grid_interval_that_reaches_the_goal():
    calls = []
    curve = [1.0] * 23 + [0.1] * 42  # k = 0..64, reaches 0.2 from k = 23 on

    def loss_at(k):
        calls.append(k)
        return curve[k]

    assert circuits.pruning.smallest_k(loss_at, [0, 8, 16, 32, 64], 0.2) == 23
    assert len(set(calls) - {0, 8, 16, 32, 64}) <= 4  # log2(32 - 16)
    assert circuits.pruning.smallest_k(lambda k: 1.0, [0, 8], 0.2) is None
    assert circuits.pruning.smallest_k(lambda k: 0.1, [0, 8], 0.2) == 0


def test_find_circuit_cached_equals_find_circuit_and_reuses_it(model, tokenizer, windows, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    tr = circuits.make_task_data("set_or_string", tokenizer, 16, seed=0, split="train")
    te = circuits.make_task_data("set_or_string", tokenizer, 16, seed=0, split="test")
    means = circuits.node_means(model, windows)
    pcfg = circuits.PruneConfig(steps=10, grid_points=6, target_loss=0.6)
    plain = circuits.find_circuit(model, "random", tr, te, means, pcfg)
    first = circuits.find_circuit_cached(model, "random", tr, te, means, pcfg)
    calls = []
    real = circuits.pruning.find_circuit
    monkeypatch.setattr(circuits.pruning, "find_circuit", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = circuits.find_circuit_cached(model, "renamed", tr, te, means, pcfg)
    assert calls == [] and again.model_name == "renamed"  # read back, not searched again
    for c in (first, again):
        assert c.order == plain.order and c.curve_loss == plain.curve_loss and c.valid == plain.valid
        assert c.n_nodes == plain.n_nodes and c.edges == plain.edges and c.test_loss == plain.test_loss
        assert all(torch.equal(c.kept[h], plain.kept[h]) for h in plain.kept)
    # any input that decides the result is in the key: another target, another mask function
    circuits.find_circuit_cached(model, "random", tr, te, means, dataclasses.replace(pcfg, target_loss=0.5))

    def my_mask(logits, temperature):  # the learner's own (same maths, its own source)
        return circuits.hard_mask(logits, temperature)

    circuits.find_circuit_cached(model, "random", tr, te, means, pcfg, mask_fn=my_mask)
    assert len(calls) == 2


def test_train_target_ratio_makes_the_bisection_aim_below_the_target(model, tokenizer, windows):
    tr = circuits.make_task_data("quote_close", tokenizer, 16, 0, "train")
    te = circuits.make_task_data("quote_close", tokenizer, 16, 0, "test")
    means = circuits.node_means(model, windows[:4])
    base = circuits.PruneConfig(steps=10, grid_points=6, target_loss=0.69)
    a = circuits.find_circuit(model, "m", tr, te, means, base)
    b = circuits.find_circuit(model, "m", tr, te, means, dataclasses.replace(base, train_target_ratio=0.9))
    if a.train_nodes is not None:
        assert a.train_loss <= 0.69
    if b.train_nodes is not None:
        assert b.train_loss <= 0.69 * 0.9
    assert a.target_loss == b.target_loss == 0.69  # validity is still judged at the target itself


def test_greedy_shrink_drops_every_node_the_task_does_not_need(planted_model):
    m = planted_model
    tr, te = _planted(32, 0, "train"), _planted(32, 0, "test")
    means = circuits.node_means(m, torch.full((4, 8), 7))
    pcfg = circuits.PruneConfig(steps=5, grid_points=4, target_loss=0.1)
    c = circuits.find_circuit(m, "planted", tr, te, means, pcfg)
    big = circuits.pruning.restrict_circuit(m, c, c.order[:40], tr, te, means)  # the 2 needed nodes among 40
    assert big.valid and big.n_nodes == 40
    small = circuits.pruning.greedy_shrink(m, big, tr, te, means, goal=0.1)
    assert small.valid and set(small.kept_nodes) == {("hook_final_in", 0), ("hook_final_in", 1)}


def test_model_density_is_one_when_dense_and_the_kept_share_when_sparse(model, tokenizer):
    data = circuits.make_task_data("quote_close", tokenizer, 8, seed=0, split="test")
    assert circuits.pruning.model_density(model, data) == pytest.approx(1.0)
    sparse = copy.deepcopy(model)
    with torch.no_grad():
        for p in sparse.sparsified_parameters().values():
            p.mul_((torch.rand(p.shape, generator=torch.Generator().manual_seed(0)) < 0.25).float())
    d = circuits.pruning.model_density(sparse, data)
    assert 0.15 < d < 0.4  # the residual links (identity weights) are always there: a little above 0.25
