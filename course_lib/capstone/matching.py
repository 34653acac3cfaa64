"""Dense and weight-sparse models at matched pretraining loss: which dense model each sparse model meets.

Input: notebook 02's reference set (its manifest entries) and the loss that matches models there,
:func:`course_lib.circuits.notebook.matching_losses` (every window of the validation split). The candidates are
02's frontier models (:func:`course_lib.circuits.notebook.frontier_models`: the sparse models and the dense models
trained on the same data). Dense models are grouped into **widths** by :func:`course_lib.circuits.frontier.by_width`
(one point per width: the mean loss ``L_w`` of its seeds), as notebook 02's frontier does.

A sparse model with loss ``L_s`` meets the **least capable dense width that is at least as capable**::

    w*(L_s) = argmax { L_w : L_w <= L_s }        (02's rule "L_w <= L", then the closest such width)

and within that width the dense model trained with the same seed, so each (kept fraction, seed) gives one
**matched pair**. The match is conservative: the dense side is never worse than the sparse side, and the gap
``L_s - L_d >= 0`` is reported with every pair. A sparse model more capable than every dense width is paired with
the most capable width, flagged ``at_least_as_capable=False``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from course_lib.circuits import frontier
from course_lib.circuits import notebook as nb02

WidthFn = Callable[[float, Sequence[tuple[int, float]]], int]  # (sparse loss, [(width, loss)]) -> width


@dataclasses.dataclass(frozen=True)
class MatchedPair:
    sparse: str  # the sparse model's name in the reference set
    dense: str  # the dense model it meets
    fraction: float  # the sparse model's kept fraction of block weights
    seed: int  # training seed of both models
    sparse_loss: float  # validation loss (nats/token) of the sparse model, 02's matching loss
    dense_loss: float  # the same for the dense model
    sparse_width: int  # d_model of the sparse model
    dense_width: int  # d_model of the dense model
    at_least_as_capable: bool = True  # False: no dense width reaches the sparse model's loss

    @property
    def gap(self) -> float:
        """``L_sparse - L_dense`` (>= 0 when the dense model is at least as capable)."""
        return self.sparse_loss - self.dense_loss

    @property
    def label(self) -> str:
        return f"f={self.fraction:g} seed {self.seed}"


def matched_width(sparse_loss: float, widths: Sequence[tuple[int, float]]) -> int:
    """The width of the least capable dense point with ``L_w <= sparse_loss`` (``widths``: ``[(width, L_w)]``);
    the most capable one (smallest ``L_w``) when none reaches ``sparse_loss``."""
    capable = [(loss, w) for w, loss in widths if loss <= sparse_loss]
    if capable:
        return max(capable)[1]
    return min((loss, w) for w, loss in widths)[1]


def width_points(entries: Mapping[str, Mapping], match_loss: Mapping[str, float]) -> list[frontier.FrontierModel]:
    """02's dense width points (:func:`frontier.by_width`) over its frontier's dense models."""
    names = nb02.frontier_models(entries)
    dense = [frontier.model_from_entry(entries[n], match_loss[n], {}) for n in names
             if entries[n]["train"]["target_fraction"] >= 1]
    return frontier.by_width(dense)


def matched_pairs(entries: Mapping[str, Mapping], match_loss: Mapping[str, float], fractions: Sequence[float],
                  seeds: Sequence[int], width_fn: WidthFn = matched_width) -> list[MatchedPair]:
    """One :class:`MatchedPair` per sparse frontier model with a kept fraction in ``fractions`` and a seed in
    ``seeds`` (ordered by fraction, densest first, then seed); ``width_fn`` picks the dense width."""
    points = width_points(entries, match_loss)
    widths = [(p.width, p.val_loss) for p in points]
    names = nb02.frontier_models(entries)
    dense = {(entries[n]["model"]["d_model"], entries[n]["train"]["seed"]): n for n in names
             if entries[n]["train"]["target_fraction"] >= 1}
    out = []
    for n in names:
        e = entries[n]
        f, seed = float(e["train"]["target_fraction"]), int(e["train"]["seed"])
        if f >= 1 or not any(abs(f - x) < 1e-9 for x in fractions) or seed not in seeds:
            continue
        w = int(width_fn(float(match_loss[n]), widths))
        d = dense.get((w, seed)) or next(v for (dw, _), v in dense.items() if dw == w)
        out.append(MatchedPair(n, d, f, seed, float(match_loss[n]), float(match_loss[d]), int(e["model"]["d_model"]),
                               w, min(x for _, x in widths) <= match_loss[n]))
    return sorted(out, key=lambda p: (-p.fraction, p.seed))


def available_fractions(entries: Mapping[str, Mapping]) -> list[float]:
    """The kept fractions of the sparse frontier models, densest first."""
    names = nb02.frontier_models(entries)
    return sorted({float(entries[n]["train"]["target_fraction"]) for n in names
                   if entries[n]["train"]["target_fraction"] < 1}, reverse=True)
