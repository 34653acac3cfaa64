"""course_lib.autointerp.chooser: candidates per description length, the train log-likelihood under the real
all-at-once simulator (SmolLM2), and the choice scored on the test records."""

from __future__ import annotations

import numpy as np
import pytest

from course_lib.autointerp import chooser, localmodel, records, simulator


@pytest.fixture(scope="module")
def sim():
    return simulator.AllAtOnceSimulator(localmodel.load_local_lm("smollm2", dtype="float32"))


def _record(lm, text, window, kind, act_on):
    ids = lm.encode(text)
    strings = [lm.tokenizer.decode([t]) for t in ids]
    return records.Record(window, kind, ids, strings, [3.0 if s.strip() in act_on else 0.0 for s in strings])


def _unit(lm, act_on=("def",)):
    train = [_record(lm, "def f(x):\n    return x", 0, "top", act_on),
             _record(lm, "x = 1\ndef g():\n    pass", 1, "top", act_on)]
    test = [_record(lm, "def h(y):\n    return y + 1", 2, "top", act_on)]
    rnd = [_record(lm, "import os\nprint(os.name)", 3, "random", act_on)]
    return records.UnitRecords("u/0", "sae", 3.0, train, test, rnd)


def test_candidates_follow_the_statistics_explainer():
    r = records.Record(0, "top", [1, 2, 3], [" def", " class", "x"], [3.0, 1.0, 0.0])
    ur = records.UnitRecords("u", "sae", 3.0, [r], [r], [])
    assert chooser.candidates(ur) == [(1, 'the token " def".'), (2, 'the tokens " def", " class".')]
    assert chooser.candidate_text(["a", '"b"']).startswith('the tokens "a", ')
    dead = records.UnitRecords("d", "sae", 0.0, [records.Record(0, "top", [1], ["x"], [0.0])], [], [])
    assert chooser.candidates(dead) == []


def test_log_likelihood_prefers_the_right_explanation_and_choose_scores_on_test(sim):
    ur = _unit(sim.lm)
    right = chooser.log_likelihood(sim, 'the token "def".', ur)
    wrong = chooser.log_likelihood(sim, 'the token " import".', ur)
    assert np.isfinite(right) and right < 0 and np.isfinite(wrong)
    assert right > wrong  # the levels of the train records are likelier under the right explanation
    c = chooser.choose(sim, ur)
    assert c is not None and c.chosen_k in [k for k, _, _ in c.candidates]
    assert max(c.candidates, key=lambda x: x[2])[0] == c.chosen_k  # the chosen one has the best likelihood
    assert c.r_chosen is None or -1 <= c.r_chosen <= 1
    assert chooser.Choice.from_dict(c.to_dict()) == c
