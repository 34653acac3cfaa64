"""Records from two splits and the three offline scorers on real units; a planted token unit passes its gate."""

from __future__ import annotations

import torch

from course_lib.autointerp.records import RecordConfig
from course_lib.capstone import explain, units

CFG = RecordConfig(n_train=4, n_test_top=3, n_test_random=3, n_test_quantile=3)


def test_records_come_from_their_own_splits(reference):
    _, models, tok, _, windows = reference
    m = models["dense-d48-16k-s0-mix5"]
    nh = units.neuron_hook(m)
    sel = units.harvest(m, windows["select"], [nh])[nh][..., 0]
    sco = units.harvest(m, windows["score"], [nh])[nh][..., 0]
    ur = explain.split_records("n/0", "dense neuron", sel, sco, windows["select"], windows["score"], tok, CFG,
                               torch.Generator().manual_seed(0))
    assert len(ur.train) == 4 and len(ur.test_top) == 3 and len(ur.test_quantile) == 3
    for r in ur.train:
        assert r.tokens == windows["select"][r.window, 1:].tolist()
    for r in [*ur.test, *ur.test_negative]:
        assert r.tokens == windows["score"][r.window, 1:].tolist()
    assert ur.max_act >= max(r.max_act for r in [*ur.train, *ur.test])


def _token_unit_records(reference, token_id: int, name: str):
    _, _, tok, _, windows = reference
    sel = (windows["select"] == token_id).float()
    sco = (windows["score"] == token_id).float()
    return explain.split_records(name, "token", sel, sco, windows["select"], windows["score"], tok, CFG,
                                 torch.Generator().manual_seed(1))


def test_a_token_unit_is_explained_and_another_explanation_is_not(reference):
    _, _, tok, _, windows = reference
    counts = torch.minimum(windows["select"].flatten().bincount(minlength=2048),
                           windows["score"].flatten().bincount(minlength=2048))
    common = counts.topk(60).indices.tolist()  # frequent in both splits
    ids = [i for i in common if tok.decode([i]).strip().isalpha()][:4]  # word tokens (not whitespace)
    urs = [_token_unit_records(reference, i, f"tok/{i}") for i in ids]
    rows = explain.score_units(urs, "p", 0.4, k=1)
    for r in rows:
        assert r.own["weighted_r"] is not None and r.own["weighted_r"] > 0.99  # exact token strings
        assert r.own["keyword_r"] > 0.5  # the keyword simulator also matches the token without case or spaces
        assert r.own["detection_auroc"] == 1.0
        assert r.other["keyword_r"] < 0.5 and r.other_unit != r.unit
    g = explain.gates(rows)
    assert all(g[k]["pass"] for k in explain.SCORERS) and explain.passed(g) == list(explain.SCORERS)
    th = explain.null_thresholds(rows, "keyword_r")
    assert explain.explained(rows[0], "keyword_r", th)


def test_weighted_r_and_detection_edge_cases(reference):
    _, _, tok, _, windows = reference
    i = int(windows["score"][0, 5])  # a token present in the scoring split
    ur = _token_unit_records(reference, i, f"tok/{i}")
    assert explain.weighted_r(ur, {}) == 0.0  # a constant simulation predicts nothing
    v = explain.detection_auroc(ur, {tok.decode([i]): 1.0})  # the unit's own token: never below chance
    assert v is not None and 0.5 <= v <= 1.0
    dead = _token_unit_records(reference, 10**6, "dead")  # never fires: nothing to score
    assert explain.weighted_r(dead, {"x": 1.0}) is None and explain.detection_auroc(dead, {"x": 1.0}) is None
