"""course_lib.autointerp.simulator: the all-at-once prompt reads each token's value right after its tab, the
expected value is the probability-weighted mean of the value tokens, and the keyword simulator matches quoted
strings only."""

from __future__ import annotations

import numpy as np
import pytest

from course_lib.autointerp import localmodel, simulator
from course_lib.autointerp.records import Record


@pytest.fixture(scope="module")
def sim():
    return simulator.AllAtOnceSimulator(localmodel.load_local_lm("smollm2", dtype="float32"))


def _record(lm, text):
    ids = lm.encode(text)
    return Record(window=0, kind="top", tokens=ids, strings=[lm.tokenizer.decode([t]) for t in ids],
                  acts=[0.0] * len(ids))


def test_prompt_reads_each_value_at_the_tab_before_its_placeholder(sim):
    rec = _record(sim.lm, "x = 1\nreturn x")
    ids, reads = sim.prompt('the keyword " return".', rec.tokens)
    assert len(reads) == len(rec.tokens) and reads == sorted(reads)
    tab, placeholder = sim.tab, sim.placeholder
    for r in reads:
        assert ids[r - len(tab) + 1: r + 1] == tab  # the value is predicted right after the tab
        assert ids[r + 1: r + 1 + len(placeholder)] == placeholder
    newline_tok = next(t for t, s in zip(rec.tokens, rec.strings) if "\n" in s)
    assert sim.lm.tokenizer.decode(sim.display_ids(newline_tok)) == "\\n"  # escaped: one line per token
    assert sim.scale == 9  # SmolLM2 writes "10" as two tokens


def test_simulate_is_the_expected_value_of_the_value_distribution(sim):
    recs = [_record(sim.lm, "def f(x):\n    return x"), _record(sim.lm, "import os")]
    probs = sim.simulate_with_probs('the keyword " def".', recs)
    values = sim.simulate('the keyword " def".', recs)
    for p, v, r in zip(probs, values, recs):
        assert p.shape == (len(r.tokens), sim.scale + 1)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(v, p @ (np.arange(sim.scale + 1) * 10.0 / sim.scale), atol=1e-5)
        assert ((v >= 0) & (v <= 10)).all()


def test_keyword_simulator_matches_quoted_strings_only():
    assert simulator.quoted_strings('the token " def" and `return`') == [" def", "return"]
    rec = Record(window=0, kind="top", tokens=[1, 2, 3, 4], strings=[" def", " define", "Return", " "], acts=[0] * 4)
    (v,) = simulator.KeywordSimulator().simulate('finds " def" and "return"', [rec])
    assert v.tolist() == [10.0, 0.0, 10.0, 0.0]  # case and surrounding spaces ignored, no substring match
    (none,) = simulator.KeywordSimulator().simulate("no quotes at all", [rec])
    assert not none.any()


def test_expected_values_renormalise_over_the_values_and_ignore_a_shift():
    lp = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0 + 1e-12, 0.25, 0.25]]))  # vocab of 4, values at ids 2, 0
    e = simulator.expected_values(lp, [2, 0])  # "0" is id 2, "1" is id 0
    np.testing.assert_allclose(e, [0.1 / 0.4, 0.5 / 0.75])
    np.testing.assert_allclose(simulator.expected_values(lp + np.array([[3.0], [-7.0]]), [2, 0]), e)


def test_the_simulator_calls_its_expected_value_function(sim):
    calls = []

    def spy(logprobs, value_ids):
        calls.append((logprobs.shape, list(value_ids)))
        return simulator.expected_values(logprobs, value_ids)

    rec = _record(sim.lm, "x = 1")
    spied = simulator.AllAtOnceSimulator(sim.lm, expected_fn=spy)
    np.testing.assert_allclose(spied.simulate("digits.", [rec])[0], sim.simulate("digits.", [rec])[0])
    assert calls == [((len(rec.tokens), sim.lm.model.lm_head.weight.shape[0]), sim.value_ids)]
