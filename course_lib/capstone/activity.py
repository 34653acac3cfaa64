"""A second view without language: how concentrated a unit's activation is, on positions and on tokens.

For one unit with (oriented) activations ``a [N]`` over the scoring split's positions (position 0 of each window
left out), its tokens ``t [N]`` and bigrams ``b_i = (t_{i-1}, t_i)``, with the positive part ``m = relu(a)``::

    active fraction   = mean_i 1[a_i > 0.1 max a]            (activation sparsity; small = sparse)
    top-token share   = max_v sum_{i: t_i = v} m_i / sum_i m_i   (1: all of its mass on one token)
    top-bigram share  = the same over bigram ids

A unit whose mass sits on one token is "explained" by that token without any language; a share near ``1 / V``
spreads over the vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

ShareFn = Callable[[torch.Tensor, torch.Tensor], float]  # (acts [N], ids [N]) -> share of mass on the top id
ACTIVE_THRESHOLD = 0.1  # a position is active above this fraction of the unit's maximum


def top_token_share(acts: torch.Tensor, ids: torch.Tensor) -> float:
    """``max_v sum_{i: ids_i = v} relu(acts_i) / sum_i relu(acts_i)`` for ``acts [N]``, ``ids [N]`` (0 when the unit
    never fires)."""
    m = acts.float().clamp(min=0)
    total = float(m.sum())
    if total <= 0:
        return 0.0
    _, inv = torch.unique(ids, return_inverse=True)
    mass = torch.zeros(int(inv.max()) + 1).index_add_(0, inv, m)
    return float(mass.max()) / total


def bigram_ids(windows: torch.Tensor, vocab: int) -> torch.Tensor:
    """``prev * vocab + token`` for positions 1.. of ``windows [n, pos]``: ``[n, pos - 1]``."""
    return windows[:, :-1].long() * vocab + windows[:, 1:].long()


@dataclasses.dataclass(frozen=True)
class UnitActivity:
    unit: str  # "<class>/<model>/<id>"
    cls: str  # unit class
    pair: str  # matched pair label
    fraction: float  # its kept fraction
    active_fraction: float  # share of positions above ACTIVE_THRESHOLD x max
    top_token_share: float  # share of relu mass on the heaviest token
    top_bigram_share: float  # share of relu mass on the heaviest bigram


def unit_activity(names: list[str], cls: str, pair: str, fraction: float, acts: torch.Tensor, windows: torch.Tensor,
                  vocab: int, share_fn: ShareFn = top_token_share) -> list[UnitActivity]:
    """:class:`UnitActivity` of each unit of ``acts [n, pos, n_units]`` over ``windows [n, pos]`` (position 0 left
    out); ``share_fn`` computes both shares (token ids, then bigram ids)."""
    a = acts[:, 1:].reshape(-1, acts.shape[-1])
    toks = windows[:, 1:].reshape(-1)
    bis = bigram_ids(windows, vocab).reshape(-1)
    out = []
    for j, name in enumerate(names):
        x = a[:, j]
        mx = float(x.max())
        active = float((x > ACTIVE_THRESHOLD * mx).float().mean()) if mx > 0 else 0.0
        out.append(UnitActivity(name, cls, pair, fraction, active, float(share_fn(x, toks)), float(share_fn(x, bis))))
    return out


STATS: tuple[str, ...] = ("active_fraction", "top_token_share", "top_bigram_share")
