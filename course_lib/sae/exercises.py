"""Checkers for notebook 03's exercises: each runs the learner's function on small tensors and names the mistake.

Same contract as :mod:`course_lib.toy.exercises`: a success message, :data:`~course_lib.exercises.NOT_ATTEMPTED`
while the function still raises ``NotImplementedError``, else :class:`~course_lib.exercises.ExerciseError`
with the likely mistake.

- :func:`check_topk_activation`: ``z = ReLU(TopK_k(pre_acts))`` scattered back to ``[N, n_latents]``.
- :func:`check_nmse`: ``sum ||x_hat - x||^2 / sum ||x - mean x||^2`` (= FVU).
- :func:`check_auxk_loss`: the AuxK loss, the top ``k_aux`` *dead* latents reconstructing the residual.
- :func:`check_ce_loss_score`: ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_lib.exercises import NOT_ATTEMPTED, ExerciseError, diagnose, tensor_of
from course_lib.sae import model

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "auxk_loss", "check_auxk_loss", "check_ce_loss_score",
           "check_nmse", "check_topk_activation", "topk_activation"]


def topk_activation(pre_acts: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: ``[N, n_latents] -> [N, n_latents]``, the k largest pre-activations per row, ReLU'd, others 0."""
    vals, idx = pre_acts.topk(k, dim=-1)
    return torch.zeros_like(pre_acts).scatter(-1, idx, F.relu(vals))


def auxk_loss(pre_acts: torch.Tensor, dead: torch.Tensor, residual: torch.Tensor, W_dec: torch.Tensor,
              k_aux: int) -> torch.Tensor:
    """Reference AuxK: ``NMSE(residual, TopK_kaux(pre_acts over dead latents) @ W_dec)``, as in ``model.topk_loss``."""
    masked = pre_acts.masked_fill(~dead, float("-inf"))
    vals, idx = masked.topk(min(k_aux, int(dead.sum())), dim=-1)
    z_aux = torch.zeros_like(pre_acts).scatter(-1, idx, F.relu(vals))
    return model.nmse(residual, z_aux @ W_dec)


# --------------------------------------------------------------------------- exercise 1


def check_topk_activation(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """``fn(pre_acts [N, n_latents], k) -> z [N, n_latents]``."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(6, 10, generator=g)
    pre[0] = -pre[0].abs() - 0.1  # a row with no positive pre-activation: its code must be all zeros
    k = 3
    try:
        got = fn(pre.clone(), k)
    except NotImplementedError:
        return NOT_ATTEMPTED
    if isinstance(got, tuple):
        raise ExerciseError("topk_activation returned a tuple (values, indices?): scatter the values back into a "
                            "[N, n_latents] tensor of zeros")
    got = tensor_of("topk_activation", got, tuple(pre.shape), "[N, n_latents]: zeros except the kept latents")
    ref = topk_activation(pre, k)
    vals, idx = pre.topk(k, dim=-1)
    col = torch.zeros_like(pre)
    cv, ci = pre.topk(k, dim=0)
    col.scatter_(0, ci, F.relu(cv))
    _, ai = pre.abs().topk(k, dim=-1)
    diagnose("topk_activation", got, ref, {
        "no ReLU: negative pre-activations among the top k must become 0 (a row can have fewer than k active)":
            torch.zeros_like(pre).scatter(-1, idx, vals),
        "you took the top k over the batch (dim 0); each token keeps its own k latents (dim -1)": col,
        "you ranked by |pre_acts|; TopK keeps the largest values, not the largest magnitudes":
            torch.zeros_like(pre).scatter(-1, ai, F.relu(pre.gather(-1, ai))),
        "you applied the ReLU but no TopK: keep only k latents per token": F.relu(pre),
    })
    return "topk_activation: correct"


# --------------------------------------------------------------------------- exercise 2


def check_nmse(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(x [N, d], x_hat [N, d]) -> scalar``: FVU."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=g) * 2 + 3.0  # a large mean: centring matters
    x_hat = x + 0.5 * torch.randn(50, 8, generator=g)
    try:
        got = fn(x.clone(), x_hat.clone())
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("nmse", got, (), "one number")
    ref = model.nmse(x, x_hat)
    err = (x_hat - x).pow(2).sum()
    diagnose("nmse", got, ref, {
        "the denominator must be the variance around the mean, sum ||x - mean(x)||^2, not sum ||x||^2":
            err / x.pow(2).sum(),
        "you returned the explained variance (1 - FVU); NMSE is the unexplained fraction": 1 - ref,
        "that is the plain MSE; normalise by the variance of x": (x_hat - x).pow(2).mean(),
        "the mean is over tokens (dim 0), one mean vector; you centred each token on its own mean":
            err / (x - x.mean(1, keepdim=True)).pow(2).sum(),
        "no square root: NMSE compares squared norms": ref.sqrt(),
    })
    return "nmse: correct"


# --------------------------------------------------------------------------- exercise 3


def check_auxk_loss(fn: Callable[..., torch.Tensor]) -> str:
    """``fn(pre_acts [N, n], dead [n] bool, residual [N, d], W_dec [n, d], k_aux) -> scalar``."""
    g = torch.Generator().manual_seed(2)
    n, d, N, k_aux = 12, 5, 30, 3
    pre = torch.randn(N, n, generator=g)
    pre[:, :4] += 3.0  # live latents with large pre-activations: they must not be used
    dead = torch.zeros(n, dtype=torch.bool)
    dead[4:] = True
    W_dec = torch.randn(n, d, generator=g)
    residual = 0.3 * torch.randn(N, d, generator=g)
    try:
        got = fn(pre.clone(), dead.clone(), residual.clone(), W_dec.clone(), k_aux)
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("auxk_loss", got, (), "one number")
    ref = auxk_loss(pre, dead, residual, W_dec, k_aux)
    _, idx_all = pre.topk(k_aux, dim=-1)
    z_all = torch.zeros_like(pre).scatter(-1, idx_all, F.relu(pre.gather(-1, idx_all)))
    masked = pre.masked_fill(~dead, float("-inf"))
    mv, mi = masked.topk(k_aux, dim=-1)
    z_norelu = torch.zeros_like(pre).scatter(-1, mi, mv)
    z_aux = torch.zeros_like(pre).scatter(-1, mi, F.relu(mv))
    diagnose("auxk_loss", got, ref, {
        "you used all latents; AuxK picks the top k_aux among the *dead* ones (mask the live ones with -inf)":
            model.nmse(residual, z_all @ W_dec),
        "no ReLU on the auxiliary activations": model.nmse(residual, z_norelu @ W_dec),
        "normalise like the main loss: NMSE(residual, ...) divides by the residual's variance, not plain MSE":
            (z_aux @ W_dec - residual).pow(2).mean(),
    })
    return "auxk_loss: correct"


# --------------------------------------------------------------------------- exercise 4


def check_ce_loss_score(fn: Callable[[float, float, float], float]) -> str:
    """``fn(ce_clean, ce_sae, ce_zero) -> (ce_zero - ce_sae) / (ce_zero - ce_clean)``."""
    clean, spliced, zero = 2.0, 2.5, 7.0
    try:
        got = fn(clean, spliced, zero)
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("ce_loss_score", got, (), "one number")
    ref = torch.tensor((zero - spliced) / (zero - clean))
    diagnose("ce_loss_score", got, ref, {
        "you returned the fraction of the loss *lost* (1 - score); the score is 1 for a perfect SAE":
            1 - ref,
        "the denominator is the zero-ablation gap CE_zero - CE_clean": torch.tensor((zero - spliced) / zero),
        "that is a ratio of losses; the score compares gaps: (CE_zero - CE_sae) / (CE_zero - CE_clean)":
            torch.tensor(clean / spliced),
        "that is the increase in loss (delta CE), not the score": torch.tensor(spliced - clean),
    })
    return "ce_loss_score: correct"
