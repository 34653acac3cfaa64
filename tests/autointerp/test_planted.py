"""course_lib.autointerp.planted: concept labels from the text, probes fitted on a store, the planted source,
and what a perfect reader of the true explanation scores."""

from __future__ import annotations

import math

import numpy as np
import torch

from course_lib.autointerp import planted, records
from course_lib.sae.store import write_store


def test_inside_string_follows_quotes_on_one_line():
    toks = ["x", " =", " '", "ab", "c", "'", " +", ' "', "don", "'t", '"', " #", " it", "'s", "\n", "y", '"', "z"]
    got = planted.inside_string(toks)
    inside = {i for i, f in enumerate(got) if f}
    assert inside == {3, 4, 8, 9, 17}  # 'abc', "don't" (the apostrophe opens nothing), then z after a new quote
    assert planted.inside_string(['"a\\"b', "c", '"', "d"]) == [True, True, False, False]  # an escaped quote
    assert planted.inside_string(["'x", "\n", "y"]) == [True, False, False]  # a newline closes the literal


def test_concept_labels_of_a_window():
    lab = planted.concept_labels([" def", " f", "(", "1", "2", "):", " '", "def", "'"])
    assert lab["def"] == [True] + [False] * 8
    assert lab["digits"] == [False, False, False, True, True, False, False, False, False]
    assert lab["string"] == [False] * 7 + [True, False]


class _Tok:
    """id -> text: 0 BOS, 1 " def", 2..11 the digits, 12 " x", 13 '"', 14 " y"."""

    TABLE = {0: "<s>", 1: " def", **{2 + d: str(d) for d in range(10)}, 12: " x", 13: '"', 14: " y"}

    def decode(self, ids):
        return "".join(self.TABLE[int(i)] for i in ids)


def _store(tmp_path, n_windows=60, seq=16, d=8, seed=0):
    """A store whose residual carries each concept along its own axis (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 15, (n_windows, seq), generator=g)
    tokens[:, 0] = 0
    text = planted.TokenText(_Tok())
    lab = planted.window_labels(tokens, text)
    where = torch.stack(torch.meshgrid(torch.arange(n_windows), torch.arange(1, seq), indexing="ij"), -1).reshape(-1, 2)
    x = torch.randn(where.shape[0], d, generator=g) * 0.3
    for j, c in enumerate(planted.CONCEPTS):
        x[:, j] += 3.0 * lab[c][where[:, 0], where[:, 1]].float()
    return write_store(tmp_path / "store", x, tokens=tokens, where=where, shard_tokens=300), lab


def test_probes_fit_on_part_of_the_store_and_read_their_concept(tmp_path):
    store, _ = _store(tmp_path)
    probes = planted.fit_probes(store, _Tok(), planted.ProbeConfig(l2s=(1e-3,), max_iter=50))
    assert set(probes) == set(planted.CONCEPTS)
    for j, c in enumerate(planted.CONCEPTS):
        p = probes[c]
        assert p.heldout["auroc"] > 0.95 and p.n_fit + p.heldout["n"] < len(store)  # a third part is left
        assert int(p.w.abs().argmax()) == j  # the probe found its axis
    src = planted.planted_source(None, "blocks.0.hook_resid_post", probes, planted.planted_units())
    h = torch.zeros(1, 3, 8)
    h[0, 0, 0] = 3.0  # " def"
    h[0, 1, 1] = 3.0  # a digit
    a = src.transform(h)[0]  # [pos, 4]: def, digits, string, def|digits
    assert a.shape == (3, 4) and a[0, 0] > 0 > a[1, 0] and a[1, 1] > 0 > a[0, 1] and a[2, :2].max() < 0
    assert a[0, 3] > 0 and a[1, 3] > 0 and a[2, 3] < 0  # the union fires on either concept
    scale = {c: probes[c].heldout["max_logit"] for c in ("def", "digits")}
    assert math.isclose(float(a[0, 3]), max(float(a[0, 0]) / scale["def"], float(a[0, 1]) / scale["digits"]),
                        rel_tol=1e-5)


def test_the_three_parts_of_the_store_are_disjoint_and_records_come_from_the_third(tmp_path):
    store, lab = _store(tmp_path)
    cfg = planted.ProbeConfig(l2s=(1e-3,), max_iter=30)
    parts = planted.split_windows(60, cfg)
    assert sum(len(v) for v in parts.values()) == 60 and len(set().union(*(set(v.tolist()) for v in parts.values()))) == 60
    assert len(parts["fit"]) == 36 and len(parts["select"]) == 9
    strata = torch.arange(60) < 10  # 10 windows hold a rare concept: each part gets its share of them
    st = planted.split_windows(60, cfg, strata)
    assert [int((v < 10).sum()) for v in st.values()] == [6, 2, 2] and sum(len(v) for v in st.values()) == 60
    probes = planted.fit_probes(store, _Tok(), cfg)
    urs = planted.planted_records(store, _Tok(), probes, planted.planted_units(), 5,
                                  records.RecordConfig(n_train=2, n_test_top=2, n_test_random=2), torch.Generator())
    assert [u.unit for u in urs] == [p.name for p in planted.PLANTED] and all(u.kind == "planted" for u in urs)
    rec_tokens = {tuple(r.tokens) for u in urs for r in u.train + u.test}
    strata = planted.rarest_concept_windows(planted.window_labels(store.tokens, planted.TokenText(_Tok())))
    kept = planted.split_windows(60, cfg, strata)["records"].tolist()  # as fit_probes and planted_records split
    pieces = {tuple(store.tokens[i, 1 + 5 * k: 6 + 5 * k].tolist()) for i in kept for k in range(3)}
    assert rec_tokens <= pieces  # every record is a piece of a records window
    top = urs[0].test_top[0]
    assert all((a > 0) == (s == " def") for s, a in zip(top.strings, top.acts))  # the def probe fires on " def"


def test_ceilings_of_a_unit_that_is_its_concept_and_of_a_graded_one():
    def rec(strings, acts, kind="top"):
        return records.Record(0, kind, list(range(len(strings))), strings, acts)

    unit = planted.PLANTED[0]  # " def"
    top = [rec([" def", " f", "("], [2.0, 0.0, 0.0]), rec(["x", " def"], [0.0, 2.0])]
    rnd = [rec(["a", "b"], [0.0, 0.0], "random")]
    neg = [rec(["a", "b"], [0.0, 0.0], "negative")]
    exact = records.UnitRecords("planted/ def", "planted", 2.0, [], top, rnd, test_negative=neg)
    assert planted.ceilings(exact, unit) == {"correlation": 1.0, "auroc": 1.0}
    graded = records.UnitRecords("planted/ def", "planted", 2.0, [], [rec([" def", " f"], [2.0, 0.5]),
                                                                      rec([" def", "x"], [0.5, 0.0])], rnd,
                                 test_negative=[rec([" def", "b"], [0.1, 0.0], "negative")])
    c = planted.ceilings(graded, unit)
    assert 0 < c["correlation"] < 1 and c["auroc"] == 0.5  # every record holds " def": no record-level signal
    md = planted.probes_markdown({})
    assert md.startswith("| probe |")
    assert np.isfinite(c["correlation"])
