"""Explainers: parsing, the paper's record format, and the known-answer " def" unit end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib import corpus
from course_lib.autointerp import explainers, localmodel, pipeline, records, results, simulator, units


def test_parse_explanation():
    assert explainers.parse_explanation(" the keyword def. And more") == ("the keyword def.", None)
    assert explainers.parse_explanation("The main thing this neuron does is find commas.\nx")[0] == "commas."
    assert explainers.parse_explanation("   ") == (None, "empty")
    text, reason = explainers.parse_explanation("1 2 3 !!")
    assert text is None and reason.startswith("unparsable")
    assert explainers.parse_explanation("foo\t3")[0] is None


def test_format_record_repeats_sparse_nonzeros():
    r = records.Record(0, "top", list(range(10)), [f"t{i}" for i in range(9)] + ["\n"],
                       [0.0] * 8 + [2.0, -1.0])
    text = explainers.format_record(r, max_act=2.0)
    assert "t8\t10\n" in text and "\\n\t0" in text  # discretised, newline escaped on its line
    assert "filtered out" in text and text.count("t8\t10") == 2  # 1 of 10 nonzero (<20%): repeated
    dense = records.Record(0, "top", [0, 1], ["a", "b"], [1.0, 2.0])
    assert "filtered out" not in explainers.format_record(dense, 2.0)


@pytest.fixture(scope="module")
def local_lm():
    return localmodel.load_local_lm("smollm2", dtype="auto", device="cpu")


@pytest.fixture(scope="module")
def def_unit(local_lm):
    tok = local_lm.tokenizer
    texts = corpus.load_texts(corpus.CorpusConfig(max_chars=40_000), "val")
    win = corpus.bos_windows(tok, texts, 13)[:120]
    def_id = tok(" def", add_special_tokens=False)["input_ids"]
    assert len(def_id) == 1
    acts = units.TokenSource.for_tokens(def_id)(win)
    cfg = records.RecordConfig(n_train=3, n_test_top=2, n_test_random=2)
    ur = records.build_unit_records("token/ def", "token", acts[:, :, 0], win, tok, cfg,
                                    torch.Generator().manual_seed(0))
    assert all(r.max_act == 1.0 for r in ur.test_top) and all(r.max_act == 0.0 for r in ur.test_random)
    return ur


def test_baseline_names_the_token_and_scores_high(def_unit):
    e = explainers.TokenStatsExplainer().explain(def_unit)
    assert e.ok and '" def"' in e.text
    res = pipeline.Scorers(simulator=None, yes_no=None).score(e, def_unit)
    assert res.scores["correlation_keyword"] > 0.9


def test_local_llm_pipeline_end_to_end(def_unit, local_lm, tmp_path):
    ex = explainers.LocalLLMExplainer(local_lm, max_new_tokens=8)
    scorers = pipeline.Scorers.from_local(local_lm, embedder=None)
    res = pipeline.explain_and_score(ex, scorers, [def_unit], progress=False)
    res.append(scorers.score(explainers.TokenStatsExplainer().explain(def_unit), def_unit))
    path = results.save_jsonl(res, tmp_path / "def.jsonl")
    back = results.load_jsonl(path)
    assert [r.explainer for r in back] == ["local:smollm2", "baseline:token-stats"]
    assert back[1].explanation is not None  # the baseline always explains: the scores below always run
    for r in back:
        if r.explanation is None:  # a 135M model may produce nothing usable: recorded with a reason
            assert r.reason and all(v is None for v in r.scores.values())
            continue
        c = r.scores["correlation_llm"]
        assert c is not None and -1.0 <= c <= 1.0  # the 135M simulator's score is recorded
        assert 0.0 <= r.scores["detection_auroc"] <= 1.0
        sim = np.concatenate(r.extra["simulated"])
        assert sim.shape == (sum(len(x.tokens) for x in def_unit.test),)
        assert np.all((sim >= 0) & (sim <= 10)) and not math.isnan(sim.sum())


def test_simulator_probabilities_are_normalised(def_unit, local_lm):
    sim = simulator.AllAtOnceSimulator(local_lm)
    assert sim.scale in (9, 10)
    probs = sim.simulate_with_probs('the token " def".', def_unit.test[:2])
    assert probs[0].shape == (len(def_unit.test[0].tokens), sim.scale + 1)
    assert np.allclose(probs[0].sum(-1), 1.0, atol=1e-5)
    seqs, reads = sim.prompts("x", def_unit.test[:1])
    assert all(seqs[0][p] == sim.tab[-1] for p in reads[0])  # read exactly at each <TAB>


def test_parse_explanation_keeps_quotes_inside_the_answer():
    from course_lib.autointerp.explainers import parse_explanation

    assert parse_explanation('the token "("')[0] == 'the token "("'
    assert parse_explanation('"the token "(""')[0] == 'the token "("'
    assert parse_explanation('"opening brackets."')[0] == "opening brackets."
