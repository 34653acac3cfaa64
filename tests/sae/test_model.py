"""course_lib.sae.model: TopK sparsity, config checks, AuxK, the geometric median."""

from __future__ import annotations

import pytest
import torch

from course_lib import sae
from course_lib.sae.model import SAEConfig, SparseAutoencoder, nmse, relu_loss

from .helpers import perturbed_sae as _sae


def test_topk_keeps_exactly_k():
    m = _sae(k=5)
    with torch.no_grad():
        m.b_enc.fill_(100.0)  # every pre-activation positive: exactly k survive
    z = m.encode(torch.randn(50, 16))
    assert z.shape == (50, 64)
    assert ((z > 0).sum(1) == 5).all()
    m2 = _sae(k=5)
    z2 = m2.encode(torch.randn(50, 16))
    assert ((z2 > 0).sum(1) <= 5).all()

def test_config_validation():
    with pytest.raises(ValueError, match="valid values"):
        sae.SAEConfig(d_in=4, n_latents=8, kind="gated")
    with pytest.raises(ValueError):
        sae.SAEConfig(d_in=4, n_latents=8, k=9)

def test_auxk_zero_without_dead_positive_with_dead():
    m = _sae()
    xn = torch.randn(32, 16)
    _, none = sae.topk_loss(m, xn, torch.zeros(64, dtype=torch.bool))
    assert float(none["auxk"]) == 0.0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::2] = True
    _, some = sae.topk_loss(m, xn, dead)
    assert float(some["auxk"]) > 0.0
    _, fast = sae.topk_grads_fast(m, xn, dead)
    assert torch.allclose(fast["auxk"], some["auxk"], rtol=1e-5)

def test_geometric_median():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [100.0, 100.0]])
    med = sae.geometric_median(pts)
    assert med.norm() < 2.0  # the outlier barely moves it (the mean would be at ~20)


def test_relu_loss_matches_the_textbook_formula_in_value_and_every_gradient():
    """relu_loss folds b_pre into the encoder bias (one GEMM fewer); loss and all four gradients must equal
    those of relu(W_enc (x - b_pre) + b_enc) written out directly."""
    torch.manual_seed(0)
    cfg = SAEConfig(d_in=12, n_latents=40, k=4, kind="relu", l1_coef=0.03)
    a = SparseAutoencoder(cfg)
    with torch.no_grad():
        a.b_pre.normal_()
        a.b_enc.normal_(std=0.1)
    x = torch.randn(64, 12)

    loss, _ = relu_loss(a, x)
    got = torch.autograd.grad(loss, list(a.parameters()))
    z = torch.relu((x - a.b_pre) @ a.W_enc.T + a.b_enc)
    ref = nmse(x, z @ a.W_dec + a.b_pre) + cfg.l1_coef * z.sum(1).mean()
    want = torch.autograd.grad(ref, list(a.parameters()))
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
    for (name, _), g, w in zip(a.named_parameters(), got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6), name
