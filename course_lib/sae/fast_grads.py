"""Sparse gradients of the TopK SAE loss: one dense GEMM per step instead of six.

Fast TopK step (:func:`topk_grads_fast`): only the ``k`` selected latents of a token get gradients, so
apart from the encoder's dense GEMM ``[B, d] x [d, n]`` every operation touches ``B*k`` (row, latent)
pairs: decoding is an ``embedding_bag``, ``dL/dz`` is a sampled GEMM (SDDMM) on the selected pairs, and
the weight gradients are sparse-dense products. Cost ~ one GEMM instead of the six of a dense
autograd step. :func:`topk_grads_autograd` computes the same gradients with autograd (tests check).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from course_lib.sae.model import SparseAutoencoder, fvu_denominator, topk_loss


def topk_grads_autograd(
    autoencoder: SparseAutoencoder, xn: torch.Tensor, dead: torch.Tensor | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Reference gradients (autograd) of :func:`topk_loss`: ``({param name: grad}, stats)``."""
    params = dict(autoencoder.named_parameters())
    loss, stats = topk_loss(autoencoder, xn, dead)
    grads = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, grads)), stats


def _csr(idx: torch.Tensor, vals: torch.Tensor, n_cols: int) -> torch.Tensor:
    """``[B, n_cols]`` CSR matrix with ``m`` entries per row at ``idx [B, m]`` with ``vals [B, m]``."""
    b, m = idx.shape
    crow = torch.arange(0, b * m + 1, m, device=idx.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, idx.reshape(-1), vals.reshape(-1), (b, n_cols), check_invariants=False)


def _sddmm(idx: torch.Tensor, left: torch.Tensor, right_t: torch.Tensor, csr: bool) -> torch.Tensor:
    """``out[b, j] = left[b] . right_t[:, idx[b, j]]`` (``left [B, d]``, ``right_t [d, n]``) -> ``[B, m]``."""
    if csr:
        pattern = _csr(idx, torch.zeros(idx.shape, dtype=left.dtype, device=left.device), right_t.shape[1])
        return torch.sparse.sampled_addmm(pattern, left, right_t, beta=0.0).values().view(idx.shape)
    return torch.einsum("bd,bmd->bm", left, right_t.t()[idx])  # GPU: a gather is cheap there


class _ByLatent:
    """The (row, latent) pairs ``idx [B, m]`` grouped by latent: a CSR pattern ``[n_latents, B]``.

    One int32 argsort, shared by every product with this pattern (int64 sorts are much slower on CPU).
    """

    def __init__(self, idx: torch.Tensor, n_rows: int, csr: bool):
        self.idx = idx
        self.n_rows = n_rows
        flat = idx.reshape(-1)
        self.cpu = csr
        if self.cpu:
            self.order = flat.to(torch.int32).argsort()
            self.crow = torch.zeros(n_rows + 1, dtype=torch.long)
            self.crow[1:] = torch.bincount(flat, minlength=n_rows).cumsum(0)
            self.col = self.order.div(idx.shape[1], rounding_mode="floor").long()

    def scatter(self, vals: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``G[i] = sum_{(b, j): idx[b, j] = i} vals[b, j] * dense[b]`` -> ``[n_rows, d]``."""
        if self.cpu:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mat = torch.sparse_csr_tensor(self.crow, self.col, vals.reshape(-1)[self.order],
                                              (self.n_rows, dense.shape[0]), check_invariants=False)
            return mat @ dense
        out = torch.zeros(self.n_rows, dense.shape[1], dtype=dense.dtype, device=dense.device)
        prod = (vals.unsqueeze(-1) * dense.unsqueeze(1)).reshape(-1, dense.shape[1])
        return out.index_add_(0, self.idx.reshape(-1), prod)


@torch.no_grad()
def topk_grads_fast(
    autoencoder: SparseAutoencoder, xn: torch.Tensor, dead: torch.Tensor | None = None, csr: bool | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Gradients of :func:`topk_loss` with one dense GEMM; same return as :func:`topk_grads_autograd`.

    With ``e = x_hat - x_n``, ``D`` the FVU denominator, ``g = 2 e / D``:
    ``dL/dz_bj = g_b . w_dec[idx_bj]`` (SDDMM), ``dpre = dL/dz * [z > 0]``,
    ``dW_dec[i] = sum z_bj g_b``, ``dW_enc[i] = sum dpre_bj (x_b - b_pre)``, ``db_enc[i] = sum dpre_bj``
    over pairs with ``idx_bj = i``, and ``db_pre = sum_b g_b - db_enc @ W_enc``. AuxK adds the same
    terms for its own (dead) pairs, with target ``x_n - x_hat`` held fixed.

    ``csr`` picks the kernels: sparse CSR products (default on CPU) or gather / ``index_add_``
    (default elsewhere, where gathers are cheap and sparse CSR support is patchier).
    """
    csr = xn.device.type == "cpu" if csr is None else csr
    cfg = autoencoder.cfg
    W_enc, b_enc, W_dec, b_pre = autoencoder.W_enc, autoencoder.b_enc, autoencoder.W_dec, autoencoder.b_pre
    n = cfg.n_latents
    xc = xn - b_pre
    pre = torch.addmm(b_enc, xc, W_enc.t())  # the one dense GEMM [B, d] x [d, n]
    vals, idx = pre.topk(cfg.k, dim=1, sorted=False)
    z = vals.clamp_min(0)
    x_hat = F.embedding_bag(idx, W_dec, per_sample_weights=z, mode="sum") + b_pre
    e = x_hat - xn
    denom = fvu_denominator(xn)
    nmse = e.pow(2).sum() / denom
    g = e * (2.0 / denom)
    W_dec_t = W_dec.t()
    dz = _sddmm(idx, g, W_dec_t, csr)
    dpre = dz * (vals > 0)
    pairs = _ByLatent(idx, n, csr)
    g_W_dec = pairs.scatter(z, g)
    g_W_enc = pairs.scatter(dpre, xc)
    g_b_enc = torch.zeros(n, dtype=xn.dtype, device=xn.device).index_add_(0, idx.reshape(-1), dpre.reshape(-1))
    aux = torch.zeros((), device=xn.device)
    if dead is not None and cfg.aux_coef > 0 and bool(dead.any()):
        dead_idx = dead.nonzero().squeeze(1)
        kk = min(cfg.k_aux, dead_idx.numel())
        av, ai_local = pre.index_select(1, dead_idx).topk(kk, dim=1, sorted=False)
        ai = dead_idx[ai_local]
        za = av.clamp_min(0)
        target = -e
        dena = fvu_denominator(target)
        ea = F.embedding_bag(ai, W_dec, per_sample_weights=za, mode="sum") - target
        aux = ea.pow(2).sum() / dena
        ga = ea * (2.0 * cfg.aux_coef / dena)
        dpa = _sddmm(ai, ga, W_dec_t, csr) * (av > 0)
        aux_pairs = _ByLatent(ai, n, csr)
        g_W_dec = g_W_dec + aux_pairs.scatter(za, ga)
        g_W_enc = g_W_enc + aux_pairs.scatter(dpa, xc)
        g_b_enc.index_add_(0, ai.reshape(-1), dpa.reshape(-1))
    g_b_pre = g.sum(0) - g_b_enc @ W_enc
    fired = torch.zeros(n, dtype=torch.bool, device=xn.device)
    fired[idx[z > 0]] = True
    grads = {"W_enc": g_W_enc, "b_enc": g_b_enc, "W_dec": g_W_dec, "b_pre": g_b_pre}
    stats = {"nmse": nmse, "auxk": aux, "l0": (z > 0).sum(1).float().mean(), "fired": fired}
    return grads, stats
