"""Sparse autoencoders on residual-stream activations: TopK (Gao et al. 2024), a ReLU + L1 baseline,
JumpReLU (Rajamanoharan et al. 2024, Gemma Scope) and BatchTopK (Bussmann et al. 2024).

Model (all in *normalised* units, ``x_n = s * x`` with one constant ``s`` per SAE):

    pre   = W_enc (x_n - b_pre) + b_enc                      [batch, n_latents]
    z     = ReLU(TopK_k(pre))        (topk)                  [batch, n_latents], k non-zeros per row
    z     = ReLU(pre)                (relu, L1 penalty)
    z     = pre * H(pre - theta)     (jumprelu: a learned threshold theta [n_latents] >= 0, L0 penalty)
    z     = ReLU(pre) * H(pre - t)   (batchtopk at inference: one threshold t; training keeps the
                                      k * batch largest ReLU(pre) of the whole batch instead)
    x_hat = W_dec^T z + b_pre                                [batch, d_in]

Shapes: ``W_enc [n_latents, d_in]`` (rows = encoder directions), ``W_dec [n_latents, d_in]`` (rows =
decoder directions, kept unit norm), ``b_enc [n_latents]``, ``b_pre [d_in]``.

Input normalisation: a constant rescaling ``s = sqrt(d_in) / E||x||`` measured on the training sample
(as SAELens's ``expected_average_only_in``), so that ``E||x_n|| = sqrt(d_in)`` whatever the layer's
scale. ``encode``/``decode``/``forward`` take and return RAW activations; ``s`` is applied inside.

Loss (TopK): ``NMSE = sum (x_hat - x_n)^2 / sum (x_n - mean x_n)^2`` (per batch; the FVU) plus
``aux_coef * AuxK``: the top ``aux_k`` *dead* latents (not fired for ``dead_tokens`` tokens) reconstruct
the residual ``x_n - x_hat`` (normalised the same way). Init: decoder rows random unit vectors, encoder
= decoder (tied), ``b_pre`` = geometric median of a sample. After each Adam step decoder rows are
renormalised; before it, each row's gradient loses its component parallel to the row.

JumpReLU's loss is ``NMSE + l0_coef * mean_b ||z_b||_0``; the step ``H`` has no gradient, so
``theta`` learns through a straight-through estimator: ``dH(p - theta)/dtheta ~ -K((p - theta)/eps)/eps``
and ``d(p H(p - theta))/dtheta ~ -(theta/eps) K((p - theta)/eps)`` with the rectangle kernel
``K(u) = 1[|u| < 1/2]`` and bandwidth ``eps`` (``jump_bandwidth``); as in DeepMind's JumpReLU and
SAELens's default, the estimator reaches ``theta`` only, not ``pre``. BatchTopK's loss is TopK's (NMSE +
AuxK), and its inference threshold ``t`` follows ``t <- (1 - r) t + r * min(selected values)`` after each
step (``r = threshold_rate``; the first step sets ``t`` to its value), so that at inference
``E ||z||_0 ~ k`` without a batch.

Losses: :func:`topk_loss`, :func:`relu_loss`, :func:`jumprelu_loss`, :func:`batchtopk_loss` (dense
autograd); the fast sparse gradients of the TopK loss are in :mod:`course_lib.sae.fast_grads`. What
differs between the architectures (activation, loss and the name of its second term, the step after the
optimizer's, the threshold carried, SAELens's name) is one row of :data:`ARCHITECTURES`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from course_lib import runtime

SAEKind = Literal["topk", "relu", "jumprelu", "batchtopk"]
KINDS: tuple[str, ...] = get_args(SAEKind)


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    d_in: int  # width of the activations (576 for SmolLM2's residual stream)
    n_latents: int  # dictionary size (number of latents / features)
    kind: SAEKind = "topk"  # "topk" (Gao et al.), "relu" (ReLU + L1 baseline), "jumprelu", "batchtopk"
    k: int = 32  # active latents per token (topk; batchtopk: on average over the batch)
    l1_coef: float = 1e-3  # L1 penalty weight on sum_i z_i (relu; decoder rows are unit norm)
    aux_k: int | None = None  # dead latents used by AuxK; None = d_in // 2 (as the paper)
    aux_coef: float = 1.0 / 32.0  # AuxK weight; 0 turns AuxK off
    dead_tokens: int = 50_000  # a latent not fired for this many training tokens counts as dead
    tied_init: bool = True  # encoder initialised as the decoder's transpose
    median_init: bool = True  # b_pre = geometric median of a sample (else b_pre starts at 0)
    l0_coef: float = 1e-3  # jumprelu: weight of the L0 penalty (per token, against the NMSE)
    jump_bandwidth: float = 0.05  # jumprelu: width eps of the straight-through estimator's kernel
    # jumprelu: theta at initialisation (normalised units, where pre-activations are O(1)). Adam moves theta
    # by about lr per step, so it travels only ~lr * steps (0.04 in a 100-step workshop run): SAELens's 0.01
    # suits long runs; 1.0 starts latents sparse (L0 ~ 50 of 1152 after 97 steps in notebook 03's sweep)
    jump_init_threshold: float = 1.0
    threshold_rate: float = 0.01  # batchtopk: moving-average rate r of the inference threshold

    def __post_init__(self) -> None:
        runtime.check_choice("kind", self.kind, KINDS)
        if self.kind in ("topk", "batchtopk") and not 0 < self.k <= self.n_latents:
            raise runtime.ParameterError(f"k={self.k} must be in [1, n_latents={self.n_latents}]")

    @property
    def k_aux(self) -> int:
        return self.aux_k if self.aux_k is not None else self.d_in // 2


# --------------------------------------------------------------------------- the module


def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: ``argmin_y sum_i ||x_i - y||`` for ``x [n, d]`` -> ``[d]``."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-8)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * y.norm().clamp_min(1e-8):
            return y_new
        y = y_new
    return y


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder of any architecture in :data:`ARCHITECTURES` (see the module docstring).
    ``encode``/``decode`` work on RAW activations."""

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        w_dec = torch.randn(cfg.n_latents, cfg.d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        w_enc = w_dec.clone() if cfg.tied_init else torch.randn(cfg.n_latents, cfg.d_in, generator=gen)
        if not cfg.tied_init:
            w_enc *= 1.0 / math.sqrt(cfg.d_in)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents))
        self.W_dec = nn.Parameter(w_dec)
        self.b_pre = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("scale", torch.ones(()))  # s: x_n = s * x
        threshold = ARCHITECTURES[cfg.kind].threshold
        if threshold == "learned":  # theta [n_latents], learned (kept >= 0 after each step)
            self.threshold = nn.Parameter(torch.full((cfg.n_latents,), float(cfg.jump_init_threshold)))
        elif threshold == "running":  # t, one number: a running average, not a parameter
            self.register_buffer("threshold", torch.zeros(()))

    # ----- initialisation from data
    @torch.no_grad()
    def init_from_sample(self, sample: torch.Tensor) -> None:
        """Set the normalisation ``s`` (E||s x|| = sqrt(d_in)) and ``b_pre`` from ``sample [n, d_in]``."""
        sample = sample.to(self.W_dec.device, torch.float32)
        self.scale.fill_(math.sqrt(self.cfg.d_in) / float(sample.norm(dim=1).mean()))
        if self.cfg.median_init:
            self.b_pre.copy_(geometric_median(sample * self.scale))

    # ----- normalised-space maths
    def pre_acts(self, xn: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., n_latents]``: ``W_enc (x_n - b_pre) + b_enc``."""
        return F.linear(xn - self.b_pre, self.W_enc, self.b_enc)

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK only: ``(values [..., k] >= 0, indices [..., k])`` from raw ``x [..., d_in]``."""
        return _topk_sparse(self.pre_acts(x.to(self.W_enc.dtype) * self.scale), self.cfg.k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``z [..., n_latents]`` of raw activations ``x [..., d_in]`` (the activation of
        the SAE's architecture, :data:`ARCHITECTURES`)."""
        return ARCHITECTURES[self.cfg.kind].activation(self, self.pre_acts(x.to(self.W_enc.dtype) * self.scale))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw-scale reconstruction ``[..., d_in]`` of latents ``z [..., n_latents]``."""
        return (z @ self.W_dec + self.b_pre) / self.scale

    def decode_sparse(self, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Raw-scale reconstruction from TopK ``(vals, idx)`` (``[..., k]`` each) via ``embedding_bag``."""
        shape = vals.shape[:-1]
        out = F.embedding_bag(idx.reshape(-1, idx.shape[-1]), self.W_dec,
                              per_sample_weights=vals.reshape(-1, vals.shape[-1]), mode="sum")
        return ((out + self.b_pre) / self.scale).reshape(*shape, self.cfg.d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw-scale reconstruction ``x_hat [..., d_in]`` of raw ``x [..., d_in]``."""
        if self.cfg.kind == "topk":
            return self.decode_sparse(*self.encode_sparse(x))
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalise_decoder_(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """``g_i <- g_i - (g_i . w_i) w_i`` for each decoder row (keeps steps tangent to the sphere)."""
        g = self.W_dec.grad
        if g is not None:
            g.sub_((g * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec)


# --------------------------------------------------------------------------- losses and gradients


def fvu_denominator(x: torch.Tensor) -> torch.Tensor:
    """``sum ||x - mean x||^2`` over a batch ``x [N, d]`` (clamped away from 0)."""
    return (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)


def nmse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """NMSE (= FVU, fraction of variance unexplained) of ``x_hat`` for ``x [N, d]``, a 0-d tensor.

    ``sum ||x_hat - x||^2 / sum ||x - mean x||^2``: 0 is perfect, 1 is no better than the mean. The
    one definition: the training losses, :func:`course_lib.sae.evaluation.fvu` and the benchmark use it.
    """
    return (x_hat - x).pow(2).sum() / fvu_denominator(x)


def _auxk(autoencoder: SparseAutoencoder, pre: torch.Tensor, xn: torch.Tensor, x_hat: torch.Tensor,
          dead: torch.Tensor | None) -> torch.Tensor:
    """AuxK: ``NMSE(x_n - x_hat, TopK_kaux(pre over dead latents) @ W_dec)``; 0 when none is dead."""
    cfg = autoencoder.cfg
    if dead is None or cfg.aux_coef <= 0 or not bool(dead.any()):
        return torch.zeros((), device=xn.device)
    kk = min(cfg.k_aux, int(dead.sum()))
    masked = pre.masked_fill(~dead, float("-inf"))
    av, ai = masked.topk(kk, dim=1)
    z_aux = torch.zeros_like(pre).scatter(1, ai, F.relu(av))
    target = (xn - x_hat).detach()
    return nmse(target, z_aux @ autoencoder.W_dec)


def topk_loss(
    autoencoder: SparseAutoencoder, xn: torch.Tensor, dead: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dense autograd TopK loss on normalised ``xn [B, d]``: ``NMSE + aux_coef * AuxK``.

    ``dead [n_latents]`` bool marks latents for AuxK (None or none dead: AuxK = 0).
    """
    cfg = autoencoder.cfg
    pre = autoencoder.pre_acts(xn)
    vals, idx = pre.topk(cfg.k, dim=1)
    z = torch.zeros_like(pre).scatter(1, idx, F.relu(vals))
    x_hat = z @ autoencoder.W_dec + autoencoder.b_pre
    recon = nmse(xn, x_hat)
    aux = _auxk(autoencoder, pre, xn, x_hat, dead)
    loss = recon + cfg.aux_coef * aux
    return loss, {"nmse": recon.detach(), "auxk": aux.detach(), "l0": (z > 0).sum(1).float().mean(),
                  "fired": (z > 0).any(0)}


def relu_loss(autoencoder: SparseAutoencoder, xn: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ReLU baseline: ``NMSE + l1_coef * mean_b sum_i z_bi`` (decoder rows unit norm).

    ``z = relu(W_enc (x_n - b_pre) + b_enc)`` is computed as ``relu(W_enc x_n + (b_enc - W_enc b_pre))``:
    the same value, but autograd then reaches ``b_pre`` through a ``[n_latents]`` bias (a matrix-vector
    product) instead of through the ``[B, d_in]`` input, which would cost a sixth ``[B, n_latents] x
    [n_latents, d_in]`` GEMM per step for a gradient nobody needs.
    """
    w = autoencoder.W_enc
    z = F.relu(F.linear(xn, w, autoencoder.b_enc - w @ autoencoder.b_pre))
    x_hat = z @ autoencoder.W_dec + autoencoder.b_pre
    recon = nmse(xn, x_hat)
    l1 = z.sum(1).mean()
    loss = recon + autoencoder.cfg.l1_coef * l1
    return loss, {"nmse": recon.detach(), "l1": l1.detach(), "l0": (z > 0).sum(1).float().mean(),
                  "fired": (z > 0).any(0)}


class _JumpReLU(torch.autograd.Function):
    """``z = p * H(p - theta)`` for ``p [B, n]``, ``theta [n]``; straight-through gradient for ``theta``."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.eps / 2).to(g.dtype)  # K((p - theta) / eps)
        return g * (pre > theta), -(theta / ctx.eps * near * g).sum(0), None


class _Step(torch.autograd.Function):
    """``H(p - theta)`` (0/1) for ``p [B, n]``; gradient only for ``theta``: ``-K((p - theta)/eps)/eps``."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.eps / 2).to(g.dtype)
        return None, -(near * g).sum(0) / ctx.eps, None


def jumprelu_loss(autoencoder: SparseAutoencoder, xn: torch.Tensor,
                  dead: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """JumpReLU: ``NMSE + l0_coef * mean_b ||z_b||_0`` on normalised ``xn [B, d]`` (``dead`` unused).

    ``pre`` as in :func:`relu_loss` (``b_pre`` folded into the bias); ``theta`` learns only through the
    straight-through estimators of :class:`_JumpReLU` and :class:`_Step` (module docstring).
    """
    cfg = autoencoder.cfg
    w = autoencoder.W_enc
    pre = F.linear(xn, w, autoencoder.b_enc - w @ autoencoder.b_pre)
    z = _JumpReLU.apply(pre, autoencoder.threshold, cfg.jump_bandwidth)
    x_hat = z @ autoencoder.W_dec + autoencoder.b_pre
    recon = nmse(xn, x_hat)
    l0 = _Step.apply(pre, autoencoder.threshold, cfg.jump_bandwidth).sum(1).mean()
    loss = recon + cfg.l0_coef * l0
    return loss, {"nmse": recon.detach(), "l0_penalty": l0.detach(), "l0": (z != 0).sum(1).float().mean(),
                  "fired": (z != 0).any(0)}


def batchtopk_loss(autoencoder: SparseAutoencoder, xn: torch.Tensor,
                   dead: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BatchTopK: keep the ``k * B`` largest ``ReLU(pre)`` of the whole batch ``xn [B, d]`` (so a token
    may use more or fewer than ``k`` latents), then ``NMSE + aux_coef * AuxK`` as :func:`topk_loss`.

    Stats add ``min_selected``: the smallest kept value (> 0), which moves the inference threshold.
    """
    cfg = autoencoder.cfg
    w = autoencoder.W_enc  # b_pre folded into the bias, as in relu_loss (one GEMM fewer in the backward)
    pre = F.linear(xn, w, autoencoder.b_enc - w @ autoencoder.b_pre)
    flat = F.relu(pre).flatten()
    vals, idx = flat.topk(min(cfg.k * xn.shape[0], flat.numel()))
    z = torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
    x_hat = z @ autoencoder.W_dec + autoencoder.b_pre
    recon = nmse(xn, x_hat)
    aux = _auxk(autoencoder, pre, xn, x_hat, dead)
    loss = recon + cfg.aux_coef * aux
    pos = vals.detach()[vals.detach() > 0]
    return loss, {"nmse": recon.detach(), "auxk": aux.detach(), "l0": (z > 0).sum(1).float().mean(),
                  "fired": (z > 0).any(0), "min_selected": pos.min() if pos.numel() else None}


def sae_loss(autoencoder: SparseAutoencoder, xn: torch.Tensor,
             dead: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of ``autoencoder``'s architecture (dense autograd) on normalised ``xn [B, d]``."""
    return ARCHITECTURES[autoencoder.cfg.kind].loss(autoencoder, xn, dead)


# --------------------------------------------------------------------------- the architectures, one row each


def _no_post_step(autoencoder: SparseAutoencoder, stats: dict[str, torch.Tensor]) -> None:
    pass


@torch.no_grad()
def _clamp_threshold(autoencoder: SparseAutoencoder, stats: dict[str, torch.Tensor]) -> None:
    """JumpReLU: ``theta >= 0`` (projected, so a latent at 0 still gets gradients)."""
    autoencoder.threshold.clamp_(min=0.0)


@torch.no_grad()
def _follow_min_selected(autoencoder: SparseAutoencoder, stats: dict[str, torch.Tensor]) -> None:
    """BatchTopK: ``t <- (1 - r) t + r * min(selected)``; the first step sets ``t``."""
    m = stats.get("min_selected")
    if m is None:
        return
    if float(autoencoder.threshold) == 0.0:
        autoencoder.threshold.copy_(m)
    else:
        autoencoder.threshold.lerp_(m, autoencoder.cfg.threshold_rate)


def _topk_sparse(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ReLU(TopK_k(pre))`` as ``(values [..., k] >= 0, indices [..., k])``."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return vals.clamp_min(0), idx


def _topk_activation(autoencoder: SparseAutoencoder, pre: torch.Tensor) -> torch.Tensor:
    vals, idx = _topk_sparse(pre, autoencoder.cfg.k)
    return torch.zeros_like(pre).scatter_(-1, idx, vals)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything that differs between SAE architectures, as one row of :data:`ARCHITECTURES`."""

    kind: str  # the SAEConfig.kind that selects this row
    activation: Callable[[SparseAutoencoder, torch.Tensor], torch.Tensor]  # pre-activations -> z, at inference
    loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]  # (sae, xn, dead) -> (loss, stats)
    penalty: str  # the name, in the loss's stats, of its second term: "auxk", "l1" or "l0_penalty"
    penalty_coef: Callable[[SAEConfig], float]  # that term's weight in the objective compared across a sweep
    post_step: Callable[[SparseAutoencoder, dict[str, torch.Tensor]], None]  # after each optimizer step
    threshold: Literal["none", "learned", "running"]  # the threshold the SAE carries
    saelens: str  # SAELens's cfg.json "architecture"


ARCHITECTURES: dict[str, Architecture] = {
    # AuxK only revives dead latents: the objective compared across a sweep is the NMSE alone (coefficient 0)
    "topk": Architecture("topk", _topk_activation, lambda a, xn, dead=None: topk_loss(a, xn, dead), "auxk",
                         lambda cfg: 0.0, _no_post_step, "none", "topk"),
    "relu": Architecture("relu", lambda a, pre: F.relu(pre), lambda a, xn, dead=None: relu_loss(a, xn), "l1",
                         lambda cfg: cfg.l1_coef, _no_post_step, "none", "standard"),
    "jumprelu": Architecture("jumprelu", lambda a, pre: pre * (pre > a.threshold), jumprelu_loss, "l0_penalty",
                             lambda cfg: cfg.l0_coef, _clamp_threshold, "learned", "jumprelu"),
    # at inference one threshold t replaces the batch-wide top-k (SAELens loads it as a JumpReLU)
    "batchtopk": Architecture("batchtopk", lambda a, pre: F.relu(pre) * (pre > a.threshold), batchtopk_loss, "auxk",
                              lambda cfg: 0.0, _follow_min_selected, "running", "jumprelu"),
}
assert set(ARCHITECTURES) == set(KINDS)
