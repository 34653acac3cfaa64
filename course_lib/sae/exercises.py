"""Checkers for notebook 03's exercises: each runs the learner's function on small tensors and names the mistake.

Same contract as :mod:`course_lib.toy.exercises`: a success message, :data:`~course_lib.exercises.NOT_ATTEMPTED`
while the function still raises ``NotImplementedError``, else :class:`~course_lib.exercises.ExerciseError`
with the likely mistake.

- :func:`check_topk_activation`: ``z = ReLU(TopK_k(pre_acts))`` scattered back to ``[N, n_latents]``.
- :func:`check_nmse`: ``sum ||x_hat - x||^2 / sum ||x - mean x||^2`` (= FVU).
- :func:`check_auxk_loss`: the AuxK loss, the top ``k_aux`` *dead* latents reconstructing the residual.
- :func:`check_ce_loss_score`: ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``.
- :func:`check_sae_train_step`: one TopK training step with the decoder-norm projection.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_lib.exercises import NOT_ATTEMPTED, ExerciseError, diagnose, tensor_of
from course_lib.sae import model

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "auxk_loss", "check_auxk_loss", "check_ce_loss_score", "check_sae_train_step",
           "check_nmse", "check_topk_activation", "sae_train_step", "topk_activation"]


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


# --------------------------------------------------------------------------- exercise: the training step


def _train_step(autoencoder: model.SparseAutoencoder, opt: torch.optim.Optimizer, xn: torch.Tensor, k: int, *,
                project: bool = True, renorm_dim: int | None = 1, zero_grad: bool = True) -> torch.Tensor:
    """One TopK step with switches for the known mistakes (the reference has every switch at its default)."""
    if zero_grad:
        opt.zero_grad(set_to_none=True)
    z = topk_activation(autoencoder.pre_acts(xn), k)
    loss = model.nmse(xn, z @ autoencoder.W_dec + autoencoder.b_pre)
    loss.backward()
    with torch.no_grad():
        w, g = autoencoder.W_dec, autoencoder.W_dec.grad
        if project and g is not None:
            g -= (g * w).sum(dim=1, keepdim=True) * w
    opt.step()
    with torch.no_grad():
        if renorm_dim is not None:
            autoencoder.W_dec /= autoencoder.W_dec.norm(dim=renorm_dim, keepdim=True)
    return loss.detach()


def sae_train_step(autoencoder: model.SparseAutoencoder, opt: torch.optim.Optimizer, xn: torch.Tensor,
                   k: int) -> torch.Tensor:
    """Reference: one TopK training step on normalised ``xn [B, d_in]``; returns the NMSE before the step (0-d).

    Zero the gradients; ``z = ReLU(TopK_k(W_enc (x_n - b_pre) + b_enc))``; loss = NMSE of ``z W_dec + b_pre``;
    backward; remove each decoder row's gradient component along the row, ``g_i <- g_i - (g_i . w_i) w_i``
    (the step stays tangent to the unit sphere); ``opt.step()``; renormalise each row ``w_i <- w_i / ||w_i||``.
    """
    return _train_step(autoencoder, opt, xn, k)


def _tiny_sae(seed: int) -> tuple[model.SparseAutoencoder, torch.optim.Optimizer]:
    cfg = model.SAEConfig(d_in=8, n_latents=16, k=3, tied_init=False, aux_coef=0.0)
    sae = model.SparseAutoencoder(cfg, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    return sae, torch.optim.Adam(sae.parameters(), lr=1e-2)


def check_sae_train_step(fn: Callable[..., torch.Tensor]) -> str:
    """``fn(autoencoder, opt, xn [B, d_in], k) -> loss``: two steps on a tiny SAE, compared with the reference and
    with the known mistakes (no projection, no renormalisation, columns instead of rows, gradients not zeroed)."""
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(32, 8, generator=g) * 2 + 1 for _ in range(2)]

    def after(step: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        sae, opt = _tiny_sae(0)
        losses = [step(sae, opt, xb, 3) for xb in batches]
        return sae.W_dec.detach().clone(), losses

    try:
        got, losses = after(fn)
    except NotImplementedError:
        return NOT_ATTEMPTED
    tensor_of("sae_train_step", losses[0], (), "the loss of the step, a 0-d tensor")
    ref, ref_losses = after(sae_train_step)
    start, _ = _tiny_sae(0)
    if torch.allclose(got, start.W_dec.detach()):
        raise ExerciseError("sae_train_step: W_dec did not change; call loss.backward() and opt.step()")
    norms = got.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        variant, _ = after(lambda a, o, x, k: _train_step(a, o, x, k, renorm_dim=None))
        if torch.allclose(got, variant, atol=1e-5):
            raise ExerciseError("sae_train_step: the decoder rows are not unit norm after the step (norms "
                                f"{float(norms.min()):.4f}-{float(norms.max()):.4f}): renormalise each row of W_dec "
                                "after opt.step()")
    diagnose("sae_train_step", got, ref, {
        "you normalised the columns of W_dec (dim=0); each latent's decoder direction is a row (dim=1)":
            after(lambda a, o, x, k: _train_step(a, o, x, k, renorm_dim=0))[0],
        "the rows are renormalised, but the gradient still has its component along each row: before opt.step(), "
        "subtract (g_i . w_i) w_i from each row g_i of W_dec.grad (doing it after the step has no effect)":
            after(lambda a, o, x, k: _train_step(a, o, x, k, project=False))[0],
        "the gradients of the previous step were not cleared: call opt.zero_grad() before loss.backward()":
            after(lambda a, o, x, k: _train_step(a, o, x, k, zero_grad=False))[0],
        "the decoder rows are not unit norm after the step: renormalise each row of W_dec after opt.step()":
            after(lambda a, o, x, k: _train_step(a, o, x, k, renorm_dim=None))[0],
    })
    if abs(float(losses[0]) - float(ref_losses[0])) > 1e-4:
        raise ExerciseError(f"sae_train_step: the weights are right but the returned loss is {float(losses[0]):.4f}, "
                            f"not the step's NMSE {float(ref_losses[0]):.4f}")
    return "sae_train_step: correct"
