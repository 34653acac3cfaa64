"""course_lib.autointerp.units: token sources (known answers) and the choice of alive units."""

from __future__ import annotations

import pytest
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


class _PieceTok:
    """" def" -> 7, "0".."9" -> 20..29, anything else: one id per character (100 + ord)."""

    def __call__(self, text, add_special_tokens=False):
        table = {" def": [7], **{str(d): [20 + d] for d in range(10)}}
        return {"input_ids": table.get(text, [100 + ord(c) for c in text])}


def test_planted_units_fire_exactly_on_their_token_sets():
    planted = units.planted_units(_PieceTok())
    assert [p.name for p in planted] == ["token/ def", "token/digits"]
    assert planted[0].token_ids == (7,) and planted[1].token_ids == tuple(range(20, 30))
    assert '"7"' in planted[1].explanation and '" def"' in planted[0].explanation
    ids = torch.tensor([[1, 7, 5, 21, 22, 7, 99, 29]])  # BOS, def, x, "1", "2", def, y, "9"
    acts = units.planted_source(planted)(ids)[0]  # [pos, 2]
    assert acts[:, 0].tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
    assert acts[:, 1].tolist() == [0, 0, 0, 1, 1, 0, 0, 1]
    bos_def = units.planted_source(planted)(torch.tensor([[7, 7]]))[0]
    assert bos_def[:, 0].tolist() == [0, 1]  # position 0 (BOS) never fires


def test_planted_unit_needs_single_tokens():
    class Split(_PieceTok):
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1, 2]} if text == " def" else super().__call__(text)

    with pytest.raises(ValueError, match="not one token"):
        units.planted_units(Split())
