"""Weight sparsity by top-k magnitude projection, as in Gao et al. (OpenAI, 2025).

After every optimizer step each constrained tensor ``W`` keeps its ``k`` entries of largest
``|W|`` and the rest are set to exactly zero: ``W <- W * 1[|W| >= kth_largest(|W|)]`` (ties
broken so that exactly ``k`` survive). The kept fraction anneals linearly from 1 (dense) to its
target between ``anneal_start`` and ``anneal_end`` (fractions of training), then stays there:
:func:`kept_fraction` (the schedule) and :func:`project_topk` (one tensor, out of place) are the two
pieces notebook 02's learners write; :func:`project_topk_` applies the projection in place to many tensors.

Tensors with a leading "instance" dimension (toy models training many instances at once) can be
projected per instance with ``instance_dim=0``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch


@dataclasses.dataclass(frozen=True)
class SparsitySchedule:
    target_fraction: float = 1.0  # fraction of entries kept at the end (1.0 = dense)
    anneal_start: float = 0.01  # fraction of training at which the kept fraction starts to fall
    anneal_end: float = 0.5  # fraction of training at which it reaches target_fraction

    def __post_init__(self) -> None:
        if not 0.0 < self.target_fraction <= 1.0:
            raise ValueError(f"target_fraction={self.target_fraction} must be in (0, 1]")
        if not 0.0 <= self.anneal_start <= self.anneal_end <= 1.0:
            raise ValueError("need 0 <= anneal_start <= anneal_end <= 1")

    def fraction_at(self, step: int, total_steps: int) -> float:
        """Kept fraction after optimizer step ``step`` (0-based) of ``total_steps``."""
        return kept_fraction(step, total_steps, self.target_fraction, self.anneal_start, self.anneal_end)


def kept_fraction(step: int, total_steps: int, target_fraction: float, anneal_start: float = 0.01,
                  anneal_end: float = 0.5) -> float:
    """Kept fraction after optimizer step ``step`` (0-based) of ``total_steps``.

    With ``t = (step + 1) / total_steps`` the fraction of training done: 1 until ``anneal_start``, then
    linear down to ``target_fraction`` at ``anneal_end``, then ``target_fraction``.
    """
    t = (step + 1) / max(total_steps, 1)
    if t <= anneal_start:
        return 1.0
    if t >= anneal_end or anneal_end == anneal_start:
        return target_fraction
    u = (t - anneal_start) / (anneal_end - anneal_start)
    return 1.0 + u * (target_fraction - 1.0)


def kept_fraction_geometric(step: int, total_steps: int, target_fraction: float, anneal_start: float = 0.01,
                            anneal_end: float = 0.5) -> float:
    """:func:`kept_fraction` with a geometric anneal: ``log f`` falls linearly from 0 to ``log target_fraction``
    between ``anneal_start`` and ``anneal_end``, so each step removes the same *share* of the weights still kept
    (gentler than the linear schedule near a small target: linear to 0.02 removes half of what is left in the
    last 2% of the anneal)."""
    t = (step + 1) / max(total_steps, 1)
    if t <= anneal_start:
        return 1.0
    if t >= anneal_end or anneal_end == anneal_start:
        return target_fraction
    u = (t - anneal_start) / (anneal_end - anneal_start)
    return math.exp(u * math.log(target_fraction))


ANNEAL_SHAPES = {"linear": kept_fraction, "geometric": kept_fraction_geometric}


def keep_count(numel: int, fraction: float, min_keep: int = 1) -> int:
    """Number of entries kept: ``max(min_keep, ceil(fraction * numel))``, at most ``numel``."""
    return min(numel, max(min_keep, math.ceil(fraction * numel)))


@torch.no_grad()
def topk_mask(w: torch.Tensor, k: int, instance_dim: int | None = None) -> torch.Tensor:
    """Boolean mask with exactly ``k`` True entries (per instance if ``instance_dim`` is given)."""
    if instance_dim is None:
        flat = w.reshape(-1).abs()
        mask = torch.zeros_like(flat, dtype=torch.bool)
        if k >= flat.numel():
            mask[:] = True
        else:
            mask[flat.topk(k, sorted=False).indices] = True
        return mask.view_as(w)
    moved = w.movedim(instance_dim, 0)
    flat = moved.reshape(moved.shape[0], -1).abs()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    k = min(k, flat.shape[1])
    mask.scatter_(1, flat.topk(k, dim=1, sorted=False).indices, True)
    return mask.view_as(moved).movedim(0, instance_dim)


@torch.no_grad()
def project_topk(w: torch.Tensor, fraction: float, min_keep: int = 1) -> torch.Tensor:
    """A copy of ``w`` keeping its top :func:`keep_count` entries by ``|w|`` over the whole tensor, the rest 0."""
    return w * topk_mask(w, keep_count(w.numel(), fraction, min_keep))


@torch.no_grad()
def project_topk_(
    params: Iterable[torch.Tensor], fraction: float, instance_dim: int | None = None, min_keep: int = 1
) -> None:
    """In place: keep the top ``fraction`` of every tensor's entries by magnitude, zero the rest."""
    if fraction >= 1.0:
        return
    for p in params:
        per = p.numel() if instance_dim is None else p.numel() // p.shape[instance_dim]
        k = keep_count(per, fraction, min_keep)
        if k < per:
            p.mul_(topk_mask(p, k, instance_dim))


def nonzero_fraction(params: Iterable[torch.Tensor]) -> float:
    """Measured fraction of exactly-nonzero entries over all ``params``."""
    nz = total = 0
    for p in params:
        nz += int((p != 0).sum())
        total += p.numel()
    return nz / max(total, 1)
