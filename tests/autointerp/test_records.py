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
