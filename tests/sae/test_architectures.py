"""course_lib.sae.model: the JumpReLU and BatchTopK kinds (losses, straight-through gradients, thresholds,
training, SAELens round trip) against formulas written out here."""

from __future__ import annotations

import pytest
import torch

from course_lib import sae
from course_lib.sae.model import SAEConfig, SparseAutoencoder, nmse

from .helpers import perturbed_sae


def _sparse_data(n=4096, d=16, n_feat=48, p=0.04, seed=0) -> torch.Tensor:
    """Activations made of sparse non-negative features along random unit directions ``[n, d]``."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_feat, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    on = torch.rand(n, n_feat, generator=g) < p
    return (on * torch.rand(n, n_feat, generator=g)) @ dirs


def _train(cfg: SAEConfig, x: torch.Tensor, steps: int = 300, batch: int = 256, lr: float = 3e-3):
    a = SparseAutoencoder(cfg, torch.Generator().manual_seed(0))
    a.init_from_sample(x[:1024])
    opt = torch.optim.Adam(a.parameters(), lr=lr)
    since = torch.zeros(cfg.n_latents, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        sae.train_step(a, opt, x[torch.randint(0, x.shape[0], (batch,), generator=g)], since, fast=False)
    return a.eval()


def test_jumprelu_forward_and_straight_through_gradients_match_the_formulas():
    m = perturbed_sae(kind="jumprelu", jump_bandwidth=0.5)
    with torch.no_grad():
        m.threshold.copy_(torch.rand(64, generator=torch.Generator().manual_seed(4)))
    xn = torch.randn(32, 16, generator=torch.Generator().manual_seed(5))
    loss, stats = sae.jumprelu_loss(m, xn)
    pre = (xn - m.b_pre) @ m.W_enc.T + m.b_enc
    th, eps = m.threshold.detach(), m.cfg.jump_bandwidth
    z = pre * (pre > th)
    want = nmse(xn, z @ m.W_dec + m.b_pre) + m.cfg.l0_coef * (pre > th).float().sum(1).mean()
    assert torch.allclose(loss, want, rtol=1e-5)
    assert float(stats["l0"]) == pytest.approx(float((z != 0).sum(1).float().mean()))
    (g_th,) = torch.autograd.grad(loss, [m.threshold])
    # d loss/d theta_i = sum_b dL/dz_bi * (-(theta_i/eps) K) + l0_coef/B * sum_b (-(1/eps) K)
    pre_d = pre.detach().requires_grad_(False)
    z_leaf = (pre_d * (pre_d > th)).requires_grad_(True)
    (g_z,) = torch.autograd.grad(nmse(xn, z_leaf @ m.W_dec.detach() + m.b_pre.detach()), [z_leaf])
    k = ((pre_d - th).abs() < eps / 2).float()
    manual = (g_z * -(th / eps) * k).sum(0) + m.cfg.l0_coef / xn.shape[0] * (-(k / eps)).sum(0)
    assert torch.allclose(g_th, manual, rtol=1e-4, atol=1e-7)
    assert g_th.abs().sum() > 0  # the kernel caught some pre-activations: the check is not vacuous


def test_jumprelu_l0_penalty_trades_sparsity_for_reconstruction():
    x = _sparse_data()
    l0s, errs = [], []
    for coef in (1e-4, 1e-2):
        a = _train(SAEConfig(d_in=16, n_latents=64, kind="jumprelu", l0_coef=coef, jump_bandwidth=0.05,
                             jump_init_threshold=0.01), x)  # low start: the penalty sets L0
        with torch.no_grad():
            z = a.encode(x)
            l0s.append(float((z != 0).sum(1).float().mean()))
            errs.append(float(nmse(x, a.decode(z))))
        assert float(a.threshold.detach().min()) >= 0.0  # projected after every step
    assert l0s[1] < 0.7 * l0s[0]  # a stronger penalty: fewer active latents...
    assert errs[1] > errs[0]  # ...and a worse reconstruction
    assert errs[0] < 0.3  # and the weak penalty reconstructs well


def test_batchtopk_keeps_k_per_token_on_average_and_its_threshold_does_at_inference():
    m = perturbed_sae(kind="batchtopk", k=4)
    xn = torch.randn(64, 16, generator=torch.Generator().manual_seed(6))
    loss, stats = sae.batchtopk_loss(m, xn)
    pre = m.pre_acts(xn)
    r = torch.relu(pre)
    kept = r.flatten().topk(4 * 64).values
    assert float(stats["min_selected"]) == pytest.approx(float(kept[kept > 0].min()))
    assert float(stats["l0"]) == pytest.approx(float((kept > 0).sum()) / 64)
    per_token = (r >= kept.min()).sum(1)
    assert per_token.max() > per_token.min()  # tokens differ: it is not per-token TopK

    x = _sparse_data()
    a = _train(SAEConfig(d_in=16, n_latents=64, kind="batchtopk", k=4), x, steps=400)
    assert float(a.threshold) > 0.0  # moved from 0 by the moving average
    with torch.no_grad():
        z = a.encode(x)
    l0 = float((z > 0).sum(1).float().mean())
    assert 2.0 < l0 < 8.0, l0  # a single threshold gives about k per token without a batch
    assert float(nmse(x, a.decode(z))) < 0.5


def test_batchtopk_loss_equals_topk_loss_when_every_token_has_the_same_top_values():
    """Identical tokens: the batch's top k*B are each token's top k, so the two losses coincide."""
    m = perturbed_sae(kind="batchtopk", k=3)
    t = perturbed_sae(kind="topk", k=3)
    xn = torch.randn(1, 16).repeat(8, 1) + 1e-4 * torch.arange(8.0)[:, None]
    lb, _ = sae.batchtopk_loss(m, xn)
    lt, _ = sae.topk_loss(t, xn)
    assert torch.allclose(lb, lt, rtol=1e-4)


@pytest.mark.parametrize("kind", ["jumprelu", "batchtopk"])
def test_new_kinds_round_trip_through_the_saelens_layout(tmp_path, kind):
    m = perturbed_sae(kind=kind)
    with torch.no_grad():
        if kind == "jumprelu":
            m.threshold.copy_(torch.rand(64, generator=torch.Generator().manual_seed(7)))
        else:
            m.threshold.fill_(0.4)
    folder = sae.save_saelens(m, tmp_path / kind, hook_name="h", model_name="m")
    back = sae.load_saelens(folder)
    assert back.cfg.kind == kind
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert torch.allclose(back.encode(x), m.encode(x), atol=1e-5)
        assert torch.allclose(back(x), m(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["jumprelu", "batchtopk"])
def test_folded_b_pre_gives_the_textbook_gradients(kind):
    """Both losses compute W_enc (x - b_pre) + b_enc as W_enc x + (b_enc - W_enc b_pre): same values and
    gradients as the formula written out, for every parameter."""
    m = perturbed_sae(kind=kind, k=4)
    xn = torch.randn(48, 16, generator=torch.Generator().manual_seed(9))
    loss_fn = sae.jumprelu_loss if kind == "jumprelu" else sae.batchtopk_loss
    loss, _ = loss_fn(m, xn)
    got = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
    pre = m.pre_acts(xn)  # the unfused formula
    if kind == "batchtopk":
        vals, idx = torch.relu(pre).flatten().topk(4 * 48)
        z = torch.zeros(pre.numel()).scatter(0, idx, vals).view_as(pre)
        ref = nmse(xn, z @ m.W_dec + m.b_pre)
    else:
        from course_lib.sae.model import _JumpReLU, _Step
        z = _JumpReLU.apply(pre, m.threshold, m.cfg.jump_bandwidth)
        ref = nmse(xn, z @ m.W_dec + m.b_pre) + m.cfg.l0_coef * _Step.apply(
            pre, m.threshold, m.cfg.jump_bandwidth).sum(1).mean()
    want = torch.autograd.grad(ref, list(m.parameters()), allow_unused=True)
    assert torch.allclose(loss, ref, rtol=1e-5)
    for (name, _), g, w in zip(m.named_parameters(), got, want):
        if w is None:
            assert g is None or float(g.abs().max()) == 0.0, name
        else:
            assert torch.allclose(g, w, rtol=1e-4, atol=1e-6), name


def test_one_row_per_architecture_names_the_loss_second_term():
    from course_lib.sae.model import ARCHITECTURES, KINDS, SAEConfig, SparseAutoencoder, sae_loss

    assert set(ARCHITECTURES) == set(KINDS)
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    for kind, arch in ARCHITECTURES.items():
        a = SparseAutoencoder(SAEConfig(d_in=8, n_latents=16, k=4, kind=kind))
        a.init_from_sample(x)
        _, stats = sae_loss(a, x * a.scale, torch.ones(16, dtype=torch.bool))
        assert arch.penalty in stats and "aux" not in stats, kind
        z = a.encode(x)
        assert z.shape == (64, 16) and (z >= 0).all() or kind == "jumprelu"
        assert hasattr(a, "threshold") == (arch.threshold != "none")
