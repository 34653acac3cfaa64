"""The explain-and-score loop at scale: resumable JSONL, per-unit failures, bounded batches (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from course_lib.autointerp import explainers, pipeline, records, results, scoring


def _unit(i: int) -> records.UnitRecords:
    top = [records.Record(0, "top", [1, 2, 3], ["x", " def", " y"], [0.0, 1.0 + i, 0.0])]
    rnd = [records.Record(1, "random", [4, 5, 6], [" a", " b", " c"], [0.0, 0.0, 0.0])]
    return records.UnitRecords(f"sae/{i}", "sae", 1.0 + i, top, top, rnd)


class FakeExplainer:
    """Explains 'the token " def"'; raises for units in ``bad``; records every batch it is given."""

    name = "fake"

    def __init__(self, bad: set[str] = frozenset(), stop_after: int | None = None, backend_error: set[str] = frozenset()):
        self.bad, self.stop_after, self.backend_error = set(bad), stop_after, set(backend_error)
        self.batches: list[list[str]] = []
        self.explained: list[str] = []

    def explain(self, ur):
        if ur.unit in self.bad:
            raise RuntimeError(f"boom on {ur.unit}")
        if self.stop_after is not None and len(self.explained) >= self.stop_after:
            raise KeyboardInterrupt  # an interrupted run
        self.explained.append(ur.unit)
        if ur.unit in self.backend_error:
            return explainers.Explanation(ur.unit, self.name, None, "backend error: timeout")
        return explainers.Explanation(ur.unit, self.name, 'the token " def".')

    def explain_many(self, urs):
        self.batches.append([u.unit for u in urs])
        return [self.explain(u) for u in urs]


def _scorers():
    return pipeline.Scorers(simulator=None, yes_no=None)


def test_results_in_order_and_batches_bounded(tmp_path):
    urs = [_unit(i) for i in range(7)]
    ex = FakeExplainer()
    res = pipeline.explain_and_score(ex, _scorers(), urs, progress=False, out=tmp_path / "r.jsonl", batch_size=3)
    assert [r.unit for r in res] == [u.unit for u in urs]
    assert [len(b) for b in ex.batches] == [3, 3, 1]
    assert all(r.scores["correlation_keyword"] == pytest.approx(1.0) for r in res)
    assert len(results.load_jsonl(tmp_path / "r.jsonl")) == 7


def test_failures_recorded_per_unit_and_retried(tmp_path):
    urs = [_unit(i) for i in range(5)]
    out = tmp_path / "r.jsonl"
    ex = FakeExplainer(bad={"sae/1"}, backend_error={"sae/3"})
    res = pipeline.explain_and_score(ex, _scorers(), urs, progress=False, out=out, batch_size=2)
    by = {r.unit: r for r in res}
    assert pipeline.is_failure(by["sae/1"]) and by["sae/1"].extra["stage"] == "explain"
    assert "RuntimeError: boom on sae/1" in by["sae/1"].reason and by["sae/1"].scores["correlation_keyword"] is None
    assert pipeline.is_failure(by["sae/3"]) and "backend error" in by["sae/3"].reason
    assert not any(pipeline.is_failure(by[u]) for u in ("sae/0", "sae/2", "sae/4"))
    assert by["sae/0"].scores["correlation_keyword"] == pytest.approx(1.0)  # the batch's other unit survived
    # a rerun retries only the failures and appends their new results
    ex2 = FakeExplainer()
    res2 = pipeline.explain_and_score(ex2, _scorers(), urs, progress=False, out=out, batch_size=2)
    assert sorted(ex2.explained) == ["sae/1", "sae/3"]
    assert not any(pipeline.is_failure(r) for r in res2)
    assert len(out.read_text().splitlines()) == 7


def test_scoring_failure_recorded(tmp_path):
    class BadScorers(pipeline.Scorers):
        def score(self, expl, ur):
            if ur.unit == "sae/2":
                raise ValueError("nan everywhere")
            return super().score(expl, ur)

    res = pipeline.explain_and_score(FakeExplainer(), BadScorers(simulator=None, yes_no=None),
                                     [_unit(i) for i in range(3)], progress=False)
    assert res[2].extra["stage"] == "score" and res[2].explanation == 'the token " def".'
    assert "ValueError: nan everywhere" in res[2].reason and not pipeline.is_failure(res[1])


def test_interrupted_run_resumes_losing_at_most_the_batch_in_flight(tmp_path):
    urs = [_unit(i) for i in range(10)]
    out = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        pipeline.explain_and_score(FakeExplainer(stop_after=5), _scorers(), urs, progress=False, out=out,
                                   batch_size=2)
    saved = results.load_jsonl(out)
    assert [r.unit for r in saved] == [f"sae/{i}" for i in range(4)]  # unit 4 was in flight: lost
    # simulate a kill during a write: a partial last line
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"unit": "sae/4", "kind": "sa')
    ex = FakeExplainer()
    res = pipeline.explain_and_score(ex, _scorers(), urs, progress=False, out=out, batch_size=2)
    assert ex.explained == [f"sae/{i}" for i in range(4, 10)]  # nothing done twice
    assert [r.unit for r in res] == [u.unit for u in urs]
    lines = out.read_text().splitlines()
    assert len(lines) == 10 and all(json.loads(line) for line in lines)  # partial line repaired
    # a third run does nothing; another explainer's results in the same file are separate
    ex3 = FakeExplainer()
    pipeline.explain_and_score(ex3, _scorers(), urs, progress=False, out=out)
    assert ex3.explained == []
    ex4 = FakeExplainer()
    ex4.name = "other"
    pipeline.explain_and_score(ex4, _scorers(), urs[:2], progress=False, out=out)
    assert ex4.explained == ["sae/0", "sae/1"]


def test_progress_bar_reports_units_per_second(tmp_path, capsys):
    pipeline.explain_and_score(FakeExplainer(), _scorers(), [_unit(i) for i in range(3)], progress=True,
                               out=tmp_path / "r.jsonl", batch_size=2)
    err = capsys.readouterr().err
    assert "unit/s" in err and "3/3" in err


def test_results_key_changes_with_every_input(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    urs = [_unit(i) for i in range(3)]
    base = pipeline.results_key(explainers.TokenStatsExplainer(), _scorers(), urs)
    assert base == pipeline.results_key(explainers.TokenStatsExplainer(), _scorers(), [_unit(i) for i in range(3)])
    changed_act = [_unit(0), _unit(1), records.UnitRecords("sae/2", "sae", 3.0, _unit(2).train,
                                                           [records.Record(0, "top", [1, 2, 3], ["x", " def", " y"],
                                                                           [0.0, 3.5, 0.0])], _unit(2).test_random)]
    others = [
        pipeline.results_key(explainers.TokenStatsExplainer(max_tokens=2), _scorers(), urs),
        pipeline.results_key(explainers.TokenStatsExplainer(), pipeline.Scorers(simulator=None, yes_no=None, seed=1), urs),
        pipeline.results_key(explainers.TokenStatsExplainer(), _scorers(), urs[:2]),
        pipeline.results_key(explainers.TokenStatsExplainer(), _scorers(), changed_act),
    ]
    assert len({base, *others}) == 5
    path = pipeline.cached_results_path(explainers.TokenStatsExplainer(), _scorers(), urs)
    assert path.parent == tmp_path / "autointerp_results" and path.suffix == ".jsonl"


def test_cached_results_are_reused_not_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    urs = [_unit(i) for i in range(4)]
    ex = FakeExplainer()
    out = pipeline.cached_results_path(ex, _scorers(), urs)
    first = pipeline.explain_and_score(ex, _scorers(), urs, progress=False, out=out)
    again = FakeExplainer()
    second = pipeline.explain_and_score(again, _scorers(), urs, progress=False,
                                        out=pipeline.cached_results_path(again, _scorers(), urs))
    assert again.explained == [] and [r.to_json() for r in second] == [r.to_json() for r in first]


# --------------------------------------------------------------------------- rescore


class FakeYesNo(scoring.YesNoScorer):
    """P(Yes) 0.9 for a question whose text holds " def", else 0.5 (ties with the threshold and each other)."""

    def __post_init__(self):
        self.yes, self.no = [1], [2]

    def p_yes(self, questions):
        return np.array([0.9 if "Text:\nx def" in q or "<< def>>" in q else 0.5 for q in questions])


class FakeEmbedder:
    def encode(self, texts, **kwargs):
        return np.array([[1.0, 0.0] if " def" in t else [0.6, 0.8] for t in texts])


class RampSimulator:
    def simulate(self, explanation, recs):
        return [np.arange(len(r.tokens), dtype=float) for r in recs]


def _scored_unit():
    top = [records.Record(0, "top", [1, 2, 3], ["x", " def", " y"], [0.0, 2.0, 0.5]),
           records.Record(2, "top", [1, 2, 3], ["a", " b", " def"], [0.1, 0.0, 1.5])]
    rnd = [records.Record(1, "random", [4, 5, 6], [" a", " b", " c"], [0.0, 0.2, 0.0]),
           records.Record(3, "random", [4, 5, 6], [" d", " e", " f"], [0.0, 0.0, 0.0])]
    ur = records.UnitRecords("sae/9", "sae", 2.0, top[:1], top, rnd)
    scorers = pipeline.Scorers(simulator=RampSimulator(), yes_no=FakeYesNo(None), embedder=FakeEmbedder())
    return scorers.score(explainers.Explanation(ur.unit, "fake", 'the token " def".'), ur)


def test_results_store_the_predictions_of_every_metric():
    r = _scored_unit()
    assert len(r.extra["detection_p_yes"]) == 4 and len(r.extra["embedding_similarity"]) == 4
    assert r.extra["fuzzing_labels"] == [1, 0, 1, 0] and len(r.extra["fuzzing_p_yes"]) == 4
    assert all(r.scores[k] is not None for k in ("correlation_llm", "detection_auroc", "fuzzing_auroc", "embedding_auroc"))


def test_rescore_with_the_library_functions_reproduces_the_scores():
    fresh = _scored_unit()
    reloaded = results.Result.from_dict(json.loads(fresh.to_json()))
    again = pipeline.rescore(reloaded)
    assert again.scores == reloaded.scores  # exactly, None where a score is undefined
    assert pipeline.rescore(fresh).scores == json.loads(fresh.to_json())["scores"]


def test_rescore_uses_the_given_functions_on_plain_lists():
    seen = []

    def corr(real, sim):
        seen.append((type(real), type(real[0]), type(sim[0])))
        return None  # undefined

    base = _scored_unit()
    r = pipeline.rescore(base, correlation_fn=corr, auroc_fn=lambda y, s: np.float64(0.25),
                         balanced_accuracy_fn=lambda y, s, t: torch.tensor(0.75 if t == 0.5 else 0.0))
    assert seen == [(list, list, list)] * 2
    assert r.scores["correlation_llm"] is None and r.scores["correlation_keyword"] is None
    for k in ("detection_auroc", "fuzzing_auroc", "embedding_auroc"):
        assert r.scores[k] == 0.25
    assert r.scores["detection_bacc"] == 0.75 and r.scores["fuzzing_bacc"] == 0.75
    assert r.scores["rsquared_llm"] == base.scores["rsquared_llm"]  # not a metric of the exercises: kept
    assert base.scores["detection_auroc"] != 0.25  # the input is not modified


def test_rescore_keeps_scores_without_stored_predictions():
    r = _scored_unit()
    for k in ("fuzzing_p_yes", "embedding_similarity", "simulated"):
        del r.extra[k]
    again = pipeline.rescore(r, correlation_fn=lambda a, s: 0.5, auroc_fn=lambda y, s: 0.25)
    assert again.scores["fuzzing_auroc"] == r.scores["fuzzing_auroc"]
    assert again.scores["embedding_auroc"] == r.scores["embedding_auroc"]
    assert again.scores["correlation_llm"] == r.scores["correlation_llm"]
    assert again.scores["correlation_keyword"] == 0.5 and again.scores["detection_auroc"] == 0.25
    missing = results.Result("sae/1", "sae", "fake", None, "dead unit", {k: None for k in results.SCORE_KEYS},
                             _unit(1).to_dict(), {})
    assert pipeline.rescore(missing, auroc_fn=lambda y, s: 1 / 0).scores == missing.scores


def test_lm_scorers_see_a_seeded_subset_and_rescore_reads_it():
    top = [records.Record(i, "top", [1, 2, 3], ["x", " def", " y"], [0.0, 2.0, 0.5]) for i in range(6)]
    quant = [records.Record(10 + i, "quantile", [1, 2, 3], ["x", " def", " y"], [0.0, 0.5, 0.0], i % 2)
             for i in range(4)]
    rnd = [records.Record(20 + i, "random", [4, 5, 6], [" a", " b", " c"], [0.0, 0.0, 0.0]) for i in range(6)]
    ur = records.UnitRecords("sae/9", "sae", 2.0, top[:1], top, rnd, test_quantile=quant)
    base = pipeline.Scorers(simulator=RampSimulator(), yes_no=FakeYesNo(None), embedder=FakeEmbedder(),
                            lm_records=(2, 1, 3), seed=4)
    r = base.score(explainers.Explanation(ur.unit, "fake", 'the token " def".'), ur)
    sub = r.lm_unit_records()
    assert (len(sub.test_top), len(sub.test_quantile), len(sub.test_random)) == (2, 1, 3)
    assert len(r.extra["simulated"]) == 6 and len(r.extra["detection_p_yes"]) == 6
    assert len(r.extra["simulated_keyword"]) == 16 and len(r.extra["embedding_similarity"]) == 16  # cheap: all
    assert r.extra["lm_windows"] == [x.window for x in sub.test]
    assert base.lm_subset(ur) == sub  # the same records for every explainer of the unit
    assert set(r.extra["seconds"]) >= {"keyword", "embedding", "simulation", "detection_and_fuzzing"}
    again = pipeline.rescore(results.Result.from_dict(json.loads(r.to_json())))
    assert again.scores == json.loads(r.to_json())["scores"]
    cost = pipeline.cost_per_unit([r, r])
    assert cost["fake"]["simulation"]["records_per_unit"] == 6 and cost["fake"]["embedding"]["records_per_unit"] == 16
    assert "**all stages**" in pipeline.cost_markdown(cost)
