"""The TopK SAE on a dense model's channels: trains, reconstructs, caches."""

from __future__ import annotations

import torch

from course_lib.capstone import dictionary, units
from course_lib.capstone.study import model_key


def test_sae_on_dense_channels_trains_and_is_cached(reference):
    _, models, _, _, windows = reference
    m = models["dense-d16-16k-s0-mix5"]
    ch = units.channel_hook(m)
    x = units.harvest(m, windows["train"], [ch])[ch][:, 1:].reshape(-1, m.cfg.d_model)
    cfg = dictionary.DictionaryConfig(expansion=4, k=4, n_tokens=20_000, batch_size=256)
    sae, stats = dictionary.load_or_train_dictionary(model_key("d16", m), x, cfg)
    assert sae.cfg.n_latents == 64 and stats["nmse"] < 0.8 and stats["l0"] <= 4
    z = sae.encode(x[:10])
    assert z.shape == (10, 64) and int((z > 0).sum(-1).max()) <= 4
    again, stats2 = dictionary.load_or_train_dictionary(model_key("d16", m), x, cfg)  # read back
    assert stats2 == stats and torch.equal(again.W_dec, sae.W_dec)
