"""TopK / ReLU SAEs: sparsity, decoder constraint, AuxK, fast gradients, recovery, SAELens layout."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from course_lib import activations, sae, saelens_io


def _sae(d=16, n=64, k=4, **kw) -> sae.SparseAutoencoder:
    m = sae.SparseAutoencoder(sae.SAEConfig(d_in=d, n_latents=n, k=k, **kw), torch.Generator().manual_seed(0))
    with torch.no_grad():  # move away from the symmetric init so that every term is non-trivial
        m.W_enc.add_(0.3 * torch.randn(m.W_enc.shape, generator=torch.Generator().manual_seed(1)))
        m.b_enc.normal_(generator=torch.Generator().manual_seed(2))
        m.b_pre.normal_(generator=torch.Generator().manual_seed(3))
        m.scale.fill_(0.5)
    return m


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


def test_decoder_unit_norm_and_tangent_gradient_after_steps():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2048, 16, generator=g) * 3 + 1
    batches = iter(data.split(128))
    for kind in ("topk", "relu"):
        cfg = sae.SAEConfig(d_in=16, n_latents=48, k=4, kind=kind)
        tc = sae.TrainConfig(n_tokens=2048, batch_size=128, lr=1e-2, log_every=1)
        batches = iter(data.split(128))
        m, hist = sae.train_sae(cfg, tc, batches, data[:512], progress=False)
        assert torch.allclose(m.W_dec.norm(dim=1), torch.ones(48), atol=1e-5)
        assert len(hist.nmse) == 16 and hist.nmse[-1] < hist.nmse[0]
    m = _sae()
    m.W_dec.grad = torch.randn_like(m.W_dec)
    m.remove_parallel_grad_()
    assert (m.W_dec.grad * m.W_dec).sum(1).abs().max() < 1e-5


def test_auxk_zero_without_dead_positive_with_dead():
    m = _sae()
    xn = torch.randn(32, 16)
    _, none = sae.topk_loss(m, xn, torch.zeros(64, dtype=torch.bool))
    assert float(none["aux"]) == 0.0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::2] = True
    _, some = sae.topk_loss(m, xn, dead)
    assert float(some["aux"]) > 0.0
    _, fast = sae.topk_grads_fast(m, xn, dead)
    assert torch.allclose(fast["aux"], some["aux"], rtol=1e-5)


@pytest.mark.parametrize("csr", [True, False])
@pytest.mark.parametrize("with_dead", [False, True])
def test_fast_step_gradients_equal_autograd(with_dead, csr):
    """Both kernel sets (CSR: CPU default; gather/index_add: the CUDA default) match autograd."""
    m = _sae(d=24, n=96, k=6, aux_k=10)
    xn = torch.randn(40, 24, generator=torch.Generator().manual_seed(5)) * 2
    dead = torch.zeros(96, dtype=torch.bool)
    if with_dead:
        dead[torch.randperm(96, generator=torch.Generator().manual_seed(6))[:30]] = True
    ref, ref_stats = sae.topk_grads_autograd(m, xn, dead)
    got, got_stats = sae.topk_grads_fast(m, xn, dead, csr=csr)
    assert set(ref) == set(got) == {"W_enc", "b_enc", "W_dec", "b_pre"}
    for name in ref:
        assert torch.allclose(got[name], ref[name], atol=1e-5, rtol=1e-4), name
        assert ref[name].abs().max() > 0, name
    assert torch.allclose(got_stats["nmse"], ref_stats["nmse"])
    assert torch.equal(got_stats["fired"], ref_stats["fired"])
    # only latents selected by some token (or AuxK) get gradient
    assert (got["W_enc"].abs().sum(1) > 0).sum() <= 40 * 6 + (40 * 10 if with_dead else 0)


def test_geometric_median():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [100.0, 100.0]])
    med = sae.geometric_median(pts)
    assert med.norm() < 2.0  # the outlier barely moves it (the mean would be at ~20)


def test_recovers_planted_sparse_directions(tmp_path):
    """Data = sparse non-negative combinations of 32 unit directions in 24-d: the SAE finds them."""
    g = torch.Generator().manual_seed(0)
    d, n_true, n = 24, 32, 20_000
    true = torch.randn(n_true, d, generator=g)
    true /= true.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, n_true)
    active = torch.rand(n, n_true, generator=g) < 3.0 / n_true
    codes[active] = 1.0 + torch.rand(int(active.sum()), generator=g)
    data = codes @ true + 0.01 * torch.randn(n, d, generator=g)
    store = activations.write_store(tmp_path / "synth", data, shard_tokens=4096)
    cfg = sae.SAEConfig(d_in=d, n_latents=64, k=4, dead_tokens=4000, aux_k=12)
    tc = sae.TrainConfig(n_tokens=80_000, batch_size=512, lr=3e-3, buffer_tokens=8192)
    m, _ = sae.train_on_store(store, cfg, tc, progress=False)
    cos = true @ m.W_dec.detach().t()  # decoder rows are unit norm
    best = cos.max(dim=1).values
    assert (best > 0.9).float().mean() >= 0.8, best


def test_saelens_round_trip(tmp_path):
    for kind in ("topk", "relu"):
        m = _sae(kind=kind)
        m.normalise_decoder_()
        folder = saelens_io.save_saelens(m, tmp_path / kind, hook_name="blocks.3.hook_resid_post", model_name="x")
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["d_in"] == 16 and cfg["d_sae"] == 64
        assert cfg["architecture"] == ("topk" if kind == "topk" else "standard")
        assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
        assert (folder / "sae_weights.safetensors").exists()
        back = saelens_io.load_saelens(folder)
        assert back.cfg == m.cfg
        x = torch.randn(20, 16) * 4
        with torch.no_grad():
            assert torch.allclose(back(x), m(x), atol=1e-4)
            assert torch.allclose(back.encode(x), m.encode(x), atol=1e-4)
            assert torch.allclose(back.scale, m.scale)


def test_train_config_is_frozen():
    tc = sae.TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tc.lr = 1.0  # type: ignore[misc]


def test_default_sae_contract_and_cache(monkeypatch, smollm2):
    """load_or_train_default_sae: harvest + train once, then load from the cache without the model."""
    from course_lib import lm

    hc, sc, tc = sae.default_configs("smoke")
    tiny = (dataclasses.replace(hc, n_tokens=256, seq_len=32, batch_size=8, shard_tokens=128),
            dataclasses.replace(sc, n_latents=64, k=4, dead_tokens=512),
            dataclasses.replace(tc, n_tokens=1024, batch_size=128, buffer_tokens=256))
    monkeypatch.setattr(sae, "default_configs", lambda profile, seed=0: tiny)
    first = sae.load_or_train_default_sae("smoke", seed=0, model=smollm2)
    assert isinstance(first, sae.DefaultSAE)
    assert first.hook_name == "blocks.15.hook_resid_post" and first.layer == 15
    assert first.model_name == "smollm2" and first.n_latents == 64
    x = activations.ActivationStore(first.store_dir).head(10)
    z = first.sae.encode(x)
    assert z.shape == (10, 64) and ((z > 0).sum(-1) <= 4).all()
    assert first.sae.decode(z).shape == (10, 576)

    def no_model(*a, **k):
        raise AssertionError("the cached SAE must load without the model")

    monkeypatch.setattr(lm, "load_lm", no_model)
    again = sae.load_or_train_default_sae("smoke", seed=0)
    assert torch.allclose(again.sae.W_dec, first.sae.W_dec)
