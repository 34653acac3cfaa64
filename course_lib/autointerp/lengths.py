"""Description length: how much of a unit a k-token statistics explanation captures, as k grows.

The **k-token explanation** of a unit lists the ``k`` token strings carrying the most activation
mass ``m_t = sum relu(a)`` in its **train** records (those the explainer reads); each listed token
keeps its mean activation there, ``w_t = m_t / count_t``. Two simulators read it on the **test**
records (top, quantile and random, the correlation score's records):

* binary keyword: ``s_i = 1`` on a listed token, else 0 (what the keyword simulator does with a
  quoted token list);
* weighted keyword: ``s_i = w_t`` on a listed token ``t``, else 0.

The score is the pooled Pearson ``r`` of :func:`~.scoring.pooled_correlation` (0 for a constant
simulation, as the scorers do). Per unit kind and ``k``: the mean ``r`` over units with its 95%
bootstrap CI. A kind whose ``r`` is already high at small ``k`` is explained by few tokens; a kind
that catches up only as ``k`` grows needs a long description (a list of tokens is not an explanation).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from course_lib.autointerp.records import UnitRecords
from course_lib.autointerp.results import bootstrap_ci
from course_lib.autointerp.scoring import pooled_correlation

KS: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 21)  # description lengths, in tokens


def token_weights(ur: UnitRecords, k: int) -> dict[str, float]:
    """The ``k`` heaviest token strings of ``ur.train`` (by activation mass) -> their mean activation."""
    mass: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for r in ur.train:
        for s, a in zip(r.strings, r.acts):
            count[s] += 1
            if a > 0:
                mass[s] += float(a)
    ranked = sorted((kv for kv in mass.items() if kv[1] > 0), key=lambda kv: -kv[1])[:k]
    return {s: m / count[s] for s, m in ranked}


def k_token_r(ur: UnitRecords, k: int, weighted: bool) -> float | None:
    """Pooled ``r`` on the test records of the k-token explanation read by the binary or weighted simulator
    (None when the unit has no activating train token or its test activations are constant)."""
    w = token_weights(ur, k)
    if not w:
        return None
    real = [list(r.acts) for r in ur.test]
    sim = [[(w[s] if weighted else 1.0) if s in w else 0.0 for s in r.strings] for r in ur.test]
    flat = np.concatenate([np.asarray(x, dtype=np.float64) for x in sim]) if sim else np.zeros(0)
    if flat.size == 0 or np.ptp(np.concatenate([np.asarray(x) for x in real])) == 0:
        return None
    if np.ptp(flat) == 0:
        return 0.0  # a constant simulation predicts nothing
    v = pooled_correlation(real, sim)
    return None if not np.isfinite(v) else float(v)


def r_against_k(urs: Sequence[UnitRecords], ks: Sequence[int] = KS, seed: int = 0) -> dict[str, Any]:
    """``{simulator: {kind: {k: {"mean", "ci95", "n"}}}}`` for ``simulator`` in ("binary", "weighted")."""
    out: dict[str, Any] = {}
    for name, weighted in (("binary", False), ("weighted", True)):
        per_kind: dict[str, Any] = {}
        for kind in dict.fromkeys(u.kind for u in urs):
            row = {}
            for k in ks:
                v = [x for u in urs if u.kind == kind for x in [k_token_r(u, k, weighted)] if x is not None]
                ci = bootstrap_ci(v, seed=seed)
                row[k] = {"mean": float(np.mean(v)) if v else None, "ci95": None if ci is None else list(ci),
                          "n": len(v)}
            per_kind[kind] = row
        out[name] = per_kind
    return out


def lengths_markdown(table: dict[str, Any], k_focus: int = 3) -> str:
    """What the run's r-against-k table says, as Markdown: per simulator, each kind's mean r [95% CI] at
    ``k_focus`` tokens and at the largest k, and whether the SAE interval lies above the others at ``k_focus``."""
    lines = []
    for name, per_kind in table.items():
        ks = sorted(next(iter(per_kind.values())).keys()) if per_kind else []
        if not ks or k_focus not in ks:
            continue
        kmax = ks[-1]

        def cell(kind: str, k: int, per_kind: dict[str, Any] = per_kind) -> str:
            e = per_kind[kind][k]
            if e["mean"] is None:
                return f"{kind} n/a"
            ci = e["ci95"]
            return f"{kind} {e['mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        sae = per_kind.get("sae", {}).get(k_focus, {})
        others = [per_kind[x][k_focus] for x in per_kind if x != "sae"]
        sep = (sae.get("ci95") is not None and all(o.get("ci95") is not None and sae["ci95"][0] > o["ci95"][1]
                                                   for o in others))
        lines.append(f"* **{name} keyword simulator**: at k = {k_focus}: " + "; ".join(cell(x, k_focus) for x in per_kind)
                     + f"; at k = {kmax}: " + "; ".join(cell(x, kmax) for x in per_kind) + ". "
                     + (f"At k = {k_focus} the SAE interval lies above every other kind's." if sep else
                        f"At k = {k_focus} the SAE interval overlaps another kind's."))
    return "\n".join(lines)
