"""course_lib.sae.training: decoder constraint, recovery of planted directions, the cache key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import sae

from .helpers import perturbed_sae as _sae


def test_decoder_unit_norm_and_tangent_gradient_after_steps():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2048, 16, generator=g) * 3 + 1
    batches = iter(data.split(128))
    for kind in ("topk", "relu"):
        cfg = sae.SAEConfig(d_in=16, n_latents=48, k=4, kind=kind)
        tc = sae.SAETrainConfig(n_tokens=2048, batch_size=128, lr=1e-2, log_every=1)
        batches = iter(data.split(128))
        m, hist = sae.train_sae(cfg, tc, batches, data[:512], progress=False)
        assert torch.allclose(m.W_dec.norm(dim=1), torch.ones(48), atol=1e-5)
        assert len(hist.nmse) == 16 and hist.nmse[-1] < hist.nmse[0]
    m = _sae()
    m.W_dec.grad = torch.randn_like(m.W_dec)
    m.remove_parallel_grad_()
    assert (m.W_dec.grad * m.W_dec).sum(1).abs().max() < 1e-5

def test_recovers_planted_sparse_directions(tmp_path):
    """Data = sparse non-negative combinations of 32 unit directions in 24-d: the SAE finds them.

    The data's generator is NOT seeded like the SAE's (train seed 0): both draw ``randn`` first, so with
    equal seeds the SAE's initial decoder would already hold the true directions."""
    g = torch.Generator().manual_seed(1234)
    d, n_true, n = 24, 32, 20_000
    true = torch.randn(n_true, d, generator=g)
    true /= true.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, n_true)
    active = torch.rand(n, n_true, generator=g) < 3.0 / n_true
    codes[active] = 1.0 + torch.rand(int(active.sum()), generator=g)
    data = codes @ true + 0.01 * torch.randn(n, d, generator=g)
    store = sae.write_store(tmp_path / "synth", data, shard_tokens=4096)
    cfg = sae.SAEConfig(d_in=d, n_latents=64, k=4, dead_tokens=4000, aux_k=12)
    tc = sae.SAETrainConfig(n_tokens=80_000, batch_size=256, lr=1e-2, buffer_tokens=8192)
    m, _ = sae.train_on_store(store, cfg, tc, progress=False)
    cos = true @ m.W_dec.detach().t()  # decoder rows are unit norm
    best = cos.max(dim=1).values
    assert (best > 0.9).float().mean() >= 0.8, best

def test_train_config_is_frozen():
    tc = sae.SAETrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tc.lr = 1.0  # type: ignore[misc]
