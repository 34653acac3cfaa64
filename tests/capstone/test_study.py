"""One matched pair end to end on the shipped models, and the circuit view on one task."""

from __future__ import annotations

import dataclasses
import pickle

from course_lib import corpus
from course_lib.autointerp.records import RecordConfig
from course_lib.capstone import circuit_view, explain, units
from course_lib.circuits import PruneConfig, prompt_splits


def test_every_class_is_measured_and_the_study_pickles(pair_study):
    p, st, scores = pair_study
    assert {s.cls for s in st.sets} == set(units.CLASSES)
    assert len(scores) == len(st.records) == len(st.activity) == 3 * len(units.CLASSES)
    assert {r.pair for r in scores} == {p.label}
    assert all(r.other_unit != r.unit for r in scores)
    assert set(st.sae_stats) >= {"nmse", "l0", "dead_fraction"}
    back = pickle.loads(pickle.dumps(st))  # the notebook runs pairs in forked workers
    assert [u.unit for u in back.records] == [u.unit for u in st.records]


def test_a_circuit_is_searched_and_its_units_scored(reference, pair_study):
    _, models, tok, _, windows = reference
    p, st, scores = pair_study
    splits = {k: d for k, d in prompt_splits("quote_close", tok, 16, 0).items()}
    assert circuit_view.solved_tasks([models[p.sparse]], {"quote_close": splits}, 0.6) == ["quote_close"]
    stream = corpus.encode_texts(tok, ["x = 'a'\n" * 200])
    means_w = circuit_view.mean_windows_of(stream, 64, 4)
    th = explain.null_thresholds(scores, "keyword_r")
    pcfg = PruneConfig(steps=10, target_loss=0.6, grid_points=6, solved_loss=0.5, train_target_ratio=0.85)
    row = circuit_view.circuit_units(p, "sparse", models[p.sparse], "quote_close", splits, means_w, windows, tok,
                                     RecordConfig(n_train=4, n_test_top=3, n_test_random=3, n_test_quantile=3), th, pcfg, seed=0)
    assert row is not None and row.n_nodes >= row.n_units >= row.n_explained
    assert len(row.scores) == row.n_units
    s = circuit_view.summary([row, dataclasses.replace(row, side="dense")])
    assert s["sparse"]["circuits"] == 1 and s["dense"]["units"] == row.n_units
