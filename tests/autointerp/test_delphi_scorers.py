"""delphi's intruder and surprisal scorers with a character-level fake LM, and LocalLM.token_logprobs
against a tiny random Llama's full logits (no download)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from course_lib.autointerp import localmodel, records, scoring

DEF = ord("§")  # the "token" the unit fires on


class CharLM:
    """Token = one character (id = ord). ``candidate_probs`` is an oracle (or anti-oracle) for the
    intruder question: it puts its mass on the letter of the line holding no ``§``."""

    def __init__(self, oracle: bool = True):
        self.oracle = oracle
        self.tokenizer = SimpleNamespace(bos_token_id=1)

    def encode(self, text):
        return [ord(c) for c in text]

    def single_token_id(self, text):
        return ord(text) if len(text) == 1 else None

    def chat_ids(self, messages, assistant_prefix=""):
        return self.encode(messages[-1]["content"] + assistant_prefix)

    def candidate_probs(self, seqs, positions, candidates):
        out = []
        for seq in seqs:
            text = "".join(map(chr, seq))
            lines = [ln for ln in text.splitlines() if len(ln) > 2 and ln[1:3] == ": "]
            odd = next(j for j, ln in enumerate(lines) if "§" not in ln)
            p = torch.full((1, len(candidates)), 0.1)
            p[0, odd if self.oracle else (odd + 1) % len(candidates)] = 1.0
            out.append(p / p.sum())
        return out

    def token_logprobs(self, seqs, starts):
        # the explanation prefix mentions "§": then "§" is predicted well, everything else as before
        out = []
        for seq, start in zip(seqs, starts):
            primed = DEF in seq[:start]
            out.append(torch.tensor([-0.1 if (t == DEF and primed) else -3.0 for t in seq[start:]]))
        return out


def _unit(n_top=4, n_rnd=3):
    def rec(w, kind, text, acts):
        return records.Record(w, kind, [1] + [ord(c) for c in text], ["<s>"] + list(text), [0.0] + acts)

    top = [rec(i, "top", f"x§y{i}", [0, 1.0, 0, 0]) for i in range(n_top)]
    rnd = [rec(10 + i, "random", f"abc{i}", [0.0] * 4) for i in range(n_rnd)]
    return records.UnitRecords("sae/0", "sae", 1.0, top[:1], top, rnd)


def test_intruder_oracle_and_anti_oracle():
    ur = _unit()
    res = scoring.intruder_score(CharLM(), ur, torch.Generator().manual_seed(0), k=4)
    assert res["accuracy"] == 1.0 and res["n_questions"] == 3 and res["chance"] == 0.25
    assert res["p_intruder"] == pytest.approx(1.0 / 1.3)
    assert res["answers"] == res["intruders"] and len(set(res["intruders"])) > 1  # the place varies
    bad = scoring.intruder_score(CharLM(oracle=False), ur, torch.Generator().manual_seed(0), k=4)
    assert bad["accuracy"] == 0.0
    too_few = scoring.intruder_score(CharLM(), _unit(n_top=2), torch.Generator().manual_seed(0), k=4)
    assert math.isnan(too_few["accuracy"]) and too_few["n_questions"] == 0
    with pytest.raises(ValueError):
        scoring.intruder_score(CharLM(), ur, torch.Generator(), k=1)


def test_surprisal_gain_separates_top_from_random():
    ur = _unit()
    res = scoring.surprisal_score(CharLM(), "the character §", ur)
    assert res["auroc"] == 1.0 and res["labels"] == [1] * 4 + [0] * 3
    assert res["gain_top"] == pytest.approx((3.0 - 0.1) / 4) and res["gain_random"] == 0.0
    useless = scoring.surprisal_score(CharLM(), "commas", ur)
    assert useless["auroc"] == 0.5 and all(g == 0.0 for g in useless["gain"])


def test_token_logprobs_match_full_logits():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg).eval()
    lm = localmodel.LocalLM(model=model, tokenizer=SimpleNamespace(pad_token_id=0), name="tiny")
    seqs = [[3, 7, 9, 11, 4], [5, 6, 2]]
    got = lm.token_logprobs(seqs, [2, 1])
    for seq, start, g in zip(seqs, [2, 1], got):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq])).logits[0].float(), -1)
        want = np.array([float(logp[t - 1, seq[t]]) for t in range(start, len(seq))])
        assert g.shape == (len(seq) - start,)
        np.testing.assert_allclose(g.numpy(), want, atol=1e-4)
    with pytest.raises(ValueError):
        lm.token_logprobs([[1, 2]], [0])


def test_scorers_run_intruder_and_surprisal_when_asked():
    from course_lib.autointerp import pipeline

    ur = _unit()
    sc = pipeline.Scorers(simulator=None, yes_no=None, delphi_lm=CharLM())
    res = sc.score(pipeline.explain_text("the character §", "sae/0"), ur)
    assert res.scores["intruder_accuracy"] == 1.0 and res.scores["surprisal_auroc"] == 1.0
    assert set(res.extra["seconds"]) >= {"intruder", "surprisal"}
    live = sc.live()
    assert live.delphi_lm is None and live.yes_no is None and live.simulator is None
    off = pipeline.Scorers(simulator=None, yes_no=None).score(pipeline.explain_text("x", "sae/0"), ur)
    assert off.scores["intruder_accuracy"] is None and off.scores["surprisal_auroc"] is None


def test_intruder_runs_once_per_unit_whatever_explains_it():
    from course_lib.autointerp import pipeline

    calls = []

    class Counting(CharLM):
        def candidate_probs(self, seqs, positions, candidates):
            calls.append(len(seqs))
            return super().candidate_probs(seqs, positions, candidates)

    ur = _unit()
    sc = pipeline.Scorers(simulator=None, yes_no=None, delphi_lm=Counting())
    a = sc.score(pipeline.explain_text("the character §", "sae/0"), ur)
    b = sc.score(pipeline.explain_text("something else", "sae/0"), ur)
    assert len(calls) == 1 and a.scores["intruder_accuracy"] == b.scores["intruder_accuracy"] == 1.0
