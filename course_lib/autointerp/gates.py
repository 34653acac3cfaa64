"""Gates that test what they claim: does a scorer read the **explanation**, not just the records?

* **specificity** (paired, per unit): the unit's own explanation against the explanation another unit
  of the same kind received from the same explainer (:func:`swapped_explanations`, a cyclic shift
  within each kind, so every explanation is used once as a stand-in). Per unit
  ``d_u = score(own_u) - score(other_u)`` on the same records; the gate passes when the lower end of
  the 95% bootstrap CI of ``mean_u d_u`` (units resampled) is above 0. A scorer that ignores the
  explanation (the intruder test reads none) gives ``d_u = 0`` and fails.
* **known answer** (planted, :mod:`~.planted`): every planted unit scored with its true explanation reaches the
  scorer's minimum. :func:`planted_gates` gates each scorer on the planted units whose explanation it is built
  to read: the keyword simulator reads quoted tokens only, so it is gated on the units explained by a token
  list and its score on the others (0: it predicts nothing) is reported beside the gate (``reported_units``).
* **cross** (planted): a planted unit scored with another planted unit's true explanation (a disjoint concept:
  the ``" def"`` unit with the digits explanation) must stay below the known-answer minimum.
* **null** (planted, reported): a content-free explanation (:data:`NULL_EXPLANATION`) shows what a
  scorer gives for the records alone.

Random directions are then a comparison class (their mean with its interval), not a gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from course_lib.autointerp.explainers import Explanation
from course_lib.autointerp.results import GATE_KEYS, Result, bootstrap_ci, sanity_gates

NULL_EXPLANATION = "some tokens in the text."  # says nothing about any unit
TOKEN_LIST_KEYS: tuple[str, ...] = ("correlation_keyword",)  # scorers that read a list of quoted tokens only


def planted_gates(true: Sequence[Result], cross: Sequence[Result], summary: dict[str, Any],
                  specificity: dict[str, dict[str, Any]], token_list: Mapping[str, bool],
                  keys: Sequence[str] = GATE_KEYS) -> dict[str, dict[str, Any]]:
    """:func:`~.results.sanity_gates` per scorer, with the known-answer gate on the planted units the scorer can
    read: a scorer of :data:`TOKEN_LIST_KEYS` on the units whose ``token_list[unit]`` is True, every other scorer
    on all of ``true``. The cross gate reads every result of ``cross``. Each scorer's entry gains
    ``reported_units`` (``{unit: score}`` of the planted units left out of its known-answer gate)."""
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        known = [r for r in true if key not in TOKEN_LIST_KEYS or token_list.get(r.unit, True)]
        names = {r.unit for r in known}
        g = sanity_gates(known, summary, keys=[key], specificity=specificity, cross=cross)[key]
        g["reported_units"] = {r.unit: r.scores.get(key) for r in true if r.unit not in names}
        out[key] = g
    return out


def swapped_explanations(results: Sequence[Result]) -> list[Explanation]:
    """For each result with an explanation, ``Explanation(unit, explainer + "/swapped", text)`` where ``text``
    is the explanation of the next unit **of the same kind** (in the order of ``results``, cyclically).
    Kinds with a single explained unit get none (nothing to swap with)."""
    out = []
    kinds = dict.fromkeys(r.kind for r in results)
    for kind in kinds:
        rows = [r for r in results if r.kind == kind and r.explanation is not None]
        if len(rows) < 2:
            continue
        for i, r in enumerate(rows):
            other = rows[(i + 1) % len(rows)]
            out.append(Explanation(r.unit, f"{r.explainer}/swapped", other.explanation))
    return out


def paired_differences(own: Sequence[Result], other: Sequence[Result], keys: Sequence[str],
                       seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per score key: ``d_u = own_u - other_u`` over the units both score, its mean and 95% bootstrap CI
    (units resampled, :func:`~.results.bootstrap_ci`). ``{key: {"mean", "ci95", "n"}}``; mean None
    without a pair."""
    by_unit = {r.unit: r for r in other}
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        d = []
        for r in own:
            o = by_unit.get(r.unit)
            a, b = r.scores.get(key), None if o is None else o.scores.get(key)
            if a is not None and b is not None and np.isfinite(a) and np.isfinite(b):
                d.append(float(a) - float(b))
        ci = bootstrap_ci(d, seed=seed)
        out[key] = {"mean": float(np.mean(d)) if d else None, "ci95": None if ci is None else list(ci), "n": len(d)}
    return out


def kind_differences(results: Sequence[Result], keys: Sequence[str], pairs: Sequence[tuple[str, str]] = (
        ("sae", "neuron"), ("sae", "random")), n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Differences of mean score between unit kinds with a bootstrap CI (units of each kind resampled
    independently): ``{key: {"sae-neuron": {"diff", "ci95", "n"}, ...}}``; ``n`` is (units of a, units of b)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        vals = {}
        for r in results:
            v = r.scores.get(key)
            if v is not None and np.isfinite(v):
                vals.setdefault(r.kind, []).append(float(v))
        row = {}
        for a, b in pairs:
            x, y = np.asarray(vals.get(a, [])), np.asarray(vals.get(b, []))
            if x.size < 2 or y.size < 2:
                row[f"{a}-{b}"] = {"diff": None, "ci95": None, "n": (int(x.size), int(y.size))}
                continue
            boot = (x[rng.integers(0, x.size, (n_boot, x.size))].mean(1)
                    - y[rng.integers(0, y.size, (n_boot, y.size))].mean(1))
            lo, hi = np.quantile(boot, [0.025, 0.975])
            row[f"{a}-{b}"] = {"diff": float(x.mean() - y.mean()), "ci95": [float(lo), float(hi)],
                               "n": (int(x.size), int(y.size))}
        out[key] = row
    return out
