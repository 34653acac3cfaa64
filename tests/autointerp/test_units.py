"""course_lib.autointerp.units: token sources (known answers) and the choice of alive units."""

from __future__ import annotations

import torch

from course_lib.autointerp import units


def test_token_source_fires_exactly_on_its_token():
    w = torch.tensor([[1, 7, 3, 7], [1, 2, 2, 2]])
    src = units.TokenSource.for_tokens([7, 2])
    a = src(w)
    assert a.shape == (2, 4, 2)
    assert a[..., 0].tolist() == [[0, 1, 0, 1], [0, 0, 0, 0]]
    assert a[1, 1:, 1].tolist() == [1, 1, 1] and a[:, 0].abs().sum() == 0  # BOS position zeroed


def test_choose_alive_units_skips_dead_and_always_on():
    a = torch.zeros(4, 5, 6)  # [windows, pos, units]; position 0 (BOS) is ignored
    a[:, 1, 1] = 1.0  # unit 1 fires on 1 of 4 positions: alive
    a[0, 2, 4] = 2.0  # unit 4 fires once in 16 positions: alive
    a[:, 1:, 2] = 1.0  # unit 2 is always on (above max_frac): not chosen
    a[:, 0, 3] = 5.0  # unit 3 fires only at BOS: dead
    picked = units.choose_alive_units(a, 3, torch.Generator().manual_seed(0))
    assert picked == [1, 4]  # every alive unit, sorted; no dead or always-on unit
    one = units.choose_alive_units(a, 1, torch.Generator().manual_seed(0))
    assert len(one) == 1 and one[0] in (1, 4)
