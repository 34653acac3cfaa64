"""Paired differences and class means: a planted difference is found, no difference is not invented."""

from __future__ import annotations

import dataclasses

import numpy as np

from course_lib.capstone import compare


@dataclasses.dataclass(frozen=True)
class Row:
    cls: str
    pair: str
    fraction: float
    v: float


def rows(shift: float, seed: int = 0) -> list[Row]:
    rng = np.random.default_rng(seed)
    out = []
    for f in (0.4, 0.1):
        for s in range(3):
            p = f"f={f} seed {s}"
            out += [Row("a", p, f, float(x)) for x in rng.normal(0.3 + shift, 0.1, 20)]
            out += [Row("b", p, f, float(x)) for x in rng.normal(0.3, 0.1, 20)]
    return out


def test_a_planted_difference_has_an_interval_above_zero():
    d = compare.paired_difference(rows(0.2), lambda r: r.v, "a", "b", n_boot=300)
    assert d["ci95"][0] > 0 and abs(d["diff"] - 0.2) < 0.05 and d["n_pairs"] == 6
    assert compare.verdict(d).endswith("higher")
    one = compare.paired_difference(rows(0.2), lambda r: r.v, "a", "b", fraction=0.1, n_boot=300)
    assert one["n_pairs"] == 3 and set(one["per_pair"]) == {f"f=0.1 seed {s}" for s in range(3)}


def test_no_difference_is_reported_as_unresolved():
    d = compare.paired_difference(rows(0.0), lambda r: r.v, "a", "b", n_boot=300)
    assert d["ci95"][0] < 0 < d["ci95"][1]
    assert compare.verdict(d).endswith("no difference resolved")
    assert compare.paired_difference(rows(0.0), lambda r: r.v, "a", "zzz")["diff"] is None


def test_class_means_with_intervals():
    m = compare.class_means(rows(0.2), lambda r: r.v, ["a", "b", "c"], n_boot=200)
    assert m["a"]["ci95"][0] < m["a"]["mean"] < m["a"]["ci95"][1] and m["a"]["n"] == 120
    assert m["c"]["mean"] is None and len(m["b"]["per_pair"]) == 6
