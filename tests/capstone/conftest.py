"""Shared fixtures: notebook 02's shipped reference set (real models, loaded in well under a second), its BPE and
small windows of its validation split."""

from __future__ import annotations

import pytest
import torch

from course_lib import corpus
from course_lib.autointerp.records import RecordConfig
from course_lib.capstone import dictionary, explain, matching, study
from course_lib.circuits import notebook as nb02
from course_lib.circuits import reference_training as rt


@pytest.fixture(scope="session")
def reference():
    """``(entries, models, tokenizer, match_loss, windows)``: windows ``{"select", "score", "train"}`` of 64 tokens."""
    tokenizer, data = rt.set_tokenizer("reference", "shipped")
    _, loaded = rt.obtain_set("reference", "shipped")
    entries = {e["name"]: e for e, _ in loaded}
    models = {e["name"]: m for e, m in loaded}
    ccfg = corpus.config_for(data)
    val = corpus.encode_texts(tokenizer, corpus.load_texts(ccfg, "val")[:40])
    train = corpus.encode_texts(tokenizer, corpus.load_texts(ccfg, "train")[:10])
    match_loss = nb02.matching_losses(entries, models, val, recompute=False)
    w = corpus.windows(val, 64)
    half = w.shape[0] // 2
    windows = {"select": w[:48], "score": w[half:half + 48], "train": corpus.windows(train, 64)[:96]}
    return entries, models, tokenizer, match_loss, windows


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


CFG = study.StudyConfig(n_units=3, rec=RecordConfig(n_train=4, n_test_top=3, n_test_random=3, n_test_quantile=3),
                        sae=dictionary.DictionaryConfig(n_tokens=8_000, batch_size=256))


@pytest.fixture(scope="session")
def pair_study(reference):
    entries, models, tok, match_loss, windows = reference
    p = matching.matched_pairs(entries, match_loss, [0.4], [0])[0]
    st = study.study_pair(p, models[p.dense], models[p.sparse], windows, tok, CFG, seed=0)
    return p, st, explain.score_units(st.records, p.label, p.fraction)


