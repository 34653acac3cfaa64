"""Notebook 04's bookkeeping: parameter checks and sizes, the language-model tier, printed summaries, the
gates' prose and the metrics dictionary (no model)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from course_lib import runtime
from course_lib.autointerp import notebook, records, results

DEFAULTS = dict(use_reference_solutions=False, backend="local", base_url="http://127.0.0.1:8000/v1",
                model="gpt-4o-mini", api_key_env="OPENAI_API_KEY", score_on="local", sampling="top", units_per_kind=0)


def _check(profile: str = "smoke", **overrides) -> notebook.Settings:
    return notebook.check_parameters(profile, **{**DEFAULTS, **overrides})


def _unit(name: str, kind: str, n_top: int = 2, n_quantile: int = 1, n_random: int = 2) -> records.UnitRecords:
    rec = records.Record(0, "top", [1], [" def"], [1.0])
    return records.UnitRecords(name, kind, 1.0, [rec], [rec] * n_top, [rec] * n_random, [rec] * n_quantile)


def _result(unit: str, kind: str, explainer: str = "e", explanation: str | None = "x", **scores) -> results.Result:
    return results.Result(unit=unit, kind=kind, explainer=explainer, explanation=explanation,
                          reason=None if explanation is not None else "dead unit", scores=scores, records={})


# --------------------------------------------------------------------------- parameters and sizes


def test_each_profile_gets_its_sizes_in_a_frozen_dataclass():
    smoke, workshop, full = (_check(p) for p in runtime.PROFILES)
    assert (smoke.ctx, smoke.n_windows, smoke.n_units, smoke.lm_units) == (8, 64, 2, 1)
    assert smoke.rec_cfg == records.RecordConfig(n_train=2, n_test_top=2, n_test_random=2, n_test_quantile=2,
                                                 n_quantiles=2, sampling="top")
    assert (smoke.lm_records, smoke.max_new_tokens, smoke.lm_score_baseline) == ((2, 1, 2), 12, False)
    assert (workshop.ctx, workshop.n_windows, workshop.n_units, workshop.lm_units) == (24, 1200, 24, 3)
    assert workshop.rec_cfg == records.RecordConfig(n_train=5, n_test_top=20, n_test_random=20, n_test_quantile=10)
    assert (workshop.lm_records, workshop.max_new_tokens, workshop.lm_score_baseline) == ((3, 2, 4), 32, False)
    assert (full.n_units, full.lm_units, full.lm_records, full.lm_score_baseline) == (40, 40, None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.ctx = 3  # type: ignore[misc]


def test_units_per_kind_overrides_the_profile_and_caps_the_language_model_tier():
    assert _check("workshop", units_per_kind=2).n_units == 2 and _check("workshop", units_per_kind=2).lm_units == 2
    assert _check("full", units_per_kind=7).lm_units == 7
    assert _check("smoke", sampling="quantiles").rec_cfg.sampling == "quantiles"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"use_reference_solutions": 1}, "USE_REFERENCE_SOLUTIONS=1 has type int; expected bool"),
    ({"backend": "openai"}, "BACKEND='openai' is not valid; valid values: 'local', 'openai_compatible', 'baseline'"),
    ({"sampling": "random"}, "SAMPLING='random' is not valid; valid values: 'top', 'quantiles'"),
    ({"score_on": "remote"}, "SCORE_ON='remote' is not valid; valid values: 'local', 'server'"),
    ({"score_on": "server"}, "SCORE_ON='server' needs BACKEND='openai_compatible' (got BACKEND='local'); "
                             "valid values: SCORE_ON='local' with any BACKEND"),
    ({"model": 3}, "MODEL=3 has type int; expected str"),
    ({"units_per_kind": True}, "UNITS_PER_KIND=True has type bool; expected int"),
    ({"units_per_kind": -1}, "UNITS_PER_KIND=-1 is out of range; valid values: [0, 1000]"),
    ({"units_per_kind": 1001}, "UNITS_PER_KIND=1001 is out of range; valid values: [0, 1000]"),
    ({"backend": "openai_compatible", "base_url": "ftp://x"}, "BASE_URL='ftp://x' must start with http:// or https://"),
])
def test_a_wrong_parameter_raises_a_parameter_error_naming_it(overrides, message):
    with pytest.raises(runtime.ParameterError, match=re.escape(message)):
        _check(**overrides)


def test_the_key_variable_must_be_set_only_for_a_server(monkeypatch):
    monkeypatch.delenv("COURSE_TEST_KEY", raising=False)
    server = dict(backend="openai_compatible", api_key_env="COURSE_TEST_KEY")
    _check(api_key_env="COURSE_TEST_KEY")  # the local backend reads no key
    with pytest.raises(runtime.ParameterError, match="API_KEY_ENV='COURSE_TEST_KEY': that environment variable"):
        _check(**server)
    _check(backend="openai_compatible", api_key_env="")  # a server without a key
    monkeypatch.setenv("COURSE_TEST_KEY", "k")
    _check(**server, score_on="server")


def test_describe_settings_names_the_device_and_the_tiers():
    text = notebook.describe_settings(_check("workshop"), torch.device("cpu"))
    assert text == ("device=cpu, 24 units per kind, records of 24 tokens, RecordConfig(n_train=5, n_test_top=20, "
                    "n_test_random=20, sampling='top', n_quantiles=5, n_test_quantile=10, "
                    "negative_threshold=0.1)\n"
                    "language-model tier: 3 units per kind, test records (top, quantile, random) per unit: (3, 2, 4)")
    assert notebook.describe_settings(_check("full"), "cpu").endswith("per unit: all")


# --------------------------------------------------------------------------- units and the tier


def test_lm_tier_draws_n_units_of_each_kind_with_the_seed_in_the_records_order():
    urs = [_unit(f"{kind}/{i}", kind) for kind in ("sae", "neuron", "random") for i in range(5)]
    tier = notebook.lm_tier(urs, 2, seed=1)
    assert tier == notebook.lm_tier(urs, 2, seed=1)
    assert [sum(u.kind == k for u in tier) for k in ("sae", "neuron", "random")] == [2, 2, 2]
    assert [urs.index(u) for u in tier] == sorted(urs.index(u) for u in tier)
    gen = torch.Generator().manual_seed(1)  # the notebook's former inline draw
    names = set()
    for kind in ("sae", "neuron", "random"):
        of_kind = [u.unit for u in urs if u.kind == kind]
        names.update(of_kind[i] for i in torch.randperm(len(of_kind), generator=gen)[:2].tolist())
    assert {u.unit for u in tier} == names
    assert notebook.lm_tier(urs, 10, seed=0) == urs


def test_describe_units_counts_units_and_records_per_kind():
    urs = [_unit("sae/1", "sae"), _unit("sae/2", "sae", n_top=4), _unit("neuron/3", "neuron"),
           _unit("random/0", "random", n_quantile=0)]
    text = notebook.describe_units(urs, urs[:1], layer=15, n_latents=4608, d_mlp=1536, d_model=576, n_windows=64,
                                   ctx=8, seconds=1.25)
    assert text.splitlines() == [
        "layer 15: 4608 SAE latents, 1536 MLP neurons, d_model 576",
        "   sae: 2 units; test records per unit (mean): 3.0 top, 1.0 quantile, 2.0 random, 2.0 non-activating (n/a silent at every token, the rest the unit's weakest windows)",
        "neuron: 1 units; test records per unit (mean): 2.0 top, 1.0 quantile, 2.0 random, 2.0 non-activating (n/a silent at every token, the rest the unit's weakest windows)",
        "random: 1 units; test records per unit (mean): 2.0 top, 0.0 quantile, 2.0 random, 2.0 non-activating (n/a silent at every token, the rest the unit's weakest windows)",
        "4 units (1 in the language-model tier), 64 windows of 8 tokens, 1.2s",
    ]


# --------------------------------------------------------------------------- the scoring loop's output


def test_scoring_line_and_result_lines():
    assert notebook.scoring_line("baseline:token-stats", 14.84, 72, 0, cheap_only=True) == (
        "baseline:token-stats: 14.8s for 72 units (0 read back from the cache); keyword and embedding scorers only")
    assert notebook.scoring_line("local:smollm2", 58.4, 9, 9, cheap_only=False) == (
        "local:smollm2: 58.4s for 9 units (9 read back from the cache)")
    rs = [_result("sae/1008", "sae", "local:smollm2", "the activation values.", correlation_llm=0.0512,
                  rsquared_llm=0.0),
          _result("random/21", "random", "baseline:token-stats", None, correlation_llm=None)]
    assert notebook.result_lines(rs).splitlines() == [
        "    sae/1008          local:smollm2  r= 0.05  R2=  0.0  ...find the activation values.",
        "   random/21   baseline:token-stats  r= None  R2= None  ...find [missing: dead unit]",
    ]


# --------------------------------------------------------------------------- gates and means


def test_control_summary_reads_the_cheap_scorers_from_the_baseline():
    base = {"random": {"correlation_keyword": {"mean": 0.1}, "detection_auroc": {"mean": 0.9}}}
    main = {"random": {"correlation_keyword": {"mean": 0.7}, "detection_auroc": {"mean": 0.4}}}
    control = notebook.control_summary(base, main)
    assert list(control) == ["sae", "neuron", "random"] and list(control["random"]) == list(results.SCORE_KEYS)
    assert control["random"]["correlation_keyword"] == {"mean": 0.1}
    assert control["random"]["detection_auroc"] == {"mean": 0.4}
    assert control["sae"]["embedding_auroc"] is None


def test_gates_report_markdown_adds_the_language_model_tier_only_for_another_explainer():
    planted = [_result("token/ def", "token", correlation_keyword=1.0)]
    summary = results.summarise([_result(f"random/{i}", "random", correlation_keyword=0.0) for i in range(3)])
    gates = results.sanity_gates(planted, summary, keys=("correlation_keyword",))
    report = notebook.GatesReport(gates, baseline="baseline:token-stats", baseline_summary=summary, n_units=72,
                                  main="local:smollm2", main_summary=summary, n_lm_units=9)
    table, tier = notebook.gates_report_markdown(report)
    assert table == (results.gates_markdown(gates, summary)
                     + "\n\n(conclusions above: the baseline:token-stats explanations of all 72 units)")
    assert tier == ("**The language-model tier** (local:smollm2, 9 units):\n"
                    + results.gates_markdown(gates, summary, table=False))
    only = dataclasses.replace(report, main="baseline:token-stats")
    assert notebook.gates_report_markdown(only) == (table,)


def test_baseline_means_markdown_gives_each_kind_its_mean_and_count():
    rs = [_result("sae/1", "sae", "b", correlation_keyword=0.5, embedding_auroc=0.75),
          _result("sae/2", "sae", "b", correlation_keyword=0.25, embedding_auroc=None),
          _result("random/1", "random", "b", correlation_keyword=None, embedding_auroc=0.5),
          _result("sae/1", "sae", "other", correlation_keyword=1.0)]
    means = notebook.baseline_means(rs, "b", n_units=3)
    assert means.correlation_keyword == (notebook.KindMean("random", None, 0), notebook.KindMean("sae", 0.375, 2))
    assert notebook.baseline_means_markdown(means) == (
        "**This run** (3 units): baseline keyword correlation by kind: random - (n=0), sae 0.38 (n=2); "
        "embedding AUROC: random 0.50 (n=1), sae 0.75 (n=1).")


# --------------------------------------------------------------------------- metrics


def test_run_metrics_assemble_the_metrics_dictionary_in_order():
    settings = _check("workshop")
    rs = [_result("sae/1", "sae", "b", correlation_keyword=0.5), _result("sae/2", "sae", "b", None),
          _result("sae/1", "sae", "m", correlation_llm=0.1)]
    planted = [_result("token/ def", "token", "planted:true", 'the token " def".', correlation_keyword=1.0,
                       correlation_llm=0.05)]
    m = notebook.run_metrics(rs, ["b", "m"], settings=settings, backend="local", main="m", n_units=2, n_lm_units=1,
                             def_baseline_explanation='the tokens " def".', def_result=planted[0],
                             planted_results=planted, cost={"c": {}}, per_quantile={"p": {}}, gates={"g": {}})
    d = m.as_dict()
    assert list(d) == ["n_units_scored", "n_results", "n_missing_explanations", "backend", "main_explainer",
                       "def_unit_baseline_explanation", "def_unit_correlation_keyword", "def_unit_correlation_llm",
                       "planted_units", "tiers", "cost_per_unit_cpu_s", "per_quantile", "scores", "sanity_gates"]
    assert (d["n_units_scored"], d["n_results"], d["n_missing_explanations"]) == (2, 3, 1)
    assert (d["def_unit_correlation_keyword"], d["def_unit_correlation_llm"]) == (1.0, 0.05)
    assert d["planted_units"] == {"token/ def": {"explanation": 'the token " def".', "scores": planted[0].scores}}
    assert d["tiers"] == {"units_per_kind": 24, "lm_units_per_kind": 3, "lm_records": (3, 2, 4), "n_units": 2,
                          "n_lm_units": 1, "test_records": {"top": 20, "quantile": 10, "random": 20}}
    assert d["scores"] == {"b": results.summarise(rs, "b"), "m": results.summarise(rs, "m")}
    lines = notebook.scores_text(m.scores).splitlines()
    assert len(lines) == 2 and lines[0].startswith("b sae {'correlation_llm': None, 'correlation_keyword': 0.5,")
    assert lines[1].startswith("m sae {'correlation_llm': 0.1,")
