"""Explain-and-score loop: records -> explanation -> all scores -> :class:`~.results.Result`.

:class:`Scorers` bundles what scoring needs (the all-at-once simulator and the yes/no scorer share
one local LM; the keyword simulator and the embedder need none). Every scorer that reads the LM is
one batched forward per unit: simulation (all test records), and detection + fuzzing together
(all test records, and the top records marked right and wrong).

A result keeps the predictions its scores came from (simulations, P(Yes), similarities), so
:func:`rescore` can recompute its correlations, AUROCs and balanced accuracies with other functions
(notebook 04: its learners') without running a model again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from course_lib import cache
from course_lib.autointerp.backends import ChatClient, ChatConfig
from course_lib.autointerp.explainers import Explanation, parse_explanation
from course_lib.autointerp.records import UnitRecords
from course_lib.autointerp.remote import ChatYesNoScorer, ServerSimulator
from course_lib.autointerp.results import SCORE_KEYS, Result, append_jsonl, read_jsonl_lines
from course_lib.autointerp.scoring import (
    YesNoQuestions,
    YesNoScorer,
    auroc,
    balanced_accuracy,
    embedding_score,
    intruder_score,
    pooled_correlation,
    simulation_correlation,
    simulation_score,
    surprisal_score,
)
from course_lib.autointerp.simulator import AllAtOnceSimulator, KeywordSimulator


@dataclasses.dataclass
class Scorers:
    """The scorers of one run (any of them may be None to skip it)."""

    simulator: AllAtOnceSimulator | ServerSimulator | None  # LLM all-at-once simulator (local or server)
    yes_no: YesNoQuestions | None  # detection + fuzzing (YesNoScorer: local LM; ChatYesNoScorer: server)
    embedder: Any = None  # sentence-transformers model (embedding score)
    keyword: KeywordSimulator = dataclasses.field(default_factory=KeywordSimulator)  # no-LLM simulator
    seed: int = 0  # seeds fuzzing's choice of wrongly marked tokens (and the intruder's records)
    delphi_lm: Any = None  # local LM for delphi's intruder + surprisal scorers (None: skip them)
    lm_records: tuple[int, int, int] | None = None  # LM scorers see at most (top, quantile, random) test
    #   records of a unit, drawn at random with the seed (None: all); keyword + embedding see all
    embedding_cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # record text -> vector
    intruder_cache: dict[tuple[Any, ...], float] = dataclasses.field(default_factory=dict, repr=False)
    #   (unit, test windows) -> intruder accuracy: the intruder test reads no explanation, so a unit's second
    #   explainer (or the widget's next press) reuses the first one's forward

    @classmethod
    def from_local(cls, lm: Any, embedder: Any = None, seed: int = 0, delphi_extra: bool = False) -> Scorers:
        """All scorers on one local LM; ``delphi_extra`` adds intruder + surprisal (2 more forwards)."""
        return cls(simulator=AllAtOnceSimulator(lm), yes_no=YesNoScorer(lm), embedder=embedder, seed=seed,
                   delphi_lm=lm if delphi_extra else None)

    @classmethod
    def from_server(cls, cfg: ChatConfig | ChatClient, tokenizer: Any = None, embedder: Any = None,
                    seed: int = 0, top_logprobs: int = 15) -> Scorers:
        """Simulation (completions API) and detection + fuzzing (chat API) on one OpenAI-compatible server.

        The same ``cfg`` (base URL, model, key variable) drives :class:`~.explainers.HTTPExplainer`.
        ``tokenizer``: the served model's, to send token-id prompts; ``top_logprobs``: the simulator's
        ``N`` (the paper's 15; a server that allows ~100 returns every value token, see :mod:`~.remote`).
        """
        client = cfg if isinstance(cfg, ChatClient) else ChatClient(cfg)
        return cls(simulator=ServerSimulator(client, tokenizer=tokenizer, top_logprobs=top_logprobs),
                   yes_no=ChatYesNoScorer(client), embedder=embedder, seed=seed)

    def live(self) -> Scorers:
        """The cheap subset for interactive use: keyword simulator + embedding (no LM forward).

        Measured on this course's 2-core CPU, one thread, a workshop unit (8 test records x 25
        tokens): 0.12 CPU-s, against 7.4 CPU-s with the all-at-once simulation and 13.4 CPU-s with
        detection and fuzzing too.
        """
        return dataclasses.replace(self, simulator=None, yes_no=None, delphi_lm=None)

    @property
    def uses_lm(self) -> bool:
        """Whether any scorer reads a language model (simulation, yes/no questions, intruder, surprisal)."""
        return self.simulator is not None or self.yes_no is not None or self.delphi_lm is not None

    def lm_subset(self, ur: UnitRecords) -> UnitRecords:
        """The test records the LM scorers see (:attr:`lm_records`): a random subset of each kind, drawn
        with a generator seeded by ``seed`` and the unit's name (the same records for every explainer)."""
        if self.lm_records is None:
            return ur
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(ur.unit.encode()))
        return ur.subset(*self.lm_records, generator=g)

    def score(self, expl: Explanation, ur: UnitRecords) -> Result:
        """All scores of one explanation (``None`` for every score when it is missing).

        Keyword simulator and embedding score every test record; the LM scorers score
        :meth:`lm_subset` (its windows kept in ``extra["lm_windows"]`` when it is a subset). The CPU
        seconds of each scorer are kept in ``extra["seconds"]`` (process time: what it costs whatever
        else runs on the machine).
        """
        scores: dict[str, float | None] = {k: None for k in SCORE_KEYS}
        extra: dict[str, Any] = {"seconds": {}}
        clock = time.process_time
        if expl.text is not None:
            t = expl.text
            t0 = clock()
            sc, sim = simulation_score(self.keyword, t, ur)
            extra["seconds"]["keyword"] = clock() - t0
            scores["correlation_keyword"] = sc["correlation"]
            scores["rsquared_keyword"], scores["absdev_keyword"] = sc["rsquared"], sc["absolute_dev_explained"]
            extra["simulated_keyword"] = [s.tolist() for s in sim]
            sub = self.lm_subset(ur) if self.uses_lm else ur
            if sub is not ur:
                extra["lm_windows"] = [r.window for r in [*sub.test, *sub.test_negative]]
            if self.simulator is not None:
                t0 = clock()
                sc, sim = simulation_score(self.simulator, t, sub)
                extra["seconds"]["simulation"] = clock() - t0
                scores["correlation_llm"] = sc["correlation"]
                scores["rsquared_llm"], scores["absdev_llm"] = sc["rsquared"], sc["absolute_dev_explained"]
                extra["simulated"] = [s.tolist() for s in sim]
            if self.yes_no is not None:
                t0 = clock()
                d, f = self.yes_no.detection_and_fuzzing(t, sub, torch.Generator().manual_seed(self.seed))
                extra["seconds"]["detection_and_fuzzing"] = clock() - t0
                scores["detection_auroc"], scores["detection_bacc"] = d["auroc"], d["balanced_accuracy"]
                extra["detection_p_yes"] = d["p_yes"]
                scores["fuzzing_auroc"], scores["fuzzing_bacc"] = f["auroc"], f["balanced_accuracy"]
                extra["fuzzing_p_yes"], extra["fuzzing_labels"] = f["p_yes"], f["labels"]
            if self.embedder is not None:
                t0 = clock()
                e = embedding_score(self.embedder, t, ur, cache=self.embedding_cache)
                extra["seconds"]["embedding"] = clock() - t0
                scores["embedding_auroc"] = e["auroc"]
                extra["embedding_similarity"] = e["similarity"]
            if self.delphi_lm is not None:
                t0 = clock()
                s = surprisal_score(self.delphi_lm, t, sub)
                scores["surprisal_auroc"] = s["auroc"]
                extra["surprisal_gain"], extra["surprisal_labels"] = s["gain"], s["labels"]
                extra["seconds"]["surprisal"] = clock() - t0
                t0 = clock()  # the intruder test reads no explanation: computed once per unit and records
                key = (ur.unit, tuple(r.window for r in sub.test), self.seed)
                if key not in self.intruder_cache:
                    # seeded per unit: one seed for all units would put the intruder at the same letters in
                    # every unit, and a model that always answers one letter would score the same everywhere
                    g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(ur.unit.encode()) + 1)
                    self.intruder_cache[key] = intruder_score(self.delphi_lm, sub, g)["accuracy"]
                scores["intruder_accuracy"] = self.intruder_cache[key]
                extra["seconds"]["intruder"] = clock() - t0
        return Result(unit=ur.unit, kind=ur.kind, explainer=expl.explainer, explanation=expl.text,
                      reason=expl.reason, scores=scores, records=ur.to_dict(), extra=extra)


def _metric(value: Any) -> float | None:
    """A metric as a result stores it: a float, None when undefined (None, NaN or infinite)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def lm_records_of(result: Result) -> UnitRecords:
    """The records the LM scorers of ``result`` saw (:meth:`~.results.Result.lm_unit_records`)."""
    return result.lm_unit_records()


def rescore(result: Result, correlation_fn: Callable[..., Any] = pooled_correlation,
            auroc_fn: Callable[..., Any] = auroc, balanced_accuracy_fn: Callable[..., Any] = balanced_accuracy) -> Result:
    """``result`` with its correlations, AUROCs and balanced accuracies recomputed by the given functions
    from the predictions it stores; every other score is kept.

    The predictions are what the models produced: the simulations (``extra["simulated"]``, LM, and
    ``extra["simulated_keyword"]``), P(Yes) of detection (labels: 1 for the activating test records, 0 for
    the non-activating ones, of the records the LM scorers saw: :func:`lm_records_of`) and of fuzzing, the embedding similarities and the surprisal gains. A score whose
    predictions the result does not hold is kept as it is. Balanced accuracy is read at threshold 0.5.
    With the default functions the scores are those :meth:`Scorers.score` computed (non-finite ones as
    None, as a reloaded result has them). Notebook 04 passes its learners' functions: the models'
    forwards are cached, the metrics computed from them are not.
    """
    x = result.extra
    scores = dict(result.scores)
    ur = result.unit_records()
    sub = lm_records_of(result)
    real, labels = [list(r.acts) for r in ur.test], ur.contrast_labels
    lm_real, lm_labels = [list(r.acts) for r in sub.test], sub.contrast_labels
    for key, sim_key, rl in (("correlation_keyword", "simulated_keyword", real), ("correlation_llm", "simulated", lm_real)):
        if sim_key in x and rl:
            scores[key] = _metric(simulation_correlation(rl, [list(s) for s in x[sim_key]], correlation_fn))

    def auc(y: list[int], s: list[float]) -> float | None:
        return _metric(auroc_fn(y, list(s))) if y else None

    def bacc(y: list[int], s: list[float]) -> float | None:
        return _metric(balanced_accuracy_fn(y, list(s), 0.5)) if y else None

    if "detection_p_yes" in x:
        p = x["detection_p_yes"]
        y = lm_labels if len(p) == len(lm_labels) else []
        scores["detection_auroc"], scores["detection_bacc"] = auc(y, p), bacc(y, p)
    if "fuzzing_p_yes" in x:
        p, y = x["fuzzing_p_yes"], list(x.get("fuzzing_labels", []))
        scores["fuzzing_auroc"], scores["fuzzing_bacc"] = auc(y, p), bacc(y, p)
    if "embedding_similarity" in x:
        scores["embedding_auroc"] = auc(labels, x["embedding_similarity"])
    if "surprisal_gain" in x and "surprisal_labels" in x:
        scores["surprisal_auroc"] = auc(list(x["surprisal_labels"]), x["surprisal_gain"])
    return dataclasses.replace(result, scores=scores)


def _failed(ur: UnitRecords, explainer: str, stage: str, err: BaseException | str,
            expl: Explanation | None = None) -> Result:
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return Result(unit=ur.unit, kind=ur.kind, explainer=explainer, explanation=expl.text if expl else None,
                  reason=f"{stage} failed: {msg}", scores={k: None for k in SCORE_KEYS},
                  records=ur.to_dict(), extra={"failed": True, "stage": stage, "error": msg})


def is_failure(r: Result) -> bool:
    """A result to retry on the next run (an error, not an answer such as "dead unit")."""
    return bool(r.extra.get("failed"))


def _explain_batch(explainer: Any, batch: Sequence[UnitRecords]) -> list[Explanation | BaseException]:
    """Explanations of a batch; if the batch call raises, each unit alone, keeping per-unit errors."""
    try:
        return list(explainer.explain_many(batch))
    except Exception:  # noqa: BLE001 -- isolate the failing unit(s) below
        out: list[Explanation | BaseException] = []
        for u in batch:
            try:
                out.append(explainer.explain(u))
            except Exception as e:  # noqa: BLE001 -- recorded per unit
                out.append(e)
        return out


def _score_one(scorers: Scorers, explainer: str, expl: Explanation | BaseException, ur: UnitRecords) -> Result:
    if isinstance(expl, BaseException):
        return _failed(ur, explainer, "explain", expl)
    if expl.text is None and (expl.reason or "").startswith("backend error"):
        return _failed(ur, explainer, "explain", expl.reason or "", expl)
    try:
        return scorers.score(expl, ur)
    except Exception as e:  # noqa: BLE001 -- recorded per unit
        return _failed(ur, explainer, "score", e, expl)


def explain_and_score(explainer: Any, scorers: Scorers, urs: Sequence[UnitRecords], progress: bool = True,
                      out: str | Path | None = None, batch_size: int = 32) -> list[Result]:
    """Explain and score every unit, ``batch_size`` units in flight at a time; one Result per unit.

    * **Bounded concurrency**: units go to ``explainer.explain_many`` in batches of ``batch_size``
      (HTTP explainers send a batch's requests concurrently, up to their client's own limit), then
      each is scored (local LM, one batched forward per scorer).
    * **Resumable**: with ``out`` (a JSONL path), each finished batch is appended and fsynced; a
      rerun reads the file and skips units this explainer already has a result for, so an
      interrupted run loses at most the ``batch_size`` units in flight. Failed units are retried.
      Lines are matched by (explainer name, unit name) only: use a new file for new records or a
      new configuration.
    * **Failures per unit**: an exception while explaining or scoring one unit, or a backend error,
      becomes that unit's Result with ``reason`` and ``extra = {"failed": True, "stage", "error"}``
      (all scores None); the loop goes on.
    * **Progress**: a ``tqdm.auto`` bar counting units (units/s, ETA; already-done units included).

    Returns the results in the order of ``urs`` (resumed ones read back from ``out``).
    """
    name = explainer.name
    done: dict[str, Result] = {}
    if out is not None:
        for r in read_jsonl_lines(out, repair=True):
            if r.explainer == name:
                done[r.unit] = r  # the latest line of a unit wins
    todo = [u for u in urs if u.unit not in done or is_failure(done[u.unit])]
    bar = tqdm(total=len(urs), initial=len(urs) - len(todo), desc=f"explain+score {name}", unit="unit",
               disable=not progress)
    n_failed = 0
    try:
        for i in range(0, len(todo), max(1, batch_size)):
            batch = todo[i: i + max(1, batch_size)]
            new = []
            t0 = time.process_time()
            explained = _explain_batch(explainer, batch)
            explain_s = (time.process_time() - t0) / len(batch)  # CPU seconds, shared evenly by the batch
            for e, u in zip(explained, batch):
                new.append(_score_one(scorers, name, e, u))
                new[-1].extra.setdefault("seconds", {})["explain"] = explain_s
                n_failed += is_failure(new[-1])
                bar.update(1)  # per unit: a slow unit still shows progress
                if n_failed:
                    bar.set_postfix(failed=n_failed)
            if out is not None:
                append_jsonl(new, out)
            for r in new:
                done[r.unit] = r
    finally:
        bar.close()
    return [done[u.unit] for u in urs]


# Bump when a change to explaining or scoring changes what a result holds: cached results are then
# recomputed instead of reused.
RESULTS_VERSION = 4  # 2: results also hold fuzzing's P(Yes) and labels, the embedding similarities, surprisal's labels
# 3: quantile test records are positives; LM scorers may see a subset (lm_windows); CPU seconds per scorer
# 4: the intruder's positions are seeded per unit


def _settings(obj: Any) -> dict[str, Any]:
    """The plain settings of a dataclass (numbers, strings, tuples), without models or clients."""
    if obj is None:
        return {}
    out: dict[str, Any] = {"class": type(obj).__name__}
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, (bool, int, float, str, tuple, type(None))):
                out[f.name] = v
    return out


def _lm_key(lm: Any) -> dict[str, Any] | None:
    if lm is None:
        return None
    p = next(lm.model.parameters())
    return {"name": lm.name, "dtype": str(p.dtype), "device": p.device.type}


def results_key(explainer: Any, scorers: Scorers, urs: Sequence[UnitRecords]) -> str:
    """A hash of everything that decides the results: explainer and scorer settings, the local LM
    (name, dtype, device), the embedder's presence, and every record of every unit (tokens and
    activations), so the same inputs find the same cached results and any change misses."""
    client = getattr(explainer, "client", None)
    spec = {
        "version": RESULTS_VERSION,
        "explainer": {"name": explainer.name, **_settings(explainer), "lm": _lm_key(getattr(explainer, "lm", None)),
                      "client": _settings(getattr(client, "cfg", None))},
        "scorers": {"simulator": _lm_key(getattr(scorers.simulator, "lm", None)),
                    "yes_no": _lm_key(getattr(scorers.yes_no, "lm", None)),
                    "delphi": _lm_key(scorers.delphi_lm), "embedder": scorers.embedder is not None,
                    "seed": scorers.seed, "lm_records": scorers.lm_records},
        "units": [u.to_dict() for u in urs],
    }
    spec["explainer"]["client"].pop("api_key_env", None)  # the variable's name is not an input
    for role in ("simulator", "yes_no"):  # a server scorer: its settings and its server (local ones: above)
        scorer = getattr(scorers, role)
        if getattr(scorer, "client", None) is not None:
            server = _settings(scorer.client.cfg)
            server.pop("api_key_env", None)
            tok = getattr(scorer, "tokenizer", None)  # token-id prompts or text
            spec["scorers"][f"{role}_server"] = _settings(scorer) | {
                "client": server, "tokenizer": None if tok is None else str(getattr(tok, "name_or_path", type(tok).__name__))}
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def cached_results_path(explainer: Any, scorers: Scorers, urs: Sequence[UnitRecords]) -> Path:
    """Where :func:`explain_and_score` keeps (and resumes) the results of exactly these inputs:
    ``<cache>/autointerp_results/<results_key>.jsonl``. Pass it as ``out``: a rerun with the same
    units, explainer and scorers reads every result back instead of recomputing it, and an
    interrupted run goes on where it stopped."""
    return cache.cache_dir() / "autointerp_results" / f"{results_key(explainer, scorers, urs)}.jsonl"


def explain_text(text: str, unit: str, explainer: str = "human") -> Explanation:
    """Wrap a typed explanation (the "explain it yourself" widget) with the same parsing rules."""
    parsed, reason = parse_explanation(text)
    return Explanation(unit=unit, explainer=explainer, text=parsed, reason=reason, raw=text)


COST_STAGES: tuple[str, ...] = ("explain", "keyword", "embedding", "simulation", "detection_and_fuzzing",
                                "surprisal", "intruder")


def cost_per_unit(results: Sequence[Result]) -> dict[str, dict[str, Any]]:
    """Mean CPU seconds per unit of each stage (``extra["seconds"]``), per explainer: ``{explainer: {stage:
    {"cpu_s_per_unit", "cpu_s_per_record", "n_units", "records_per_unit"}}}``.

    ``records_per_unit``: the test records the stage scored (every record for the keyword simulator and
    the embedding scorer, the LM subset for the LM scorers, the train records shown for ``explain``).
    """
    out: dict[str, dict[str, Any]] = {}
    for ex in dict.fromkeys(r.explainer for r in results):
        rows = [r for r in results if r.explainer == ex and r.extra.get("seconds")]
        per: dict[str, Any] = {}
        for stage in COST_STAGES:
            have = [r for r in rows if stage in r.extra["seconds"]]
            if not have:
                continue
            secs = [float(r.extra["seconds"][stage]) for r in have]
            if stage == "explain":
                n_rec = [len(r.records.get("train", [])) for r in have]
            elif stage in ("keyword", "embedding"):
                n_rec = [len(r.unit_records().test) for r in have]
            else:
                n_rec = [len(r.lm_unit_records().test) for r in have]
            mean_rec = sum(n_rec) / len(n_rec)
            per[stage] = {"cpu_s_per_unit": sum(secs) / len(secs), "n_units": len(have),
                          "records_per_unit": mean_rec,
                          "cpu_s_per_record": (sum(secs) / len(secs)) / mean_rec if mean_rec else None}
        out[ex] = per
    return out


def cost_markdown(cost: dict[str, dict[str, Any]]) -> str:
    """:func:`cost_per_unit` as a Markdown table ("what it costs per unit"), every number from the run."""
    lines = ["| explainer | stage | units | records per unit | CPU s per unit | CPU s per record |",
             "| --- | --- | --- | --- | --- | --- |"]
    for ex, per in cost.items():
        for stage, c in per.items():
            rec = "-" if c["cpu_s_per_record"] is None else f"{c['cpu_s_per_record']:.3f}"
            lines.append(f"| {ex} | {stage} | {c['n_units']} | {c['records_per_unit']:.1f} | "
                         f"{c['cpu_s_per_unit']:.2f} | {rec} |")
        total = sum(c["cpu_s_per_unit"] for c in per.values())
        lines.append(f"| {ex} | **all stages** | | | **{total:.2f}** | |")
    if len(lines) == 2:
        return "No timings in these results (all read back from an older cache)."
    return "\n".join(lines)
