"""The "explain it yourself" explorer scores with the cheap scorers by default (no model needed)."""

from __future__ import annotations

import numpy as np

from course_lib.autointerp import pipeline, records, widgets


class CountingSimulator:
    """Stands in for the LM simulator; counts calls (it must not run on a default Score)."""

    calls = 0

    def simulate(self, explanation, recs):
        CountingSimulator.calls += 1
        return [np.arange(len(r.tokens), dtype=float) for r in recs]


def test_default_score_is_live_and_fast():
    top = [records.Record(0, "top", [1, 2], ["x", " def"], [0.0, 1.0])]
    rnd = [records.Record(1, "random", [3, 4], [" a", " b"], [0.0, 0.0])]
    ur = records.UnitRecords("token/ def", "token", 1.0, top, top, rnd)
    scorers = pipeline.Scorers(simulator=CountingSimulator(), yes_no=None)
    ex = widgets.explain_explorer({ur.unit: ur}, scorers, {}, "ref", text='the token " def"')
    assert CountingSimulator.calls == 0 and "keyword simulator" in ex.html
    assert "<td>correlation_keyword</td><td>1.00</td>" in ex.html
    ex.all_scorers = True
    ex.render_scores(ur.unit, 'the token " def"')
    assert CountingSimulator.calls == 1 and "LM simulator" in ex.html


def test_rescore_recomputes_the_typed_explanations_scores():
    top = [records.Record(0, "top", [1, 2], ["x", " def"], [0.0, 1.0])]
    rnd = [records.Record(1, "random", [3, 4], [" a", " b"], [0.0, 0.0])]
    ur = records.UnitRecords("token/ def", "token", 1.0, top, top, rnd)
    scorers = pipeline.Scorers(simulator=None, yes_no=None)
    ex = widgets.explain_explorer({ur.unit: ur}, scorers, {}, "ref", text='the token " def"',
                                  rescore=lambda r: pipeline.rescore(r, correlation_fn=lambda a, s: -0.5))
    assert "<td>correlation_keyword</td><td>-0.50</td>" in ex.html


def test_with_gates_only_the_scorers_that_passed_are_shown():
    top = [records.Record(0, "top", [1, 2], ["x", " def"], [0.0, 1.0])]
    rnd = [records.Record(1, "random", [3, 4], [" a", " b"], [0.0, 0.0])]
    ur = records.UnitRecords("token/ def", "token", 1.0, top, top, rnd)
    gates = {"correlation_keyword": {"pass": True}, "embedding_auroc": {"pass": False}}
    ex = widgets.explain_explorer({ur.unit: ur}, pipeline.Scorers(simulator=None, yes_no=None), {}, "ref",
                                  text='the token " def"', gates=gates)
    assert "<td>correlation_keyword</td><td>1.00</td>" in ex.html and "<td>embedding_auroc</td>" not in ex.html
    assert "failed their gates in this run: embedding_auroc" in ex.html
