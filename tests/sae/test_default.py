"""course_lib.sae.default: the course's default SAE is built once, then loaded without the model."""

from __future__ import annotations

import dataclasses

import torch

from course_lib import lm, sae


def test_default_sae_contract_and_cache(monkeypatch, smollm2):
    """load_or_train_default_sae: harvest + train once, then load from the cache without the model."""
    hc, sc, tc = sae.default_configs("smoke")
    tiny = (dataclasses.replace(hc, n_tokens=256, seq_len=32, batch_size=8, shard_tokens=128),
            dataclasses.replace(sc, n_latents=64, k=4, dead_tokens=512),
            dataclasses.replace(tc, n_tokens=1024, batch_size=128, buffer_tokens=256))
    monkeypatch.setattr(sae.default, "default_configs", lambda profile, seed=0: tiny)
    first = sae.load_or_train_default_sae("smoke", seed=0, model=smollm2)
    assert isinstance(first, sae.DefaultSAE)
    assert first.hook_name == "blocks.15.hook_resid_post" and first.layer == 15
    assert first.model_name == "smollm2" and first.n_latents == 64
    x = sae.ActivationStore(first.store_dir).head(10)
    z = first.sae.encode(x)
    assert z.shape == (10, 64) and ((z > 0).sum(-1) <= 4).all()
    assert first.sae.decode(z).shape == (10, 576)

    def no_model(*a, **k):
        raise AssertionError("the cached SAE must load without the model")

    monkeypatch.setattr(lm, "load_lm", no_model)
    again = sae.load_or_train_default_sae("smoke", seed=0)
    assert torch.allclose(again.sae.W_dec, first.sae.W_dec)
    # the key names the configs (computed without harvesting or training), the digest the weights
    assert again.key == first.key == sae.default.default_sae_key("smoke", seed=0)
    assert again.digest == first.digest and len(first.digest) == 20
    monkeypatch.setattr(sae.default, "default_configs",
                        lambda profile, seed=0: (tiny[0], dataclasses.replace(tiny[1], k=8), tiny[2]))
    assert sae.default.default_sae_key("smoke", seed=0) != first.key  # another SAE config: another key
