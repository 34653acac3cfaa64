"""Activation statistics: relu mass per token, bigram ids, the three statistics on made-up units."""

from __future__ import annotations

import pytest
import torch

from course_lib.capstone import activity


def test_top_token_share_counts_positive_mass_per_token():
    assert activity.top_token_share(torch.tensor([1.0, 0.0, 2.0, 1.0]), torch.tensor([7, 3, 5, 7])) == 0.5
    assert activity.top_token_share(torch.tensor([3.0, -5.0, 1.0]), torch.tensor([4, 9, 2])) == 0.75
    assert activity.top_token_share(torch.tensor([-1.0, 0.0]), torch.tensor([1, 2])) == 0.0


def test_unit_activity_of_a_token_detector_and_a_spread_unit():
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 50, (20, 16), generator=g)
    det = (windows == 7).float()  # fires only on token 7
    spread = torch.rand(20, 16, generator=g)
    acts = torch.stack([det, spread], dim=-1)
    rows = activity.unit_activity(["det", "spread"], "c", "p", 0.4, acts, windows, 50)
    assert rows[0].top_token_share == pytest.approx(1.0)
    assert rows[1].top_token_share < 0.2
    assert rows[0].active_fraction < rows[1].active_fraction
    ids = activity.bigram_ids(windows, 50)
    assert ids.shape == (20, 15) and int(ids[0, 0]) == int(windows[0, 0]) * 50 + int(windows[0, 1])
