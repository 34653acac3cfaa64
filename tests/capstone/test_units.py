"""Unit sets on real models: sites, harvest shapes, polarity, alive units, random directions, names."""

from __future__ import annotations

import torch

from course_lib.capstone import units


def test_orient_reads_the_strong_tail_not_the_mean():
    a = torch.randn(5000) * 0.1 + 0.2
    a[:30] -= 5
    assert units.orient(a) == -1
    assert units.orient(-a) == 1
    assert units.orient(a.reshape(50, 100)) == -1


def test_harvest_and_choose_on_a_sparse_model(reference):
    _, models, _, _, windows = reference
    m = models["sparse0.4-d64-16k-s0-mix5"]
    nh, ch = units.neuron_hook(m), units.channel_hook(m)
    h = units.harvest(m, windows["select"], [nh, ch], batch_size=16)
    assert h[nh].shape == (48, 64, m.cfg.d_mlp) and h[ch].shape == (48, 64, m.cfg.d_model)
    g = torch.Generator().manual_seed(0)
    neurons = units.choose("sparse neuron", "m", nh, h[nh], 5, g, signed=False)
    assert len(neurons.ids) == 5 and set(neurons.signs) == {1}
    assert torch.equal(neurons.acts(h[nh]), h[nh][..., list(neurons.ids)])
    chans = units.choose("sparse channel", "m", ch, h[ch], 64, g, signed=True)
    a = chans.acts(h[ch])[:, 1:]
    # every chosen channel is turned so that its strong tail is positive
    assert all(units.orient(a[..., j]) == 1 for j in range(a.shape[-1]))
    assert any(s < 0 for s in chans.signs) and any(n.endswith("-") for n in chans.names())
    d = units.random_directions(m.cfg.d_model, 4, g)
    assert torch.allclose(d.norm(dim=0), torch.ones(4))
    rnd = units.choose("sparse random", "m", ch, h[ch], 4, g, signed=True, directions=d)
    assert rnd.acts(h[ch]).shape == (48, 64, 4)
