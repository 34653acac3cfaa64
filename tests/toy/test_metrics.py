"""course_lib.toy.metrics on known geometries (polygons, antipodal pairs, phases)."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import toy


def polygon(n: int, scale: float = 1.0) -> torch.Tensor:
    """n unit vectors at equal angles in 2-D, as W [1, 2, n]."""
    ang = torch.arange(n) * 2 * math.pi / n
    return (scale * torch.stack([ang.cos(), ang.sin()])).unsqueeze(0)

def test_metrics_on_known_geometry():
    pent = polygon(5)
    assert torch.allclose(toy.dimensions_per_feature(pent), torch.tensor([0.4]), atol=1e-5)
    assert torch.allclose(toy.feature_dimensionality(pent), torch.full((1, 5), 0.4), atol=1e-4)
    big = polygon(5, scale=1.2)  # stretched pentagon: clipped D* stays 0.4, the paper's raw one drops
    assert torch.allclose(toy.dimensions_per_feature(big), torch.tensor([0.4]), atol=1e-5)
    assert float(toy.dimensions_per_feature(big, clip=False)[0]) == pytest.approx(0.4 / 1.44, rel=1e-4)
    ortho = torch.eye(3)[:, :3].unsqueeze(0)
    assert float(toy.dimensions_per_feature(ortho)[0]) == pytest.approx(1.0)
    assert float(toy.interference(ortho)[0]) == pytest.approx(0.0, abs=1e-6)
    anti = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])  # a pair, a lone feature, a dead one
    assert float(toy.features_represented(anti)[0]) == 3
    assert torch.allclose(toy.feature_dimensionality(anti)[0, :3], torch.tensor([0.5, 0.5, 1.0]), atol=1e-4)
    assert float(toy.antipodal_pairs(anti)[0]) == 1
    assert float(toy.features_per_neuron(anti)[0]) == pytest.approx(1.5)  # neuron 0: 2 features, neuron 1: 1
    assert float(toy.polysemantic_fraction(anti)[0]) == pytest.approx(0.5)
    assert torch.allclose(toy.superposition(anti)[0, :3], torch.tensor([1.0, 1.0, 0.0]), atol=1e-5)

def test_phase_grid_and_classification():
    p, imp = toy.phase_grid([0.0, 0.9], [0.5, 2.0])
    assert torch.allclose(p, torch.tensor([1.0, 1.0, 0.1, 0.1]))
    assert torch.allclose(imp[:, 1], torch.tensor([0.5, 2.0, 0.5, 2.0]))
    W = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]], [[0.1, 0.1]]])
    assert toy.classify_phase(W).tolist() == [0, 1, 2, 0]

def test_five_two_known_answers():
    """Very sparse -> pentagon (D* close to 0.4); dense -> only ~2 features represented."""
    torch.manual_seed(0)
    p = torch.tensor([0.02] * 4 + [1.0] * 4)
    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=8)
    tc = toy.ToyTrainConfig(steps=1500, batch_size=512, lr=1e-2)
    model = toy.train_new(cfg, p, toy.importances(5, 0.9, 8), tc, seed=0)
    W = model.W.detach()
    sparse_dpf = toy.dimensions_per_feature(W[:4])
    assert float(sparse_dpf.median()) == pytest.approx(0.4, abs=0.05), sparse_dpf
    assert float(toy.features_represented(W[:4]).max()) == 5
    dense_rep = toy.features_represented(W[4:])
    assert float(dense_rep.median()) == 2, dense_rep
    assert float(toy.dimensions_per_feature(W[4:]).median()) == pytest.approx(1.0, abs=0.1)


def test_headline_reads_the_pentagon_and_the_antipodal_plateau():
    from course_lib.toy.metrics import headline

    rows = headline({"five_two_dims_per_feature_sparsest": 0.4012, "big_sweep_instances_near_one_half": 3})
    assert [r.value for r in rows] == ["0.401", "3"] and all(r.gates_passed for r in rows)
    assert [r.value for r in headline({})] == [None, None]


def test_dead_dimensions_counts_the_rows_without_a_nonzero_weight():
    W = torch.ones(2, 3, 4)
    W[0, 1] = 0.0
    W[1, :2] = 0.0
    W[1, 2, 3] = 0.0  # a zero inside a live row does not count
    assert toy.dead_dimensions(W).tolist() == [1.0, 2.0]
