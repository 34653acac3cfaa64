"""Single-factor controls for the paper's dead-latent fixes: which of the three does what?

The recipe keeps latents alive with three fixes that :class:`~course_lib.sae.model.SAEConfig` switches one
by one; Gao et al. (2024) name the first two, the third is from Bricken et al. (2023):

* ``AuxK``: the auxiliary loss on dead latents (``aux_coef = 0`` turns it off);
* ``tied init``: the encoder starts as the decoder's transpose (``tied_init = False``: an independent
  random encoder);
* ``median b_pre``: ``b_pre`` starts at the geometric median of a sample (``median_init = False``: at 0).

:func:`fix_controls` gives the full recipe, each fix removed **alone** (three single-factor controls,
each differing from the recipe in exactly one switch) and all three removed. Trained over seeds,
:func:`summarise` gives each config's mean and spread, and :func:`effects` says, per fix, whether
removing it changed a metric by more than the seed-to-seed spread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from course_lib.sae.evaluation import seed_summary
from course_lib.sae.model import SAEConfig

# fix name -> the SAEConfig fields that switch it off
FIXES: dict[str, dict[str, Any]] = {
    "AuxK": {"aux_coef": 0.0},
    "tied init": {"tied_init": False},
    "median b_pre": {"median_init": False},
}
ALL_FIXES = "all fixes"
NO_FIXES = "no fixes"


def without(fix: str) -> str:
    """The control's name: ``"no AuxK"``, ``"no tied init"``, ``"no median b_pre"``."""
    return f"no {fix}"


def fix_controls(recipe: SAEConfig) -> dict[str, SAEConfig]:
    """``{name: SAEConfig}``: the recipe (every fix on), each fix off alone, and every fix off.

    ``recipe`` must have every fix on (``aux_coef > 0``, ``tied_init``, ``median_init``). Order: all
    fixes, the three single-factor controls (in :data:`FIXES` order), no fixes.
    """
    if not (recipe.aux_coef > 0 and recipe.tied_init and recipe.median_init):
        raise ValueError(f"the recipe must have every fix on (aux_coef > 0, tied_init, median_init); got {recipe}")
    out = {ALL_FIXES: recipe}
    out.update({without(name): dataclasses.replace(recipe, **off) for name, off in FIXES.items()})
    out[NO_FIXES] = dataclasses.replace(recipe, **{k: v for off in FIXES.values() for k, v in off.items()})
    return out


AUXK_ON = "AuxK, no other fix"
AUXK_OFF = "no fix at all"


def auxk_arm(recipe: SAEConfig, dead_tokens: int) -> dict[str, SAEConfig]:
    """``{AUXK_ON: cfg, AUXK_OFF: cfg}``: a control arm built for AuxK, where latents do die.

    Both configs turn the other two fixes off (no tied init, ``b_pre`` at 0), so that many latents die
    early, and use a short dead window ``dead_tokens`` (AuxK starts acting as soon as a latent has been
    silent that long); they differ only in AuxK (``aux_coef``: the recipe's, or 0).
    """
    if recipe.aux_coef <= 0:
        raise ValueError(f"the recipe must have AuxK on (aux_coef > 0); got {recipe}")
    on = dataclasses.replace(recipe, tied_init=False, median_init=False, dead_tokens=dead_tokens)
    return {AUXK_ON: on, AUXK_OFF: dataclasses.replace(on, aux_coef=0.0)}


def switches(cfg: SAEConfig) -> dict[str, bool]:
    """``{fix: on?}`` for one config."""
    return {"AuxK": cfg.aux_coef > 0, "tied init": cfg.tied_init, "median b_pre": cfg.median_init}


def summarise(values: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """``{config: {mean, std, min, max, n}}`` of one metric's values over seeds (std with ddof=1; 0 for one seed)."""
    return {name: seed_summary(v) for name, v in values.items()}


def effects(values: Mapping[str, Sequence[float]], tolerance: float = 0.0) -> dict[str, dict[str, Any]]:
    """Per fix, what removing it alone does to one metric, against the full recipe.

    ``values``: ``{config name: [value per seed]}`` with the names of :func:`fix_controls`. For each fix:
    ``delta`` = mean(without the fix) - mean(all fixes); ``noise`` = the larger of the two configs'
    seed ranges (max - min); ``measurable`` = ``|delta| > max(noise, tolerance)``, i.e. the two sets of
    seeds do not overlap and the change exceeds ``tolerance`` (a floor for metrics whose seeds happen
    to agree exactly). With one seed ``noise`` is 0, so only ``tolerance`` guards the verdict.
    """
    base = np.asarray(values[ALL_FIXES], dtype=np.float64)
    out = {}
    for fix in FIXES:
        v = np.asarray(values[without(fix)], dtype=np.float64)
        delta = float(v.mean() - base.mean())
        noise = float(max(np.ptp(v), np.ptp(base)))
        out[fix] = {"delta": delta, "noise": noise, "measurable": abs(delta) > max(noise, tolerance)}
    return out
