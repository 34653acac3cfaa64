"""Records from two splits, one explainer, three offline scorers, and the null of another unit's explanation.

**Records** (:func:`split_records`): the explainer reads the unit's top ``n_train`` windows of the **selection**
split; every scored record comes from the **scoring** split (top, quantile and random windows, and
non-activating negatives, :func:`course_lib.autointerp.records.build_unit_records`). Windows never overlap.

**Explainer**: notebook 04's statistics explainer (:class:`~course_lib.autointerp.explainers.TokenStatsExplainer`:
the tokens carrying most activation mass, at most 3, until 60% of the mass is named) and, for the description
length, the **k-token explanation** (:func:`token_weights`): the ``k`` token strings carrying the most activation
mass ``m_t = sum relu(a)`` in the train records, each with its mean activation there ``w_t = m_t / count_t``.

**Scorers** (no language model; each must pass its gate before a conclusion uses it):

* ``keyword_r``: 04's pipeline's score without an LM (``correlation_keyword`` of
  :meth:`~course_lib.autointerp.pipeline.Scorers.score`: :func:`~course_lib.autointerp.scoring.simulation_score`
  with the :class:`~course_lib.autointerp.simulator.KeywordSimulator`) on the statistics explanation, pooled
  Pearson ``r`` over the scored records;
* ``weighted_r``: the k-token explanation read by the weighted keyword simulator (``s_i = w_t`` on a listed
  token, else 0), pooled ``r`` (its binary reading, ``s_i = 1`` on a listed token, gives the r-against-k
  curve's other panel, :func:`r_against_k`);
* ``detection_auroc``: a detection-style scorer with delphi's negatives: each record (activating: top and
  quantile; non-activating: the negatives) gets ``max_i s_i`` of the weighted simulation, and the score is the
  AUROC of activating against non-activating records.

**Gate** (:mod:`course_lib.autointerp.gates`): a unit's own explanation against the explanation of the next unit
of the same class in the same model (cyclic), on the same records: ``d_u = own_u - other_u``; a scorer passes
when the lower end of the 95% bootstrap interval of ``mean_u d_u`` is above 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from course_lib.autointerp.explainers import TokenStatsExplainer
from course_lib.autointerp.records import RecordConfig, UnitRecords, build_unit_records
from course_lib.autointerp.results import bootstrap_ci
from course_lib.autointerp.scoring import auroc, pooled_correlation, simulation_score
from course_lib.autointerp.simulator import KeywordSimulator

SCORERS: tuple[str, ...] = ("keyword_r", "weighted_r", "detection_auroc")
CHANCE = {"keyword_r": 0.0, "weighted_r": 0.0, "detection_auroc": 0.5}  # what an uninformative explanation gets
LABELS = {"keyword_r": "keyword simulator r (statistics explanation)",
          "weighted_r": "weighted simulator r (k-token explanation)",
          "detection_auroc": "keyword detection AUROC (vs non-activating)"}
EXPLAINER = TokenStatsExplainer()
KS: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 21)  # description lengths of the r-against-k curve, in tokens
K_FOCUS = 3  # tokens of the k-token explanation the weighted and detection scorers read
WeightsFn = Callable[[UnitRecords, int], dict[str, float]]  # (unit's records, k) -> {token string: weight}


def token_weights(ur: UnitRecords, k: int) -> dict[str, float]:
    """The k-token explanation: the ``k`` heaviest token strings of ``ur.train`` (by activation mass) -> their
    mean activation over their occurrences there."""
    mass: dict[str, float] = {}
    count: dict[str, int] = {}
    for r in ur.train:
        for s, a in zip(r.strings, r.acts):
            count[s] = count.get(s, 0) + 1
            if a > 0:
                mass[s] = mass.get(s, 0.0) + float(a)
    ranked = sorted((kv for kv in mass.items() if kv[1] > 0), key=lambda kv: -kv[1])[:k]
    return {s: m / count[s] for s, m in ranked}


def split_records(unit: str, cls: str, acts_select: torch.Tensor, acts_score: torch.Tensor,
                  windows_select: torch.Tensor, windows_score: torch.Tensor, tokenizer: Any, cfg: RecordConfig,
                  generator: torch.Generator) -> UnitRecords:
    """One unit's records: ``train`` from its top windows of the selection split (``acts_select [n, pos]``), every
    test record and negative from the scoring split (``acts_score [m, pos]``); ``max_act`` the larger maximum."""
    sel = build_unit_records(unit, cls, acts_select, windows_select, tokenizer,
                             dataclasses.replace(cfg, n_test_top=0, n_test_random=0, n_test_quantile=0), generator)
    sco = build_unit_records(unit, cls, acts_score, windows_score, tokenizer, dataclasses.replace(cfg, n_train=0),
                             generator)
    return dataclasses.replace(sco, train=sel.train, max_act=max(sel.max_act, sco.max_act))


def weighted_r(ur: UnitRecords, weights: Mapping[str, float]) -> float | None:
    """Pooled ``r`` on ``ur.test`` of the weighted keyword simulation ``s_i = weights.get(token_i, 0)``; 0 for a
    constant simulation, None when the unit's test activations are constant."""
    real = [np.asarray(r.acts, dtype=np.float64) for r in ur.test]
    if not real or np.ptp(np.concatenate(real)) == 0:
        return None
    sim = [np.asarray([weights.get(s, 0.0) for s in r.strings]) for r in ur.test]
    if np.ptp(np.concatenate(sim)) == 0:
        return 0.0
    v = pooled_correlation(real, sim)
    return float(v) if np.isfinite(v) else None


def detection_auroc(ur: UnitRecords, weights: Mapping[str, float]) -> float | None:
    """AUROC of ``max_i weights.get(token_i, 0)`` per record, activating records (top, quantile) against the
    non-activating ones (:attr:`UnitRecords.contrast`); None without both kinds."""
    labels = ur.contrast_labels
    if 0 not in labels or 1 not in labels:
        return None
    scores = [max((weights.get(s, 0.0) for s in r.strings), default=0.0) for r in ur.contrast]
    v = auroc(labels, scores)
    return float(v) if np.isfinite(v) else None


@dataclasses.dataclass(frozen=True)
class UnitScore:
    """One unit's explanation and its scores, with the scores of another unit's explanation on its records."""

    unit: str  # "<class>/<model>/<id>"
    cls: str  # unit class
    pair: str  # the matched pair it belongs to (MatchedPair.label)
    fraction: float  # the pair's kept fraction
    explanation: str | None  # the statistics explanation
    own: dict[str, float | None]  # scorer -> score of the unit's own explanation
    other: dict[str, float | None]  # scorer -> score of the next unit's explanation on the same records
    other_unit: str  # whose explanation ``other`` used


def score_units(urs: Sequence[UnitRecords], pair: str, fraction: float, k: int = K_FOCUS,
                weights_fn: WeightsFn = token_weights) -> list[UnitScore]:
    """Explain and score every unit of ``urs`` (one pair's units, any classes) and score it again with the
    explanation of the next unit of its class (cyclic within the class); ``weights_fn`` gives the k-token
    explanation."""
    simulator = KeywordSimulator()
    expl = {u.unit: EXPLAINER.explain(u) for u in urs}
    weights = {u.unit: weights_fn(u, k) for u in urs}
    out = []
    for cls in dict.fromkeys(u.kind for u in urs):
        group = [u for u in urs if u.kind == cls]
        for i, u in enumerate(group):
            o = group[(i + 1) % len(group)]
            own_text, other_text = expl[u.unit].text, expl[o.unit].text

            def keyword(text: str | None, u: UnitRecords = u) -> float | None:
                if text is None:
                    return None
                v = simulation_score(simulator, text, u)[0]["correlation"]
                return float(v) if np.isfinite(v) else None

            own = {"keyword_r": keyword(own_text), "weighted_r": weighted_r(u, weights[u.unit]) if own_text else None,
                   "detection_auroc": detection_auroc(u, weights[u.unit]) if own_text else None}
            other = {"keyword_r": keyword(other_text) if len(group) > 1 else None,
                     "weighted_r": weighted_r(u, weights[o.unit]) if len(group) > 1 and other_text else None,
                     "detection_auroc": detection_auroc(u, weights[o.unit]) if len(group) > 1 and other_text else None}
            out.append(UnitScore(u.unit, cls, pair, fraction, own_text, own, other, o.unit))
    return out


def gates(scores: Sequence[UnitScore], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per scorer: the paired own - other differences over every unit (all classes), their mean and 95%
    bootstrap interval, and ``pass`` (lower end > 0); per class the same mean and interval under ``"by_class"``."""
    out: dict[str, dict[str, Any]] = {}
    for s in SCORERS:
        def diffs(rows: Sequence[UnitScore], s: str = s) -> list[float]:
            return [float(r.own[s]) - float(r.other[s]) for r in rows  # type: ignore[arg-type]
                    if r.own.get(s) is not None and r.other.get(s) is not None]

        d = diffs(scores)
        ci = bootstrap_ci(d, seed=seed)
        by_class = {}
        for cls in dict.fromkeys(r.cls for r in scores):
            dc = diffs([r for r in scores if r.cls == cls])
            cc = bootstrap_ci(dc, seed=seed)
            by_class[cls] = {"mean": float(np.mean(dc)) if dc else None, "ci95": None if cc is None else list(cc),
                             "n": len(dc)}
        out[s] = {"mean": float(np.mean(d)) if d else None, "ci95": None if ci is None else list(ci), "n": len(d),
                  "pass": ci is not None and ci[0] > 0, "by_class": by_class}
    return out


def passed(gate_table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The scorers that passed their gate, in :data:`SCORERS` order."""
    return [s for s in SCORERS if gate_table.get(s, {}).get("pass")]


def null_thresholds(scores: Sequence[UnitScore], scorer: str, q: float = 0.95) -> dict[str, float]:
    """Per class: the ``q``-quantile of the scores that *another* unit's explanation gets (the null a unit's own
    explanation must beat to count as explained)."""
    out = {}
    for cls in dict.fromkeys(r.cls for r in scores):
        v = [float(r.other[scorer]) for r in scores if r.cls == cls and r.other.get(scorer) is not None]
        if v:
            out[cls] = float(np.quantile(v, q))
    return out


def explained(score: UnitScore, scorer: str, thresholds: Mapping[str, float]) -> bool:
    """Whether a unit's own explanation beats its class's null threshold on ``scorer``."""
    v, t = score.own.get(scorer), thresholds.get(score.cls)
    return v is not None and t is not None and v > t


def r_against_k(urs: Sequence[UnitRecords], ks: Sequence[int] = KS, seed: int = 0,
                weights_fn: WeightsFn = token_weights) -> dict[str, Any]:
    """``{simulator: {class: {k: {"mean", "ci95", "n"}}}}``: the mean pooled ``r`` over units of the k-token
    explanation read by the ``"binary"`` (``s_i = 1`` on a listed token) and ``"weighted"`` simulators, with its
    95% bootstrap interval over units (units whose test activations are constant or that never fire left out)."""
    out: dict[str, Any] = {"binary": {}, "weighted": {}}
    for cls in dict.fromkeys(u.kind for u in urs):
        group = [u for u in urs if u.kind == cls]
        for name in out:
            row = {}
            for k in ks:
                v = []
                for u in group:
                    w = weights_fn(u, k)
                    x = weighted_r(u, w if name == "weighted" else dict.fromkeys(w, 1.0)) if w else None
                    if x is not None:
                        v.append(x)
                ci = bootstrap_ci(v, seed=seed)
                row[k] = {"mean": float(np.mean(v)) if v else None, "ci95": None if ci is None else list(ci),
                          "n": len(v)}
            out[name][cls] = row
    return out
