"""Results as JSON Lines: one line per (unit, explainer) with the explanation, every score and the
records used, so a run can be reloaded, re-plotted or re-scored without the models.

A missing explanation (empty, unparsable, backend error, dead unit) is kept with its ``reason``;
its scores are ``None`` (JSON ``null``) and summaries skip it but count it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from course_lib import cache
from course_lib.autointerp.records import UnitKind, UnitRecords
from course_lib.autointerp.scoring import auroc
from course_lib.runtime import Headline

SCORE_KEYS: tuple[str, ...] = (
    "correlation_llm",  # pooled Pearson r, all-at-once simulator (local LM)
    "correlation_keyword",  # pooled Pearson r, keyword simulator (no LLM)
    "rsquared_llm", "absdev_llm",  # R^2 and absolute deviation explained after linear calibration
    "rsquared_keyword", "absdev_keyword",  # the same for the keyword simulator
    "detection_auroc", "detection_bacc",  # delphi detection
    "fuzzing_auroc", "fuzzing_bacc",  # delphi fuzzing
    "embedding_auroc",  # MiniLM retrieval
    "intruder_accuracy",  # delphi intruder (no explanation; chance 1/4)
    "surprisal_auroc",  # delphi surprisal: log-likelihood gain from the explanation, top vs random
)


@dataclasses.dataclass
class Result:
    """One explained and scored unit."""

    unit: str  # e.g. "sae/77"
    kind: UnitKind  # "sae" | "neuron" | "random" | "token"
    explainer: str  # e.g. "local:smollm2", "baseline:token-stats", "human"
    explanation: str | None  # None when missing
    reason: str | None  # why missing (None when present)
    scores: dict[str, float | None]  # SCORE_KEYS -> value (None = missing)
    records: dict[str, Any]  # UnitRecords.to_dict()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # simulated activations, p_yes...

    def to_json(self) -> str:
        return json.dumps(cache.jsonable(dataclasses.asdict(self)), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls(**d)

    def unit_records(self) -> UnitRecords:
        return UnitRecords.from_dict(self.records)

    def lm_unit_records(self) -> UnitRecords:
        """The unit's records as its LM scorers saw them: the test records whose windows are in
        ``extra["lm_windows"]`` (a subset, :attr:`~.pipeline.Scorers.lm_records`), else all of them."""
        ur = self.unit_records()
        keep = self.extra.get("lm_windows")
        if keep is None:
            return ur
        k = set(keep)
        return dataclasses.replace(ur, test_top=[r for r in ur.test_top if r.window in k],
                                   test_quantile=[r for r in ur.test_quantile if r.window in k],
                                   test_random=[r for r in ur.test_random if r.window in k],
                                   test_negative=[r for r in ur.test_negative if r.window in k])


def save_jsonl(results: Iterable[Result], path: str | Path) -> Path:
    """Write one JSON object per line, atomically."""
    path = Path(path)
    cache.atomic_write_text(path, "".join(r.to_json() + "\n" for r in results))
    return path


def append_jsonl(results: Iterable[Result], path: str | Path) -> Path:
    """Append results, one line each, and flush them to disk (fsync) before returning.

    Used by the resumable loop: a run killed mid-write leaves at most one partial last line, which
    :func:`read_jsonl_lines` drops.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in results:
            f.write(r.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_jsonl_lines(path: str | Path, repair: bool = False) -> list[Result]:
    """Results of a JSONL file that may end in a partial line (an interrupted append): that line is
    skipped, and with ``repair`` cut from the file so that later appends start on a fresh line."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    complete, _, partial = text.rpartition("\n")
    if partial and repair:
        cache.atomic_write_text(path, complete + "\n" if complete else "")
    out = []
    for line in complete.splitlines():
        if line.strip():
            try:
                out.append(Result.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue  # a damaged line counts as not done: its unit is scored again
    return out


def load_jsonl(path: str | Path) -> list[Result]:
    """Read results written by :func:`save_jsonl` (blank lines skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Result.from_dict(json.loads(line)))
    return out


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean: resample the units with replacement
    ``n_boot`` times, take the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled
    means. None for fewer than 2 values. Deterministic for a given ``seed``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarise(results: Sequence[Result], explainer: str | None = None, seed: int = 0) -> dict[str, Any]:
    """``{kind: {score: {"mean", "median", "n", "ci95"}, "n_units", "n_missing"}}`` (NaN/None skipped).

    ``ci95``: :func:`bootstrap_ci` of the mean over units, ``[low, high]`` (None under 2 units).
    """
    out: dict[str, Any] = {}
    rows = [r for r in results if explainer is None or r.explainer == explainer]
    for kind in sorted({r.kind for r in rows}):
        ks = [r for r in rows if r.kind == kind]
        entry: dict[str, Any] = {"n_units": len({r.unit for r in ks}),
                                 "n_missing": sum(r.explanation is None for r in ks)}
        for key in SCORE_KEYS:
            vals = [v for r in ks if (v := r.scores.get(key)) is not None and math.isfinite(v)]
            ci = bootstrap_ci(vals, seed=seed)
            entry[key] = {"mean": float(np.mean(vals)) if vals else None,
                          "median": float(np.median(vals)) if vals else None, "n": len(vals),
                          "ci95": None if ci is None else list(ci)}
        out[kind] = entry
    return out


# --------------------------------------------------------------------------- per quantile

PER_QUANTILE: dict[str, str] = {"detection_auroc": "detection_p_yes", "embedding_auroc": "embedding_similarity"}


def per_quantile(results: Sequence[Result], key: str = "detection_auroc", seed: int = 0) -> dict[str, dict[str, Any]]:
    """A score's AUROC per group of activating test records, each group against the unit's non-activating records.

    Groups: ``"top"`` (the top-activating records) and ``"q0"``, ``"q1"``, ... (quantile bins, q0 the
    strongest). Per unit and group: the AUROC of that group's predictions (``PER_QUANTILE[key]``:
    P(Yes) or similarity, as stored) against those of the unit's non-activating records (``ur.negatives``); then the mean over
    units with its 95% bootstrap CI. Returns ``{group: {"mean", "ci95", "n_units", "n_records"}}``.
    """
    pred_key = PER_QUANTILE[key]
    per_group: dict[str, list[float]] = {}
    n_records: dict[str, int] = {}
    for r in results:
        p = r.extra.get(pred_key)
        if p is None or r.explanation is None:
            continue
        ur = r.lm_unit_records() if pred_key == "detection_p_yes" else r.unit_records()
        if len(p) != len(ur.contrast):
            continue
        groups = ["top"] * len(ur.test_top) + [f"q{x.quantile}" for x in ur.test_quantile] + [None] * len(ur.negatives)
        neg = [float(v) for v, g in zip(p, groups) if g is None]
        if not neg:
            continue
        for g in dict.fromkeys(x for x in groups if x is not None):
            pos = [float(v) for v, gg in zip(p, groups) if gg == g]
            per_group.setdefault(g, []).append(auroc([1] * len(pos) + [0] * len(neg), pos + neg))
            n_records[g] = n_records.get(g, 0) + len(pos)
    out = {}
    for g in sorted(per_group, key=lambda x: (x != "top", x)):
        v = per_group[g]
        ci = bootstrap_ci(v, seed=seed)
        out[g] = {"mean": float(np.mean(v)), "ci95": None if ci is None else list(ci), "n_units": len(v),
                  "n_records": n_records[g]}
    return out


# --------------------------------------------------------------------------- sanity gates

GATE_KEYS: tuple[str, ...] = ("correlation_llm", "correlation_keyword", "detection_auroc", "fuzzing_auroc",
                              "embedding_auroc", "surprisal_auroc", "intruder_accuracy")
CHANCE: dict[str, float] = {"correlation_llm": 0.0, "correlation_keyword": 0.0, "detection_auroc": 0.5,
                            "fuzzing_auroc": 0.5, "embedding_auroc": 0.5, "surprisal_auroc": 0.5,
                            "intruder_accuracy": 0.25}
KNOWN_ANSWER_MIN: dict[str, float] = {"correlation_llm": 0.5, "correlation_keyword": 0.5, "detection_auroc": 0.75,
                                      "fuzzing_auroc": 0.75, "embedding_auroc": 0.75, "surprisal_auroc": 0.75,
                                      "intruder_accuracy": 0.6}


def sanity_gates(known: Result | Sequence[Result], summary: dict[str, Any], keys: Sequence[str] = GATE_KEYS,
                 control_kind: str = "random", margin: float = 0.1,
                 specificity: dict[str, dict[str, Any]] | None = None,
                 cross: Sequence[Result] | None = None) -> dict[str, dict[str, Any]]:
    """Per scorer, the two gates a scorer must pass before its numbers support a conclusion.

    * **known answer**: on every *planted* unit (``known``: units whose activations follow a rule we
      wrote, e.g. fire exactly on ``" def"`` or on digits, each explained by that rule) the score
      reaches ``KNOWN_ANSWER_MIN[key]``; the gate reads the lowest of them (``known``), and keeps each
      (``known_units``);
    * **control**: on the random-direction units (``summary[control_kind]``, from :func:`summarise`)
      the scorer is not confidently above chance: the lower end of the mean's 95% bootstrap CI is at
      most ``CHANCE[key] + margin`` (a scorer that rates random directions as explained measures
      something else).

    With ``specificity`` (:func:`~.gates.paired_differences` of own minus another unit's explanation) the
    control is **reported, not a gate** (random residual directions carry real token structure, so a valid
    scorer may rate them above chance); the gates are then known answer, **specificity** (the lower end of
    the paired difference's CI above 0) and, with ``cross`` (planted units scored with another planted
    unit's explanation), **cross** (every cross score below ``KNOWN_ANSWER_MIN[key]``).

    Returns ``{key: {"known", "known_units", "known_min", "known_pass", "control_mean", "control_ci",
    "control_pass", "specific", "specific_ci", "specific_pass", "cross", "cross_pass", "gated_on", "pass"}}``;
    missing data (a planted unit without the score, no control units, no pairs) fails its gate.
    """
    planted = [known] if isinstance(known, Result) else list(known)
    out: dict[str, dict[str, Any]] = {}
    ctrl = summary.get(control_kind, {})
    for key in keys:
        per_unit = {r.unit: r.scores.get(key) for r in planted}
        vals = [v for v in per_unit.values() if v is not None and math.isfinite(v)]
        k = min(vals) if vals and len(vals) == len(per_unit) else None
        known_ok = k is not None and k >= KNOWN_ANSWER_MIN[key]
        c = ctrl.get(key) or {}
        ci = c.get("ci95")
        mean = c.get("mean")
        if ci is not None:
            control_ok = ci[0] <= CHANCE[key] + margin
        else:  # one unit or none: use the mean itself
            control_ok = mean is not None and mean <= CHANCE[key] + margin
        g = {"known": k, "known_units": per_unit, "known_min": KNOWN_ANSWER_MIN[key],
             "known_pass": bool(known_ok), "control_mean": mean, "control_ci": ci,
             "control_pass": bool(control_ok), "pass": bool(known_ok and control_ok), "gated_on": ["known", "control"]}
        if specificity is not None:
            sp = specificity.get(key) or {}
            sci = sp.get("ci95")
            specific_ok = sci is not None and sci[0] > 0
            cv = [r.scores.get(key) for r in (cross or [])]
            cv_ok = [v for v in cv if v is not None and math.isfinite(v)]
            cross_max = max(cv_ok) if cv_ok and len(cv_ok) == len(cv) else None
            cross_ok = cross is None or (cross_max is not None and cross_max < KNOWN_ANSWER_MIN[key])
            g.update(specific=sp.get("mean"), specific_ci=sci, specific_n=sp.get("n", 0),
                     specific_pass=bool(specific_ok), cross=cross_max, cross_pass=bool(cross_ok),
                     gated_on=["known", "specific"] + (["cross"] if cross is not None else []),
                     **{"pass": bool(known_ok and specific_ok and cross_ok)})
        out[key] = g
    return out


def gate_failure(g: dict[str, Any]) -> str | None:
    """Why a scorer failed its gates, in a few words (None when it passed): for figure titles."""
    if g.get("pass"):
        return None
    why = []
    on = g.get("gated_on", ["known", "control"])
    if "specific" in on and not g.get("specific_pass"):
        ci = g.get("specific_ci")
        why.append("own - other explanation " + ("missing" if ci is None else f"CI low {ci[0]:.2f}"))
    if "cross" in on and not g.get("cross_pass"):
        c = g.get("cross")
        why.append("cross explanation " + ("missing" if c is None else f"{c:.2f}"))
    if not g.get("known_pass"):
        k = g.get("known")
        why.append("known answer " + ("missing" if k is None else f"{k:.2f} < {g.get('known_min', float('nan')):.2f}"))
    if "control" in on and not g.get("control_pass"):
        ci = g.get("control_ci")
        why.append("control " + ("missing" if g.get("control_mean") is None else
                                 f"CI low {ci[0]:.2f}" if ci is not None else f"mean {g['control_mean']:.2f}"))
    return "failed gate: " + "; ".join(why)


def _fmt(v: float | None, ci: Sequence[float] | None = None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def _diff_phrase(name: str, e: dict[str, Any] | None) -> str:
    if not e or e.get("diff") is None:
        return f"{name}: n/a"
    lo, hi = e["ci95"]
    verdict = "above 0" if lo > 0 else "below 0" if hi < 0 else "interval includes 0"
    return f"{name} {e['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({verdict})"


def gates_markdown(gates: dict[str, dict[str, Any]], summary: dict[str, Any],
                   kinds: Sequence[str] = ("sae", "neuron", "random"), table: bool = True,
                   differences: dict[str, dict[str, Any]] | None = None) -> str:
    """The gate table and the conclusions they allow, as Markdown; every number comes from the run.

    A scorer that fails a gate is struck through and left out of the conclusions; ``table=False``
    writes the conclusions only (for a second summary, e.g. another explainer's). A usable scorer
    without numbers in ``summary`` is skipped. ``differences`` (:func:`~.gates.kind_differences`):
    the conclusions read the differences SAE - neuron and SAE - random with their intervals; without
    them, whether the SAE and random-direction intervals overlap.
    """
    paired = any("specific" in g.get("gated_on", []) for g in gates.values())
    if paired:
        lines = ["| scorer | planted units: lowest score (min) [each] | planted, another's explanation: highest "
                 "| own - another unit's explanation, mean [95% CI] (n units) | random directions, mean [95% CI] "
                 "(chance; a comparison, not a gate) | verdict |",
                 "| --- | --- | --- | --- | --- | --- |"]
    else:
        lines = ["| scorer | planted units: lowest score (min) [each] | random directions, mean [95% CI] (chance) | verdict |",
                 "| --- | --- | --- | --- |"]
    names = {"known": "known answer", "control": "control", "specific": "own vs another's explanation",
             "cross": "cross explanation"}
    for key, g in gates.items():
        name = key if g["pass"] else f"~~{key}~~"
        on = g.get("gated_on", ["known", "control"])
        verdict = "usable" if g["pass"] else "excluded: failed " + " and ".join(
            names[n] for n in on if not g.get(f"{n}_pass"))
        each = ", ".join(f"{u} {_fmt(v)}" for u, v in (g.get("known_units") or {}).items())
        known = f"{_fmt(g['known'])} ({g['known_min']:.2f})" + (f" [{each}]" if each else "")
        ctrl = f"{_fmt(g['control_mean'], g['control_ci'])} ({CHANCE[key]:.2f})"
        if paired:
            spec = f"{_fmt(g.get('specific'), g.get('specific_ci'))} (n={g.get('specific_n', 0)})"
            lines.append(f"| {name} | {known} | {_fmt(g.get('cross'))} | {spec} | {ctrl} | {verdict} |")
        else:
            lines.append(f"| {name} | {known} | {ctrl} | {verdict} |")
    if not table:
        lines = []
    usable = [k for k, g in gates.items() if g["pass"]
              and any((summary.get(kind, {}).get(k) or {}).get("mean") is not None for kind in kinds)]
    lines.append("")
    if not usable:
        lines.append("**Conclusions:** no scorer with numbers here passed its gates in this run, so this run "
                     "supports no comparison between unit kinds.")
        return "\n".join(lines)
    lines.append("**Conclusions** (usable scorers only; mean over units with 95% bootstrap CI"
                 + ("; differences of kind means with 95% bootstrap CI, units of each kind resampled" if differences
                    else "") + "):")
    lines.append("")
    for key in usable:
        parts = []
        for kind in kinds:
            e = summary.get(kind, {}).get(key) or {}
            parts.append(f"{kind} {_fmt(e.get('mean'), e.get('ci95'))} (n={e.get('n', 0)})")
        if differences is not None and key in differences:
            d = differences[key]
            verdict = "; ".join(_diff_phrase(n, d.get(n)) for n in ("sae-neuron", "sae-random"))
        else:
            sae_ci = (summary.get("sae", {}).get(key) or {}).get("ci95")
            rnd_ci = (summary.get("random", {}).get(key) or {}).get("ci95")
            if sae_ci is not None and rnd_ci is not None and sae_ci[0] > rnd_ci[1]:
                verdict = "SAE latents are explained better than random directions (CIs do not overlap)"
            else:
                verdict = "this run cannot tell SAE latents from random directions (CIs overlap or too few units)"
        lines.append(f"* **{key}**: {'; '.join(parts)} -- {verdict}.")
    return "\n".join(lines)


TASK_WORDS: tuple[str, ...] = ("activation", "neuron")  # words of the prompt, not of any unit's meaning


def explainer_markdown(results: Sequence[Result], baseline: str, main: str, known: Result,
                       gates: dict[str, dict[str, Any]], simulator: str = "local") -> str:
    """What the main explainer and the simulator did in this run, as Markdown (every number
    from ``results``): how many explanations echo the prompt's own words (:data:`TASK_WORDS`)
    instead of describing a unit, the simulator's correlation on the known-answer unit, and, per
    scorer that passed its gates, the main explainer's mean against the baseline's (all kinds pooled,
    with 95% bootstrap CIs). ``simulator`` names where the LM simulation ran ("local" or the server's
    model), so the sentence about it names the right one."""
    rows = [r for r in results if r.explainer == main]
    texts = [r.explanation for r in rows if r.explanation is not None]
    lines = []
    if main != baseline and rows:
        echo = sum(any(w in t.lower() for w in TASK_WORDS) for t in texts)
        lines.append(f"* **{main}** gave {len(texts)} explanations for {len(rows)} units; {echo} of them use the "
                     f"prompt's own words ({', '.join(repr(w) for w in TASK_WORDS)}), i.e. describe the task "
                     "rather than the unit.")
    c = known.scores.get("correlation_llm")
    if c is not None and math.isfinite(c):
        how = "far below" if c < 0.5 else "at or above"
        lines.append(f"* The {simulator} all-at-once simulator scores the perfect explanation of the `\" def\"` unit at "
                     f"r = {c:.2f} ({how} the keyword simulator's {known.scores.get('correlation_keyword') or 0:.2f}): "
                     + ("it cannot simulate activations from an explanation, so its correlations say nothing "
                        "about the units." if c < 0.5 else "it can follow an explanation this clear."))
    usable = [k for k, g in gates.items() if g["pass"]]
    if main != baseline:
        for key in usable:
            vals = {}
            for ex in (baseline, main):
                v = [s for r in results if r.explainer == ex and (s := r.scores.get(key)) is not None and math.isfinite(s)]
                vals[ex] = (float(np.mean(v)) if v else None, bootstrap_ci(v))
            (mb, cb), (mm, cm) = vals[baseline], vals[main]
            if mb is None or mm is None:
                continue
            if cb is not None and cm is not None and cm[0] > cb[1]:
                cmp = "the LLM explainer is better"
            elif cb is not None and cm is not None and cb[0] > cm[1]:
                cmp = "the token-statistics baseline is better"
            else:
                cmp = "no difference this run can resolve (CIs overlap)"
            lines.append(f"* {key}: baseline {_fmt(mb, cb)}, {main} {_fmt(mm, cm)} -- {cmp}.")
    if not usable:
        lines.append("* No scorer passed its gates, so this run cannot compare the explainers.")
    return "\n".join(lines)


def per_quantile_markdown(tables: dict[str, dict[str, dict[str, Any]]],
                          gates: dict[str, dict[str, Any]] | None = None) -> str:
    """:func:`per_quantile` tables (``{score key: table}``) as one Markdown table; a scorer that failed its
    gates is marked so."""
    groups = list(dict.fromkeys(g for t in tables.values() for g in t))
    if not groups:
        return "No activating records with per-record predictions in this run."
    lines = ["| scorer | " + " | ".join(groups) + " |", "| --- |" + " --- |" * len(groups)]
    for key, t in tables.items():
        failed = gates is not None and key in gates and not gates[key]["pass"]
        name = f"~~{key}~~ (failed its gates)" if failed else key
        cells = []
        for g in groups:
            e = t.get(g)
            cells.append("-" if e is None else f"{_fmt(e['mean'], e['ci95'])} (n={e['n_units']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline(summary: dict[str, Any], gates: dict[str, dict[str, Any]],
             differences: dict[str, dict[str, Any]] | None = None) -> list[Headline]:
    """Notebook 04's headline claim for the report: mean score per unit kind, for each scorer that passed both
    of its gates (:func:`sanity_gates`), with 95% bootstrap intervals; when none passed, the claim is listed
    as not supported by this run. With ``differences`` (:func:`~.gates.kind_differences`) a scorer's value is
    the differences SAE - neuron and SAE - random, each with its 95% interval, and the kind means follow."""
    claim = "explanation scores: SAE latents vs neurons vs random directions"
    paper = "latents explained better than neurons, neurons better than random directions"
    usable = [k for k, g in gates.items() if g.get("pass")]
    out = []
    for key in usable:
        cells, cis = [], []
        for kind, entry in summary.items():
            e = entry.get(key) or {}
            if e.get("mean") is None:
                continue
            cells.append(f"{kind} {e['mean']:.2f}")
            if e.get("ci95"):
                cis.append(f"{kind} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]")
        d = (differences or {}).get(key)
        if d and any((d.get(n) or {}).get("diff") is not None for n in ("sae-neuron", "sae-random")):
            value = "; ".join(_diff_phrase(n.replace("sae", "SAE", 1).replace("-", " - "), d.get(n))
                              for n in ("sae-neuron", "sae-random"))
            out.append(Headline(f"{claim}, differences ({key})", paper, value,
                                "95% bootstrap CIs in brackets; means " + ", ".join(cells) if cells else None))
        elif cells:
            out.append(Headline(f"{claim} ({key})", paper, ", ".join(cells), "; ".join(cis) or None))
    if not out:
        why = "; ".join(f"{k}: {gate_failure(g)}" for k, g in gates.items() if gate_failure(g))
        out.append(Headline(claim, paper, None, gates_passed=False,
                            note="no scorer with numbers here passed the notebook's gates in this run"
                                 + (f" ({why})" if why else "")))
    return out
