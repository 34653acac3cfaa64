"""A language model as a *chooser*: which of the statistics explainer's candidates explains the unit best?

The statistics explainer proposes one candidate per description length ``k``: the ``k`` token strings that
carry the most activation mass ``m_t = sum relu(a)`` in the unit's **train** records (:func:`top_tokens`), written as
``'the tokens "a", "b".'``. The all-at-once simulator (Bills et al.) turns a candidate into a distribution
``p(v | candidate, token context)`` over the levels ``v = 0..10`` at every token. The chooser ranks the
candidates by the mean log-likelihood of the train records' real levels ``v_i = discretise(a_i, max_a)``::

    L(candidate) = (1 / n) * sum_i log p(v_i | candidate, context_i)       (train records only)

and keeps the best. The chosen candidate is then scored on the **test** records (pooled ``r`` of the same
simulator, the correlation score), beside the fixed choice ``k = 3``: the chooser helps when its pick scores
above the fixed one on records it never saw. Select on train, report on test.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from course_lib.autointerp.records import UnitRecords, discretise, escape_token
from course_lib.autointerp.scoring import simulation_score

CANDIDATE_KS: tuple[int, ...] = (1, 2, 3, 5, 8)  # description lengths the chooser picks among
FIXED_K = 3  # the fixed description length the chooser is compared with


def candidate_text(tokens: Sequence[str]) -> str:
    """``'the token "a".'`` or ``'the tokens "a", "b".'``: the statistics explainer's wording."""
    shown = ", ".join(f'"{escape_token(s)}"' for s in tokens)
    return f"the token {shown}." if len(tokens) == 1 else f"the tokens {shown}."


def top_tokens(ur: UnitRecords, k: int) -> list[str]:
    """The ``k`` token strings of ``ur.train`` with the most activation mass, heaviest first."""
    mass: dict[str, float] = defaultdict(float)
    for r in ur.train:
        for s, a in zip(r.strings, r.acts):
            if a > 0:
                mass[s] += float(a)
    return [s for s, _ in sorted(mass.items(), key=lambda kv: -kv[1])[:k]]


def candidates(ur: UnitRecords, ks: Sequence[int] = CANDIDATE_KS) -> list[tuple[int, str]]:
    """``[(k, text)]``: one candidate per ``k`` (fewer when the train records have fewer activating tokens;
    duplicates dropped)."""
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for k in ks:
        words = top_tokens(ur, k)
        if not words:
            continue
        text = candidate_text(words)
        if text not in seen:
            seen.add(text)
            out.append((k, text))
    return out


def log_likelihood(simulator: Any, text: str, ur: UnitRecords) -> float:
    """Mean log-probability of the train records' real levels under ``simulator.simulate_with_probs``."""
    probs = simulator.simulate_with_probs(text, ur.train)
    scale = probs[0].shape[1] - 1 if probs else 10
    total, n = 0.0, 0
    for p, r in zip(probs, ur.train):
        levels = np.rint(discretise(r.acts, ur.max_act) * scale / 10).astype(np.int64)  # level 0-10 -> value 0-S
        total += float(np.log(np.clip(p[np.arange(len(levels)), levels], 1e-12, None)).sum())
        n += len(levels)
    return total / max(n, 1)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One unit's chooser outcome (the ``r`` are on the test records)."""

    unit: str
    kind: str
    candidates: tuple[tuple[int, str, float], ...]  # (k, text, train log-likelihood)
    chosen_k: int
    r_chosen: float | None  # the simulator's pooled r of the chosen candidate on the test records
    r_fixed: float | None  # the same for k = FIXED_K (or the longest candidate when fewer exist)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Choice:
        return cls(**(d | {"candidates": tuple(tuple(c) for c in d["candidates"])}))


def _r(simulator: Any, text: str, ur: UnitRecords) -> float | None:
    v = simulation_score(simulator, text, ur)[0]["correlation"]
    return None if not np.isfinite(v) else float(v)


def choose(simulator: Any, ur: UnitRecords, ks: Sequence[int] = CANDIDATE_KS) -> Choice | None:
    """Rank ``ur``'s candidates by train log-likelihood, score the best and the fixed-``k`` one on the test
    records; None for a unit with no activating train token."""
    cands = candidates(ur, ks)
    if not cands:
        return None
    scored = tuple((k, t, log_likelihood(simulator, t, ur)) for k, t in cands)
    best = max(scored, key=lambda c: c[2])
    fixed = next((c for c in scored if c[0] == FIXED_K), scored[-1])
    r_best = _r(simulator, best[1], ur)
    r_fixed = r_best if fixed[1] == best[1] else _r(simulator, fixed[1], ur)
    return Choice(ur.unit, ur.kind, scored, best[0], r_best, r_fixed)
