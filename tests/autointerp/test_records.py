"""Records and discretisation (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.autointerp import records


class _Tok:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_discretise_matches_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200) * 3
    m = float(np.abs(a).max()) * 0.8  # some values above max_a: must clip at 10
    d = records.discretise(a, m)
    expected = [min(10, math.floor(10 * max(x, 0.0) / m)) for x in a]
    assert d.tolist() == expected
    assert d.min() == 0 and d.max() == 10
    assert records.discretise(torch.tensor([1.0, 2.0]), 0.0).tolist() == [0, 0]


def _acts(n=60, pos=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.relu(torch.randn(n, pos, generator=g)) * (torch.rand(n, 1, generator=g) > 0.5)
    return a, torch.randint(5, 50, (n, pos), generator=g)


@pytest.mark.parametrize("sampling", ["top", "quantiles"])
def test_train_and_test_never_overlap_and_are_balanced(sampling):
    a, w = _acts()
    cfg = records.RecordConfig(n_train=6, n_test_top=5, n_test_random=5, sampling=sampling)
    ur = records.build_unit_records("x/0", "neuron", a, w, _Tok(), cfg, torch.Generator().manual_seed(1))
    train = {r.window for r in ur.train}
    test = {r.window for r in ur.test}
    assert not train & test
    assert len(ur.test_top) == len(ur.test_random) == 5
    assert len(ur.train) == 6
    assert len(test) == 10
    # top test records are among the strongest windows; BOS dropped
    maxes = a[:, 1:].max(dim=1).values
    assert min(r.max_act for r in ur.test_top) >= float(torch.sort(maxes, descending=True).values[15])
    assert all(len(r.tokens) == w.shape[1] - 1 for r in ur.test)
    assert ur.max_act == pytest.approx(float(maxes.max()))
    if sampling == "quantiles":
        assert {r.kind for r in ur.train} == {"quantile"}
        # quantile sampling reaches weaker windows than pure top sampling
        assert min(r.max_act for r in ur.train) < min(r.max_act for r in ur.test_top)


def test_sparse_unit_keeps_one_to_one():
    a = torch.zeros(40, 6)
    a[[3, 7, 9], 2] = torch.tensor([1.0, 2.0, 3.0])  # only 3 activating windows
    cfg = records.RecordConfig(n_train=2, n_test_top=2, n_test_random=2)
    ur = records.build_unit_records("x", "n", a, torch.ones(40, 6, dtype=torch.long), _Tok(), cfg,
                                    torch.Generator().manual_seed(0))
    assert len(ur.test_top) == len(ur.test_random) == 1 and len(ur.train) == 2
    assert ur.train[0].window == 9  # the strongest window goes to the explainer


def test_records_roundtrip_and_bad_sampling():
    a, w = _acts()
    cfg = records.RecordConfig(n_train=2, n_test_top=2, n_test_random=2)
    ur = records.build_unit_records("x/0", "neuron", a, w, _Tok(), cfg, torch.Generator().manual_seed(0))
    assert records.UnitRecords.from_dict(ur.to_dict()) == ur
    with pytest.raises(ValueError, match="quantiles"):
        records.build_unit_records("x", "n", a, w, _Tok(), records.RecordConfig(sampling="nope"),
                                   torch.Generator())


def test_quantile_test_records_span_the_bins_and_never_overlap():
    g = torch.Generator().manual_seed(3)
    a = torch.zeros(200, 9)
    a[:120, 4] = torch.linspace(5.0, 0.05, 120)  # 120 activating windows, strongest first
    w = torch.randint(5, 50, (200, 9), generator=g)
    cfg = records.RecordConfig(n_train=4, n_test_top=10, n_test_random=10, n_test_quantile=10, n_quantiles=5)
    ur = records.build_unit_records("x/0", "neuron", a, w, _Tok(), cfg, torch.Generator().manual_seed(1))
    assert len(ur.test_quantile) == 10
    assert sorted(r.quantile for r in ur.test_quantile) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert all(r.kind == "quantile" and r.max_act > 0 for r in ur.test_quantile)
    windows = [r.window for r in [*ur.train, *ur.test]]
    assert len(windows) == len(set(windows))  # train, top, quantile, random: disjoint
    # bins go from strong to weak: the weakest bin's records are below the strongest bin's and the top ones
    q = {b: [r.max_act for r in ur.test_quantile if r.quantile == b] for b in range(5)}
    assert max(q[4]) < min(q[0]) < min(r.max_act for r in ur.test_top)
    assert ur.test == [*ur.test_top, *ur.test_quantile, *ur.test_random]
    assert ur.test_labels == [1] * 20 + [0] * 10
    back = records.UnitRecords.from_dict(ur.to_dict())
    assert back == ur and back.test_quantile[0].quantile == ur.test_quantile[0].quantile
    old = ur.to_dict()
    del old["test_quantile"]  # results written before quantile test records still load
    assert records.UnitRecords.from_dict(old).test_quantile == []


def test_subset_is_seeded_and_keeps_order():
    a, w = _acts(n=120)
    cfg = records.RecordConfig(n_train=2, n_test_top=8, n_test_random=8, n_test_quantile=4, n_quantiles=2)
    ur = records.build_unit_records("x/0", "neuron", a, w, _Tok(), cfg, torch.Generator().manual_seed(0))
    s1 = ur.subset(3, 1, 4, torch.Generator().manual_seed(5))
    s2 = ur.subset(3, 1, 4, torch.Generator().manual_seed(5))
    assert s1 == s2 and (len(s1.test_top), len(s1.test_quantile), len(s1.test_random)) == (3, 1, 4)
    idx = [ur.test_top.index(r) for r in s1.test_top]
    assert idx == sorted(idx) and s1.train == ur.train
    assert ur.subset(100, 100, 100, torch.Generator()) == ur


def test_negatives_are_non_activating_windows_and_records_keep_the_positive_side():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(80, 7, generator=g)  # signed, like a neuron or a random direction
    a[:30] = a[:30].abs() * 0.05  # 30 windows far below a tenth of the maximum
    cfg = records.RecordConfig(n_train=4, n_test_top=5, n_test_random=5)
    ur = records.build_unit_records("x/0", "neuron", a, torch.ones(80, 7, dtype=torch.long), _Tok(), cfg,
                                    torch.Generator().manual_seed(0))
    assert len(ur.test_negative) == 5 and ur.n_negative_silent == 5
    assert all(r.max_act < 0.1 * ur.max_act for r in ur.test_negative)
    used = {r.window for r in [*ur.train, *ur.test_top, *ur.test_quantile, *ur.test_random]}
    assert not used & {r.window for r in ur.test_negative}
    assert all(min(r.acts) >= 0.0 for r in [*ur.train, *ur.test, *ur.test_negative])  # max(a, 0)
    assert ur.contrast == [*ur.test_top, *ur.test_negative] and ur.contrast_labels == [1] * 5 + [0] * 5
    assert records.UnitRecords.from_dict(ur.to_dict()) == ur
    # a unit active in every window: the negatives are its weakest windows, and none counts as silent
    dense = torch.rand(80, 7, generator=g) + 1.0
    ur = records.build_unit_records("x/1", "random", dense, torch.ones(80, 7, dtype=torch.long), _Tok(), cfg,
                                    torch.Generator().manual_seed(0))
    assert len(ur.test_negative) == 5 and ur.n_negative_silent == 0
    rest = sorted(float(dense[i, 1:].max()) for i in range(80)
                  if i not in {r.window for r in [*ur.train, *ur.test_top, *ur.test_random]})
    assert sorted(r.max_act for r in ur.test_negative) == pytest.approx(rest[:5])
