"""Tests of course_lib.toy_models (+ toy_plots smoke): tiny configs, fixed seeds."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from course_lib import toy_models as tm

matplotlib.use("Agg")


def polygon(n: int, scale: float = 1.0) -> torch.Tensor:
    """n unit vectors at equal angles in 2-D, as W [1, 2, n]."""
    ang = torch.arange(n) * 2 * math.pi / n
    return (scale * torch.stack([ang.cos(), ang.sin()])).unsqueeze(0)


# --------------------------------------------------------------------------- data


def test_generate_batch_sparsity_and_range():
    p = torch.tensor([1.0, 0.5, 0.05])
    x = tm.generate_batch(p, 10, 4000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 4000, 10)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    frac = (x != 0).float().mean(dim=(1, 2))
    assert torch.allclose(frac, p, atol=0.01)
    nz = x[1][x[1] != 0]
    assert abs(float(nz.mean()) - 0.5) < 0.02  # uniform on [0, 1] when present
    xs = tm.generate_batch(p, 10, 4000, generator=torch.Generator().manual_seed(0), symmetric=True)
    assert float(xs.min()) < -0.9 and abs(float(xs[0].mean())) < 0.02


def test_config_rejects_unknown_kind():
    with pytest.raises(ValueError, match="relu_output"):
        tm.ToyConfig(kind="gelu")


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize("kind", tm.KINDS)
def test_forward_shapes_and_instance_independence(kind):
    cfg = tm.ToyConfig(n_features=6, d_hidden=3, n_instances=2, kind=kind)
    model = tm.ToyModel(cfg, torch.tensor([0.5, 0.1]), tm.importances(6, 0.9, 2),
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
    cfg = tm.ToyConfig(n_features=4, d_hidden=8, n_instances=1, kind="abs")
    model = tm.ToyModel(cfg, torch.tensor([0.5]), torch.ones(4))
    x = torch.tensor([[[-0.5, 0.2, 0.0, -1.0]]])
    assert torch.equal(model.target(x), x.abs())


# --------------------------------------------------------------------------- metrics (known geometry)


def test_metrics_on_known_geometry():
    pent = polygon(5)
    assert torch.allclose(tm.dimensions_per_feature(pent), torch.tensor([0.4]), atol=1e-5)
    assert torch.allclose(tm.feature_dimensionality(pent), torch.full((1, 5), 0.4), atol=1e-4)
    big = polygon(5, scale=1.2)  # stretched pentagon: clipped D* stays 0.4, the paper's raw one drops
    assert torch.allclose(tm.dimensions_per_feature(big), torch.tensor([0.4]), atol=1e-5)
    assert float(tm.dimensions_per_feature(big, clip=False)[0]) == pytest.approx(0.4 / 1.44, rel=1e-4)
    ortho = torch.eye(3)[:, :3].unsqueeze(0)
    assert float(tm.dimensions_per_feature(ortho)[0]) == pytest.approx(1.0)
    assert float(tm.interference(ortho)[0]) == pytest.approx(0.0, abs=1e-6)
    anti = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])  # a pair, a lone feature, a dead one
    assert float(tm.features_represented(anti)[0]) == 3
    assert torch.allclose(tm.feature_dimensionality(anti)[0, :3], torch.tensor([0.5, 0.5, 1.0]), atol=1e-4)
    assert float(tm.antipodal_pairs(anti)[0]) == 1
    assert float(tm.features_per_neuron(anti)[0]) == pytest.approx(1.5)  # neuron 0: 2 features, neuron 1: 1
    assert float(tm.polysemantic_fraction(anti)[0]) == pytest.approx(0.5)
    assert torch.allclose(tm.superposition(anti)[0, :3], torch.tensor([1.0, 1.0, 0.0]), atol=1e-5)


def test_phase_grid_and_classification():
    p, imp = tm.phase_grid([0.0, 0.9], [0.5, 2.0])
    assert torch.allclose(p, torch.tensor([1.0, 1.0, 0.1, 0.1]))
    assert torch.allclose(imp[:, 1], torch.tensor([0.5, 2.0, 0.5, 2.0]))
    W = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]], [[0.1, 0.1]]])
    assert tm.classify_phase(W).tolist() == [0, 1, 2, 0]


# --------------------------------------------------------------------------- known answers from training


def test_five_two_known_answers():
    """Very sparse -> pentagon (D* close to 0.4); dense -> only ~2 features represented."""
    torch.manual_seed(0)
    p = torch.tensor([0.02] * 4 + [1.0] * 4)
    cfg = tm.ToyConfig(n_features=5, d_hidden=2, n_instances=8)
    tc = tm.TrainConfig(steps=1500, batch_size=512, lr=1e-2)
    model = tm.train_new(cfg, p, tm.importances(5, 0.9, 8), tc, seed=0)
    W = model.W.detach()
    sparse_dpf = tm.dimensions_per_feature(W[:4])
    assert float(sparse_dpf.median()) == pytest.approx(0.4, abs=0.05), sparse_dpf
    assert float(tm.features_represented(W[:4]).max()) == 5
    dense_rep = tm.features_represented(W[4:])
    assert float(dense_rep.median()) == 2, dense_rep
    assert float(tm.dimensions_per_feature(W[4:]).median()) == pytest.approx(1.0, abs=0.1)


def test_training_reduces_loss():
    cfg = tm.ToyConfig(n_features=6, d_hidden=12, n_instances=2, kind="abs")
    model = tm.ToyModel(cfg, torch.tensor([0.3, 0.3]), tm.importances(6, 0.9, 2),
                        generator=torch.Generator().manual_seed(0))
    before = tm.evaluate_loss(model)
    hist = tm.train(model, tm.TrainConfig(steps=200, batch_size=128, lr=1e-2), torch.Generator().manual_seed(1))
    after = tm.evaluate_loss(model)
    assert bool((after < 0.5 * before).all()), (before, after)
    assert len(hist) >= 100


def test_weight_sparse_training_per_instance_levels():
    cfg = tm.ToyConfig(n_features=10, d_hidden=4, n_instances=4)
    tc = tm.TrainConfig(steps=200, batch_size=128, lr=1e-2, weight_sparsity=(1.0, 1.0, 0.25, 0.1))
    model = tm.train_new(cfg, torch.full((4,), 0.1), tm.importances(10, 0.9, 4), tc, seed=0)
    nz = (model.W.detach() != 0).float().mean(dim=(1, 2))
    assert nz.tolist() == pytest.approx([1.0, 1.0, 0.25, 0.1])
    assert float(model.b_final.detach().ne(0).float().mean()) > 0.5  # biases are not constrained by default
    rows = tm.summarize(model)
    assert len(rows) == 4 and rows[3]["weight_nonzero_fraction"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="entries"):
        tm.train(model, tm.TrainConfig(steps=1, weight_sparsity=(1.0, 0.5)))


def test_sparsify_bias_and_abs_matrices():
    cfg = tm.ToyConfig(n_features=6, d_hidden=4, n_instances=2, kind="abs")
    tc = tm.TrainConfig(steps=60, batch_size=64, lr=1e-2, weight_sparsity=0.25, sparsify_bias=True,
                        anneal_end=0.3)
    model = tm.train_new(cfg, torch.full((2,), 0.3), tm.importances(6, 1.0, 2), tc, seed=1)
    for p in (model.W_in, model.W_out):
        assert (p.detach() != 0).float().mean(dim=(1, 2)).tolist() == pytest.approx([0.25, 0.25])
    assert (model.b_final.detach() != 0).float().sum(1).tolist() == [2.0, 2.0]  # ceil(0.25 * 6)


# --------------------------------------------------------------------------- figures


def test_plots_return_figures():
    from matplotlib.figure import Figure

    from course_lib import toy_plots

    g = torch.Generator().manual_seed(0)
    W2 = torch.randn(3, 2, 5, generator=g)
    p = torch.tensor([1.0, 0.3, 0.1])
    W = torch.randn(3, 4, 8, generator=g)
    figs = [
        toy_plots.feature_directions(W2, p, tm.importances(5, 0.9)),
        toy_plots.wtw_grid(W, p),
        toy_plots.dims_per_feature_plot(p, W),
        toy_plots.phase_diagram([0.0, 0.9], [0.5, 2.0], torch.tensor([0, 1, 2, 0])),
        toy_plots.neuron_feature_grid(W, ["a", "b", "c"], "title"),
        toy_plots.weight_sparse_comparison([
            {"kept_fraction": k, "features_represented": 3.0, "features_per_neuron": 1.0,
             "interference": 0.1, "dims_per_feature": 0.5, "loss": 0.1} for k in (1.0, 0.5, 0.5)]),
        toy_plots.widget_view(W[:1], "t"),
    ]
    import matplotlib.pyplot as plt

    for f in figs:
        assert isinstance(f, Figure) and f.axes
        plt.close(f)
    with pytest.raises(ValueError):
        toy_plots.feature_directions(W, p, tm.importances(8, 0.9))


def test_best_of_replicates_picks_lowest_loss_per_setting():
    cfg = tm.ToyConfig(n_features=4, d_hidden=2, n_instances=6)
    model = tm.ToyModel(cfg, torch.full((6,), 0.5), tm.importances(4, 1.0, 6),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.W.zero_()
        model.W[1] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])  # better than zero weights
        model.W[5] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    assert tm.best_of_replicates(model, 3).tolist() == [1, 5]
