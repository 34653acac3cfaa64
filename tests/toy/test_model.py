"""course_lib.toy.model: data, the batched toy models, training (tiny configs, fixed seeds)."""

from __future__ import annotations

import pytest
import torch

from course_lib import cache, toy


def test_generate_batch_sparsity_and_range():
    p = torch.tensor([1.0, 0.5, 0.05])
    x = toy.generate_batch(p, 10, 4000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 4000, 10)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    frac = (x != 0).float().mean(dim=(1, 2))
    assert torch.allclose(frac, p, atol=0.01)
    nz = x[1][x[1] != 0]
    assert abs(float(nz.mean()) - 0.5) < 0.02  # uniform on [0, 1] when present
    xs = toy.generate_batch(p, 10, 4000, generator=torch.Generator().manual_seed(0), symmetric=True)
    assert float(xs.min()) < -0.9 and abs(float(xs[0].mean())) < 0.02

def test_config_rejects_unknown_kind():
    with pytest.raises(ValueError, match="relu_output"):
        toy.ToyConfig(kind="gelu")

@pytest.mark.parametrize("kind", toy.KINDS)
def test_forward_shapes_and_instance_independence(kind):
    cfg = toy.ToyConfig(n_features=6, d_hidden=3, n_instances=2, kind=kind)
    model = toy.ToyModel(cfg, torch.tensor([0.5, 0.1]), toy.importances(6, 0.9, 2),
                        generator=torch.Generator().manual_seed(0))
    x = model.sample(64, torch.Generator().manual_seed(1))
    assert model(x).shape == (2, 64, 6)
    per = model.loss(x, per_instance=True)
    assert per.shape == (2,) and torch.allclose(per.sum(), model.loss(x))
    # the gradient of instance 0 does not depend on instance 1's weights
    model.loss(x).backward()
    g0 = model.W_embed.grad[0].clone()
    model.zero_grad()
    with torch.no_grad():
        for p in model.weight_matrices():
            p[1].mul_(3.0)
    model.loss(x).backward()
    assert torch.allclose(model.W_embed.grad[0], g0, atol=1e-6)

def test_abs_model_targets_absolute_value():
    cfg = toy.ToyConfig(n_features=4, d_hidden=8, n_instances=1, kind="abs")
    model = toy.ToyModel(cfg, torch.tensor([0.5]), torch.ones(4))
    x = torch.tensor([[[-0.5, 0.2, 0.0, -1.0]]])
    assert torch.equal(model.target(x), x.abs())

def test_training_reduces_loss():
    cfg = toy.ToyConfig(n_features=6, d_hidden=12, n_instances=2, kind="abs")
    model = toy.ToyModel(cfg, torch.tensor([0.3, 0.3]), toy.importances(6, 0.9, 2),
                        generator=torch.Generator().manual_seed(0))
    before = toy.evaluate_loss(model)
    hist = toy.train(model, toy.ToyTrainConfig(steps=200, batch_size=128, lr=1e-2), torch.Generator().manual_seed(1))
    after = toy.evaluate_loss(model)
    assert bool((after < 0.5 * before).all()), (before, after)
    assert len(hist) >= 100

def test_weight_sparse_training_per_instance_levels():
    cfg = toy.ToyConfig(n_features=10, d_hidden=4, n_instances=4)
    tc = toy.ToyTrainConfig(steps=200, batch_size=128, lr=1e-2, weight_sparsity=(1.0, 1.0, 0.25, 0.1))
    model = toy.train_new(cfg, torch.full((4,), 0.1), toy.importances(10, 0.9, 4), tc, seed=0)
    nz = (model.W.detach() != 0).float().mean(dim=(1, 2))
    assert nz.tolist() == pytest.approx([1.0, 1.0, 0.25, 0.1])
    assert float(model.b_final.detach().ne(0).float().mean()) > 0.5  # biases are not constrained by default
    rows = toy.summarize(model)
    assert len(rows) == 4 and rows[3]["weight_nonzero_fraction"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="entries"):
        toy.train(model, toy.ToyTrainConfig(steps=1, weight_sparsity=(1.0, 0.5)))

def test_sparsify_bias_and_abs_matrices():
    cfg = toy.ToyConfig(n_features=6, d_hidden=4, n_instances=2, kind="abs")
    tc = toy.ToyTrainConfig(steps=60, batch_size=64, lr=1e-2, weight_sparsity=0.25, sparsify_bias=True,
                        anneal_end=0.3)
    model = toy.train_new(cfg, torch.full((2,), 0.3), toy.importances(6, 1.0, 2), tc, seed=1)
    for p in (model.W_in, model.W_out):
        assert (p.detach() != 0).float().mean(dim=(1, 2)).tolist() == pytest.approx([0.25, 0.25])
    assert (model.b_final.detach() != 0).float().sum(1).tolist() == [2.0, 2.0]  # ceil(0.25 * 6)

def test_best_of_replicates_picks_lowest_loss_per_setting():
    cfg = toy.ToyConfig(n_features=4, d_hidden=2, n_instances=6)
    model = toy.ToyModel(cfg, torch.full((6,), 0.5), toy.importances(4, 1.0, 6),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.W.zero_()
        model.W[1] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])  # better than zero weights
        model.W[5] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    assert toy.best_of_replicates(model, 3).tolist() == [1, 5]


def test_training_works_with_autograd_turned_off_by_the_caller():
    cfg = toy.ToyConfig(n_features=4, d_hidden=2, n_instances=1)
    model = toy.ToyModel(cfg, torch.tensor([0.5]), torch.ones(4), generator=torch.Generator().manual_seed(0))
    before = model.W.detach().clone()
    with torch.no_grad():
        hist = toy.train(model, toy.ToyTrainConfig(steps=200, batch_size=64, lr=1e-2))
    assert not torch.equal(before, model.W.detach()), "the weights never moved: no gradient reached them"
    assert hist[-1] < hist[0], hist  # and the loss fell


def test_train_new_caches_by_everything_that_decides_the_weights(tmp_path, monkeypatch):
    from course_lib.toy import model as toy_model

    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=2)
    tc = toy.ToyTrainConfig(steps=30, batch_size=64)
    args = (cfg, torch.tensor([1.0, 0.1]), toy.importances(5, 0.9, 2), tc)
    first = toy.train_new(*args, seed=3)
    calls = []
    real = toy_model._fresh
    monkeypatch.setattr(toy_model, "_fresh", lambda *a: calls.append(a) or real(*a))
    again = toy.train_new(*args, seed=3)
    assert calls == [] and torch.equal(first.W, again.W) and not again.training  # loaded, not trained
    toy.train_new(*args, seed=4)
    toy.train_new(cfg, torch.tensor([1.0, 0.2]), toy.importances(5, 0.9, 2), tc, seed=3)

    def mine(p, n, b, g):  # a learner's generator: its own source, its own cache entry
        return toy.generate_batch(p, n, b, generator=g)

    toy.train_new(*args, seed=3, data_fn=mine)
    assert len(calls) == 3
    ns: dict = {}
    exec("def anon(p, n, b, g):\n    return toy.generate_batch(p, n, b, generator=g)\n", {"toy": toy}, ns)
    assert cache.code_id(ns["anon"]) is None  # no readable source: never cached
    toy.train_new(*args, seed=3, data_fn=ns["anon"])
    toy.train_new(*args, seed=3, data_fn=ns["anon"])
    assert len(calls) == 5


def test_forward_and_loss_is_the_relu_output_models_forward_and_loss():
    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=3)
    model = toy.ToyModel(cfg, torch.tensor([1.0, 0.3, 0.1]), toy.importances(5, 0.9, 3),
                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_final.normal_(generator=torch.Generator().manual_seed(1))  # nonzero bias, some negative
    x = model.sample(64, torch.Generator().manual_seed(2))
    x_hat, loss = toy.forward_and_loss(model.W, model.b_final, model.importance, x)
    assert x_hat.shape == (3, 64, 5) and loss.shape == (3,)
    assert torch.equal(x_hat, model(x)) and torch.equal(loss, model.loss(x, per_instance=True))
    assert bool((x_hat >= 0).all())
    _, zero = toy.forward_and_loss(torch.zeros_like(model.W), torch.zeros_like(model.b_final), model.importance, x)
    expected = (x.pow(2) * model.importance.unsqueeze(1)).sum(-1).mean(-1)  # W = 0, b = 0: x' = 0
    assert torch.allclose(zero, expected)
