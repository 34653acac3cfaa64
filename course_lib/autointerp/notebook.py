"""Notebook 04's bookkeeping: its parameters checked and sized, the language-model tier drawn, and the
run's printed summaries, report prose and ``metrics.json`` assembled.

The notebook shows the experiment (harvest, explain, score, gate, plot); what it prints about its sizes,
the Markdown it shows around the gates and the nested dictionary it writes to ``metrics.json`` are built
here from values the notebook computed, so every number is the run's own. Nothing here runs a model:

* :func:`check_parameters` -> :class:`Settings` (the sizes of one profile), :func:`describe_settings`;
* :func:`lm_tier` (the units the language-model scorers see), :func:`describe_units`;
* :func:`scoring_line`, :func:`result_lines` (what the scoring loop prints);
* :func:`control_summary` and :class:`GatesReport` -> :func:`gates_report_markdown`;
* :class:`BaselineMeans` -> :func:`baseline_means_markdown`;
* :class:`RunMetrics` (with :class:`Tiers`) -> :meth:`RunMetrics.as_dict`, :func:`scores_text`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from course_lib import runtime
from course_lib.autointerp.records import SAMPLINGS, RecordConfig, UnitRecords
from course_lib.autointerp.results import SCORE_KEYS, Result, gates_markdown, summarise
from course_lib.autointerp.units import UNIT_KINDS

BACKENDS: tuple[str, ...] = ("local", "openai_compatible", "baseline")  # valid values of BACKEND
SCORE_ON_CHOICES: tuple[str, ...] = ("local", "server")  # valid values of SCORE_ON
UNITS_PER_KIND_MAX = 1000  # the largest UNITS_PER_KIND accepted
CHEAP_KEYS: tuple[str, ...] = ("correlation_keyword", "embedding_auroc")  # the scorers that see every unit


# --------------------------------------------------------------------------- parameters and sizes


@dataclasses.dataclass(frozen=True)
class Settings:
    """Notebook 04's sizes for one profile, derived from its parameters by :func:`check_parameters`.

    The language-model tier: the LLM explainer and the LM scorers (simulation, detection, fuzzing, surprisal,
    intruder) cost CPU-seconds per record, so in the workshop profile they see a random subset of the units
    (``lm_units`` per kind) and of each unit's test records (``lm_records`` = top, quantile, random); the
    keyword simulator and the embedding scorer see every unit and every record. Sized by the costs the
    notebook measures (its cost table).
    """

    ctx: int  # tokens per record (after BOS)
    n_windows: int  # held-out windows searched for records
    n_units: int  # units per kind
    rec_cfg: RecordConfig  # records per unit: train, and test top / quantile (delphi) / random
    lm_units: int  # units per kind in the language-model tier (at most n_units)
    lm_records: tuple[int, int, int] | None  # test records (top, quantile, random) the LM scorers see per unit;
    #   None: all of them
    max_new_tokens: int  # length of a local explanation, in tokens
    lm_score_baseline: bool  # the LM scorers score the token-statistics baseline too (full profile); else the
    #   baseline is scored by the scorers that need no LM only (keyword simulator, embedding), on every unit


def check_parameters(profile: str, *, use_reference_solutions: bool, backend: str, base_url: str, model: str,
                     api_key_env: str, score_on: str, sampling: str, units_per_kind: int) -> Settings:
    """Validate notebook 04's own parameters (those after ``PROFILE, SEED, OUT_DIR, DEVICE``, which
    :func:`~course_lib.runtime.start_run` checks) and derive the sizes of ``profile``.

    The arguments are the notebook's parameters as typed (any value: the types are what is checked).

    Raises :class:`~course_lib.runtime.ParameterError` naming the parameter (and the valid values) for a
    wrong type, an unknown choice, ``score_on="server"`` without ``backend="openai_compatible"``,
    ``units_per_kind`` outside ``[0, UNITS_PER_KIND_MAX]``, and, with ``backend="openai_compatible"``, a
    ``base_url`` that is not http(s) or an ``api_key_env`` naming an unset environment variable.
    ``units_per_kind=0`` means the profile's default.
    """
    runtime.check_type("USE_REFERENCE_SOLUTIONS", use_reference_solutions, bool)
    runtime.check_choice("BACKEND", backend, BACKENDS)
    runtime.check_choice("SAMPLING", sampling, SAMPLINGS)
    runtime.check_choice("SCORE_ON", score_on, SCORE_ON_CHOICES)
    if score_on == "server" and backend != "openai_compatible":
        raise runtime.ParameterError(f"SCORE_ON='server' needs BACKEND='openai_compatible' (got BACKEND={backend!r}); "
                                     "valid values: SCORE_ON='local' with any BACKEND")
    for name, value in (("BASE_URL", base_url), ("MODEL", model), ("API_KEY_ENV", api_key_env)):
        runtime.check_type(name, value, str)
    runtime.check_type("UNITS_PER_KIND", units_per_kind, int)
    runtime.check_range("UNITS_PER_KIND", units_per_kind, 0, UNITS_PER_KIND_MAX)
    if backend == "openai_compatible":
        if not base_url.startswith(("http://", "https://")):
            raise runtime.ParameterError(f"BASE_URL={base_url!r} must start with http:// or https://")
        if api_key_env and not os.environ.get(api_key_env):
            raise runtime.ParameterError(
                f"API_KEY_ENV={api_key_env!r}: that environment variable is not set; set it, or use API_KEY_ENV='' "
                "for a server without a key")

    def pick(smoke: Any, workshop: Any, full: Any) -> Any:
        """The value for ``profile``."""
        return runtime.by_profile(profile, smoke=smoke, workshop=workshop, full=full)

    n_units = units_per_kind or pick(2, 24, 40)
    return Settings(
        ctx=pick(8, 24, 64),
        n_windows=pick(64, 1200, 4000),
        n_units=n_units,
        rec_cfg=pick(
            RecordConfig(n_train=2, n_test_top=2, n_test_random=2, n_test_quantile=2, n_quantiles=2,
                         sampling=sampling),
            RecordConfig(n_train=5, n_test_top=20, n_test_random=20, n_test_quantile=10,
                         sampling=sampling),
            RecordConfig(n_train=10, n_test_top=20, n_test_random=20, n_test_quantile=20,
                         sampling=sampling),
        ),
        lm_units=min(n_units, pick(1, 3, n_units)),
        lm_records=pick((2, 1, 2), (3, 2, 4), None),
        max_new_tokens=pick(12, 32, 48),
        lm_score_baseline=pick(False, False, True),
    )


def describe_settings(settings: Settings, device: torch.device | str) -> str:
    """Two lines saying the run's device and sizes: units per kind, record length, record counts, and the
    language-model tier (units per kind, test records per unit)."""
    lm_records = "all" if settings.lm_records is None else settings.lm_records
    return (f"device={device}, {settings.n_units} units per kind, records of {settings.ctx} tokens, "
            f"{settings.rec_cfg}\n"
            f"language-model tier: {settings.lm_units} units per kind, test records (top, quantile, random) "
            f"per unit: {lm_records}")


# --------------------------------------------------------------------------- units and the language-model tier


def lm_tier(unit_records: Sequence[UnitRecords], n_per_kind: int, seed: int) -> list[UnitRecords]:
    """The units of the language-model tier: ``n_per_kind`` units of each kind of :data:`UNIT_KINDS`, drawn
    at random (``torch.randperm`` with a generator seeded by ``seed``, one draw per kind in that order);
    returned in the order of ``unit_records``."""
    gen = torch.Generator().manual_seed(seed)
    names: set[str] = set()
    for kind in UNIT_KINDS:
        of_kind = [u.unit for u in unit_records if u.kind == kind]
        names.update(of_kind[i] for i in torch.randperm(len(of_kind), generator=gen)[:n_per_kind].tolist())
    return [u for u in unit_records if u.unit in names]


def _share(k: int, n: int) -> str:
    return f"{k / n:.0%}" if n else "n/a"


def describe_units(unit_records: Sequence[UnitRecords], lm_unit_records: Sequence[UnitRecords], *, layer: int,
                   n_latents: int, d_mlp: int, d_model: int, n_windows: int, ctx: int, seconds: float) -> str:
    """What was harvested, as lines of text: the layer and its unit counts, per unit kind the number of units
    and the mean number of top / quantile / random / non-activating test records per unit (with the share
    of non-activating records that stay at level 0 at every token), then the totals (units, units in
    the language-model tier, windows of ``ctx`` tokens) and the ``seconds`` it took."""
    lines = [f"layer {layer}: {n_latents} SAE latents, {d_mlp} MLP neurons, d_model {d_model}"]
    for kind in UNIT_KINDS:
        urs = [u for u in unit_records if u.kind == kind]
        lines.append(f"{kind:>6}: {len(urs)} units; test records per unit (mean): "
                     f"{np.mean([len(u.test_top) for u in urs]):.1f} top, "
                     f"{np.mean([len(u.test_quantile) for u in urs]):.1f} quantile, "
                     f"{np.mean([len(u.test_random) for u in urs]):.1f} random, "
                     f"{np.mean([len(u.negatives) for u in urs]):.1f} non-activating "
                     f"({_share(sum(u.n_negative_silent for u in urs), sum(len(u.test_negative) for u in urs))} "
                     f"silent at every token, the rest the unit's weakest windows)")
    lines.append(f"{len(unit_records)} units ({len(lm_unit_records)} in the language-model tier), {n_windows} "
                 f"windows of {ctx} tokens, {seconds:.1f}s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the scoring loop's output


def scoring_line(explainer: str, seconds: float, n_units: int, n_cached: int, cheap_only: bool) -> str:
    """One line per explainer of the scoring loop: its name, the ``seconds`` it took for ``n_units`` units,
    how many results were read back from the cache, and whether only the cheap scorers ran."""
    return (f"{explainer}: {seconds:.1f}s for {n_units} units ({n_cached} read back from the cache)"
            + ("; keyword and embedding scorers only" if cheap_only else ""))


def result_lines(rs: Sequence[Result]) -> str:
    """One line per result: unit, explainer, the LM simulator's correlation ``r`` and ``R2`` (rounded to 2
    places, None when missing) and the explanation (or why it is missing)."""
    lines = []
    for r in rs:
        expl = r.explanation if r.explanation is not None else f"[missing: {r.reason}]"
        corr, r2 = r.scores["correlation_llm"], r.scores.get("rsquared_llm")
        lines.append(f"{r.unit:>12} {r.explainer:>22}  r={corr if corr is None else round(corr, 2)!s:>5}  "
                     f"R2={r2 if r2 is None else round(r2, 2)!s:>5}  ...find {expl}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the gates


def control_summary(baseline_summary: Mapping[str, Any], main_summary: Mapping[str, Any],
                    cheap_keys: Sequence[str] = CHEAP_KEYS) -> dict[str, dict[str, Any]]:
    """The summary the control gate and the headline read: ``{kind: {score key: entry}}`` for every kind of
    :data:`UNIT_KINDS` and every score of :data:`~.results.SCORE_KEYS`, taken for the scorers that see every
    unit (``cheap_keys``) from the baseline's :func:`~.results.summarise`, for the others from the main
    explainer's (None where a summary has no entry)."""
    return {kind: {k: (baseline_summary if k in cheap_keys else main_summary).get(kind, {}).get(k)
                   for k in SCORE_KEYS} for kind in UNIT_KINDS}


@dataclasses.dataclass(frozen=True)
class GatesReport:
    """What the gates section shows: the gates, and the summaries whose conclusions they allow."""

    gates: dict[str, dict[str, Any]]  # :func:`~.results.sanity_gates` of this run
    baseline: str  # name of the token-statistics explainer
    baseline_summary: dict[str, Any]  # :func:`~.results.summarise` of the baseline's results
    n_units: int  # units the baseline explained (all of them)
    main: str  # name of the main explainer (the baseline itself when no LLM explains)
    main_summary: dict[str, Any]  # :func:`~.results.summarise` of the main explainer's results
    n_lm_units: int  # units of the language-model tier
    baseline_differences: dict[str, Any] | None = None  # :func:`~.gates.kind_differences` of the baseline's results
    main_differences: dict[str, Any] | None = None  # the same for the main explainer's results


def gates_report_markdown(report: GatesReport) -> tuple[str, ...]:
    """The gates section as Markdown blocks, one per display: the gate table with the conclusions for the
    baseline's explanations of every unit, then (when the main explainer is not the baseline) the
    conclusions for the main explainer on the language-model tier."""
    blocks = [gates_markdown(report.gates, report.baseline_summary, differences=report.baseline_differences)
              + f"\n\n(conclusions above: the {report.baseline} explanations of all {report.n_units} units)"]
    if report.main != report.baseline:
        blocks.append(f"**The language-model tier** ({report.main}, {report.n_lm_units} units):\n"
                      + gates_markdown(report.gates, report.main_summary, table=False,
                                       differences=report.main_differences))
    return tuple(blocks)


# --------------------------------------------------------------------------- the baseline's means


@dataclasses.dataclass(frozen=True)
class KindMean:
    """One scorer's mean over the units of one kind."""

    kind: str  # unit kind
    mean: float | None  # mean over units (None: no unit has this score)
    n: int  # units with this score


@dataclasses.dataclass(frozen=True)
class BaselineMeans:
    """The token-statistics baseline's means per unit kind for the two scorers that see every unit."""

    n_units: int  # units of the run (the baseline explains all of them)
    correlation_keyword: tuple[KindMean, ...]  # keyword-simulator correlation, per kind
    embedding_auroc: tuple[KindMean, ...]  # embedding AUROC, per kind


def baseline_means(results: Sequence[Result], baseline: str, n_units: int) -> BaselineMeans:
    """The baseline's mean keyword correlation and embedding AUROC per unit kind (kinds in
    :func:`~.results.summarise`'s order), each with the number of units that have the score."""
    per_kind = summarise(results, baseline)

    def means(key: str) -> tuple[KindMean, ...]:
        """The mean of score ``key`` per kind."""
        return tuple(KindMean(kind, e[key]["mean"], e[key]["n"]) for kind, e in per_kind.items())

    return BaselineMeans(n_units=n_units, correlation_keyword=means("correlation_keyword"),
                         embedding_auroc=means("embedding_auroc"))


def baseline_means_markdown(m: BaselineMeans) -> str:
    """One Markdown sentence: the baseline's keyword correlation and embedding AUROC by kind (mean to 2
    places, ``-`` when missing, with ``n``)."""

    def join(means: tuple[KindMean, ...]) -> str:
        """``kind mean (n=...)`` per kind, comma-separated."""
        return ", ".join(f"{e.kind} {'-' if e.mean is None else format(e.mean, '.2f')} (n={e.n})" for e in means)

    return (f"**This run** ({m.n_units} units): baseline keyword correlation by kind: "
            f"{join(m.correlation_keyword)}; embedding AUROC: {join(m.embedding_auroc)}.")


# --------------------------------------------------------------------------- metrics.json


@dataclasses.dataclass(frozen=True)
class Tiers:
    """How many units and records each tier of scorers saw."""

    units_per_kind: int  # units per kind (the cheap scorers see all of them)
    lm_units_per_kind: int  # units per kind of the language-model tier
    lm_records: tuple[int, int, int] | None  # test records (top, quantile, random) per unit the LM scorers see
    n_units: int  # units scored
    n_lm_units: int  # units in the language-model tier
    n_test_top: int  # top-activating test records per unit
    n_test_quantile: int  # quantile test records per unit
    n_test_random: int  # random test records per unit

    def as_dict(self) -> dict[str, Any]:
        """The ``tiers`` entry of ``metrics.json``."""
        return {"units_per_kind": self.units_per_kind, "lm_units_per_kind": self.lm_units_per_kind,
                "lm_records": self.lm_records, "n_units": self.n_units, "n_lm_units": self.n_lm_units,
                "test_records": {"top": self.n_test_top, "quantile": self.n_test_quantile,
                                 "random": self.n_test_random}}


@dataclasses.dataclass(frozen=True)
class RunMetrics:
    """Notebook 04's headline numbers, in the order ``metrics.json`` lists them."""

    n_units_scored: int  # units explained and scored (all kinds)
    n_results: int  # results (unit, explainer) in results.jsonl
    n_missing_explanations: int  # results without an explanation
    backend: str  # BACKEND
    main_explainer: str  # name of the explainer the figures focus on
    def_unit_baseline_explanation: str  # the baseline's explanation of the planted " def" unit
    def_unit_correlation_keyword: float | None  # keyword-simulator correlation of the " def" unit's true explanation
    def_unit_correlation_llm: float | None  # LM-simulator correlation of the " def" unit's true explanation
    planted_units: dict[str, dict[str, Any]]  # planted unit -> {"explanation", "scores"}
    tiers: Tiers  # units and records per tier
    cost_per_unit_cpu_s: dict[str, dict[str, Any]]  # :func:`~.pipeline.cost_per_unit`
    per_quantile: dict[str, dict[str, dict[str, Any]]]  # score key -> :func:`~.results.per_quantile` table
    scores: dict[str, dict[str, Any]]  # explainer -> :func:`~.results.summarise`
    sanity_gates: dict[str, dict[str, Any]]  # :func:`~.results.sanity_gates`

    def as_dict(self) -> dict[str, Any]:
        """The dictionary :meth:`~course_lib.runtime.Run.write_metrics` writes (fields in order, nested
        ``tiers``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["tiers"] = self.tiers.as_dict()
        return out


def run_metrics(results: Sequence[Result], explainers: Sequence[str], *, settings: Settings, backend: str,
                main: str, n_units: int, n_lm_units: int, def_baseline_explanation: str, def_result: Result,
                planted_results: Sequence[Result], cost: dict[str, dict[str, Any]],
                per_quantile: dict[str, dict[str, dict[str, Any]]],
                gates: dict[str, dict[str, Any]]) -> RunMetrics:
    """Assemble the run's metrics: counts of units, results and missing explanations, the planted units'
    explanations and scores (``def_result``: the ``" def"`` unit), the tiers' sizes (from ``settings``), the
    cost per unit, the per-quantile tables, :func:`~.results.summarise` per explainer (``explainers``, by
    name) and the gates."""
    rec = settings.rec_cfg
    return RunMetrics(
        n_units_scored=n_units,
        n_results=len(results),
        n_missing_explanations=sum(r.explanation is None for r in results),
        backend=backend,
        main_explainer=main,
        def_unit_baseline_explanation=def_baseline_explanation,
        def_unit_correlation_keyword=def_result.scores["correlation_keyword"],
        def_unit_correlation_llm=def_result.scores["correlation_llm"],
        planted_units={r.unit: {"explanation": r.explanation, "scores": r.scores} for r in planted_results},
        tiers=Tiers(units_per_kind=settings.n_units, lm_units_per_kind=settings.lm_units,
                    lm_records=settings.lm_records, n_units=n_units, n_lm_units=n_lm_units,
                    n_test_top=rec.n_test_top, n_test_quantile=rec.n_test_quantile, n_test_random=rec.n_test_random),
        cost_per_unit_cpu_s=cost,
        per_quantile=per_quantile,
        scores={name: summarise(results, name) for name in explainers},
        sanity_gates=gates,
    )


def scores_text(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per (explainer, unit kind) of ``scores`` (:attr:`RunMetrics.scores`): the mean of every score
    of :data:`~.results.SCORE_KEYS`, rounded to 3 places (None when missing)."""
    lines = []
    for name, per_kind in scores.items():
        for kind, entry in per_kind.items():
            means = {k: (None if entry[k]["mean"] is None else round(entry[k]["mean"], 3)) for k in SCORE_KEYS}
            lines.append(f"{name} {kind} {means}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- planted units, three explanations


def planted_markdown(true: Sequence[Result], cross: Sequence[Result], null: Sequence[Result],
                     keys: Sequence[str]) -> str:
    """A Markdown table of the planted units' scores: per scorer and planted unit, with its true
    explanation, with another planted unit's explanation (cross) and with a content-free one (null).
    Every number from the results (n/a where a scorer has none)."""
    def f(v: Any) -> str:
        return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"

    lines = ["| scorer | planted unit | true explanation | another planted unit's | content-free |",
             "| --- | --- | --- | --- | --- |"]
    for key in keys:
        for t, c, n in zip(true, cross, null):
            lines.append(f"| {key} | `{t.unit}` | {f(t.scores.get(key))} | {f(c.scores.get(key))} | "
                         f"{f(n.scores.get(key))} |")
    return "\n".join(lines)
