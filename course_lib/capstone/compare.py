"""Class means and paired differences between unit classes, with intervals over units and seeds.

Each matched pair ``p`` (one kept fraction ``f``, one seed) holds units of every class. For classes ``A`` and
``B`` and a per-unit value ``v`` (a score or an activation statistic)::

    D_p = mean_{u in A, p} v_u - mean_{u in B, p} v_u        (paired: both classes from the same pair)
    D   = mean_p D_p                                          (over the pairs of one fraction, or of all)

**Interval**: a two-level bootstrap. Each draw resamples, within each kept fraction, its pairs (seeds) with
replacement, and within each drawn pair the units of ``A`` and of ``B`` with replacement; the 2.5% and 97.5%
quantiles of ``D`` over the draws. A difference whose interval excludes 0 is reported as a difference; one that
includes 0 as *no difference resolved at this scale* (never as an absence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Row = Any  # anything with .cls, .pair, .fraction (explain.UnitScore, activity.UnitActivity)
ValueFn = Callable[[Row], float | None]


def _groups(rows: Sequence[Row], value: ValueFn, cls: str) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for r in rows:
        if r.cls == cls and (v := value(r)) is not None and np.isfinite(v):
            out.setdefault(r.pair, []).append(float(v))
    return {p: np.asarray(v) for p, v in out.items()}


def _resampled_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot]``: the mean of ``x`` resampled with replacement, once per draw."""
    return x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1)


def _pair_resampled(unit_draws: np.ndarray, fractions: list[float], rng: np.random.Generator) -> np.ndarray:
    """``[n_boot]``: per draw, the pairs resampled with replacement within each kept fraction, then the mean of
    their (unit-resampled) values ``unit_draws [pairs, n_boot]``."""
    n_boot = unit_draws.shape[1]
    total = np.zeros(n_boot)
    for f in dict.fromkeys(fractions):
        members = np.array([i for i, x in enumerate(fractions) if x == f])
        pick = members[rng.integers(0, members.size, (n_boot, members.size))]  # [n_boot, members]
        total += unit_draws[pick, np.arange(n_boot)[:, None]].sum(axis=1)
    return total / len(fractions)


def paired_difference(rows: Sequence[Row], value: ValueFn, a: str, b: str, fraction: float | None = None,
                      n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``D`` of classes ``a`` minus ``b`` (module docstring) over the pairs of ``fraction`` (None: every fraction,
    resampled within each), with ``{"diff", "ci95", "per_pair": {pair: D_p}, "n_pairs", "n_units": (n_a, n_b)}``;
    ``diff`` None when no pair has both classes."""
    rows = [r for r in rows if fraction is None or abs(r.fraction - fraction) < 1e-9]
    ga, gb = _groups(rows, value, a), _groups(rows, value, b)
    pairs = [p for p in ga if p in gb and ga[p].size and gb[p].size]
    frac_of = {r.pair: r.fraction for r in rows}
    out: dict[str, Any] = {"diff": None, "ci95": None, "per_pair": {}, "n_pairs": len(pairs),
                           "n_units": (int(sum(ga[p].size for p in pairs)), int(sum(gb[p].size for p in pairs)))}
    if not pairs:
        return out
    per_pair = {p: float(ga[p].mean() - gb[p].mean()) for p in pairs}
    out["diff"], out["per_pair"] = float(np.mean(list(per_pair.values()))), per_pair
    rng = np.random.default_rng(seed)
    unit_draws = np.stack([_resampled_means(ga[p], n_boot, rng) - _resampled_means(gb[p], n_boot, rng)
                           for p in pairs])  # [pairs, n_boot]
    lo, hi = np.quantile(_pair_resampled(unit_draws, [frac_of[p] for p in pairs], rng), [0.025, 0.975])
    out["ci95"] = [float(lo), float(hi)]
    return out


def class_means(rows: Sequence[Row], value: ValueFn, classes: Sequence[str], n_boot: int = 1000,
                seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per class: the mean over pairs of the pair means, the same two-level bootstrap interval, the pair means
    (the spread over seeds) and the unit count: ``{cls: {"mean", "ci95", "per_pair", "n"}}``."""
    out = {}
    rng = np.random.default_rng(seed)
    for cls in classes:
        g = _groups(rows, value, cls)
        if not g:
            out[cls] = {"mean": None, "ci95": None, "per_pair": {}, "n": 0}
            continue
        frac_of = {r.pair: r.fraction for r in rows}
        names = list(g)
        unit_draws = np.stack([_resampled_means(g[p], n_boot, rng) for p in names])
        lo, hi = np.quantile(_pair_resampled(unit_draws, [frac_of[p] for p in names], rng), [0.025, 0.975])
        per_pair = {p: float(v.mean()) for p, v in g.items()}
        out[cls] = {"mean": float(np.mean(list(per_pair.values()))), "ci95": [float(lo), float(hi)],
                    "per_pair": per_pair, "n": int(sum(v.size for v in g.values()))}
    return out


def verdict(d: Mapping[str, Any], digits: int = 3) -> str:
    """``"+0.081 [0.042, 0.12]: higher"``-style words for a :func:`paired_difference` (sign read from the
    interval: higher, lower, or no difference resolved)."""
    if d.get("diff") is None:
        return "not measured"
    ci = d.get("ci95")
    text = f"{d['diff']:+.{digits}g}" + (f" [{ci[0]:+.{digits}g}, {ci[1]:+.{digits}g}]" if ci else "")
    if not ci:
        return text + ": no interval"
    if ci[0] > 0:
        return text + ": higher"
    if ci[1] < 0:
        return text + ": lower"
    return text + ": no difference resolved"
