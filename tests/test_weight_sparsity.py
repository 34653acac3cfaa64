"""course_lib.weight_sparsity: top-k projection (whole tensor and per instance) and the annealing schedule."""

from __future__ import annotations

import pytest
import torch

from course_lib import weight_sparsity as ws


def test_keep_count():
    assert ws.keep_count(100, 0.1) == 10
    assert ws.keep_count(100, 0.001) == 1  # at least min_keep
    assert ws.keep_count(10, 0.25) == 3  # rounds up
    assert ws.keep_count(5, 2.0) == 5  # never more than the tensor has


def test_topk_mask_whole_tensor_and_per_instance():
    w = torch.tensor([[[1.0, -5.0], [0.5, 2.0]], [[-0.1, 0.2], [3.0, -0.3]]])  # [I=2, 2, 2]
    whole = ws.topk_mask(w, 2)
    assert whole.sum() == 2 and whole[0, 0, 1] and whole[1, 1, 0]  # |-5| and |3|, across instances
    per = ws.topk_mask(w, 2, instance_dim=0)
    assert per.flatten(1).sum(1).tolist() == [2, 2]
    assert per[0].tolist() == [[False, True], [False, True]]  # -5 and 2 in instance 0
    assert per[1].tolist() == [[False, False], [True, True]]  # 3 and -0.3 in instance 1


def test_project_topk_in_place_and_nonzero_fraction():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 10, generator=g), torch.randn(4, 5, generator=g)
    ref = a.clone()
    ws.project_topk_([a, b], 0.2)
    assert int((a != 0).sum()) == 20 and int((b != 0).sum()) == 4
    kept = a != 0
    assert torch.equal(a[kept], ref[kept])  # kept entries keep their values
    assert ref[~kept].abs().max() <= ref[kept].abs().min()  # the largest magnitudes were kept
    assert ws.nonzero_fraction([a, b]) == pytest.approx(24 / 120)
    before = b.clone()
    ws.project_topk_([b], 1.0)  # dense: untouched
    assert torch.equal(b, before)


def test_schedule_anneals_linearly_then_holds():
    s = ws.SparsitySchedule(0.1, anneal_start=0.1, anneal_end=0.6)
    assert s.fraction_at(0, 30) == 1.0  # t = 1/30 before the anneal
    assert s.fraction_at(13, 40) == pytest.approx(0.55, abs=1e-6)  # t = 14/40 = 0.35: half-way
    assert s.fraction_at(7, 12) == pytest.approx(0.1)  # t = 8/12 > 0.6: at the target
    assert s.fraction_at(99, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        ws.SparsitySchedule(0.0)
    with pytest.raises(ValueError):
        ws.SparsitySchedule(0.5, anneal_start=0.6, anneal_end=0.5)


def test_geometric_anneal_falls_by_a_constant_factor():
    f = [ws.kept_fraction_geometric(s, 100, 0.01, 0.0, 0.5) for s in range(100)]
    assert f[0] < 1 and f[49] == pytest.approx(0.01) and f[-1] == 0.01
    ratios = [b / a for a, b in zip(f[:48], f[1:49])]
    assert max(ratios) - min(ratios) < 1e-9  # geometric: the same share removed at every step
    assert ws.kept_fraction_geometric(0, 100, 0.01, 0.05, 0.5) == 1.0
