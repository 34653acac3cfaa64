"""Results as JSON Lines: one line per (unit, explainer) with the explanation, every score and the
records used, so a run can be reloaded, re-plotted or re-scored without the models.

A missing explanation (empty, unparsable, backend error, dead unit) is kept with its ``reason``;
its scores are ``None`` (JSON ``null``) and summaries skip it but count it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from course_lib import cache
from course_lib.autointerp.records import UnitKind, UnitRecords

SCORE_KEYS: tuple[str, ...] = (
    "correlation_llm",  # pooled Pearson r, all-at-once simulator (local LM)
    "correlation_keyword",  # pooled Pearson r, keyword simulator (no LLM)
    "detection_auroc", "detection_bacc",  # delphi detection
    "fuzzing_auroc", "fuzzing_bacc",  # delphi fuzzing
    "embedding_auroc",  # MiniLM retrieval
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


def save_jsonl(results: Iterable[Result], path: str | Path) -> Path:
    """Write one JSON object per line, atomically."""
    path = Path(path)
    cache.atomic_write_text(path, "".join(r.to_json() + "\n" for r in results))
    return path


def load_jsonl(path: str | Path) -> list[Result]:
    """Read results written by :func:`save_jsonl` (blank lines skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Result.from_dict(json.loads(line)))
    return out


def summarise(results: Sequence[Result], explainer: str | None = None) -> dict[str, Any]:
    """``{kind: {score: {"mean", "median", "n"}, "n_units", "n_missing"}}`` (NaN/None skipped)."""
    out: dict[str, Any] = {}
    rows = [r for r in results if explainer is None or r.explainer == explainer]
    for kind in sorted({r.kind for r in rows}):
        ks = [r for r in rows if r.kind == kind]
        entry: dict[str, Any] = {"n_units": len({r.unit for r in ks}),
                                 "n_missing": sum(r.explanation is None for r in ks)}
        for key in SCORE_KEYS:
            vals = [v for r in ks if (v := r.scores.get(key)) is not None and math.isfinite(v)]
            entry[key] = {"mean": float(np.mean(vals)) if vals else None,
                          "median": float(np.median(vals)) if vals else None, "n": len(vals)}
        out[kind] = entry
    return out
