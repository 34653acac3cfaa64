"""Sparse autoencoders on residual-stream activations: TopK (Gao et al. 2024) and a ReLU + L1 baseline.

Model (all in *normalised* units, ``x_n = s * x`` with one constant ``s`` per SAE):

    pre   = W_enc (x_n - b_pre) + b_enc                      [batch, n_latents]
    z     = ReLU(TopK_k(pre))        (TopK kind)             [batch, n_latents], k non-zeros per row
    z     = ReLU(pre)                (ReLU kind, L1 penalty)
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

Fast TopK step (:func:`topk_grads_fast`): only the ``k`` selected latents of a token get gradients, so
apart from the encoder's dense GEMM ``[B, d] x [d, n]`` every operation touches ``B*k`` (row, latent)
pairs: decoding is an ``embedding_bag``, ``dL/dz`` is a sampled GEMM (SDDMM) on the selected pairs, and
the weight gradients are sparse-dense products. Cost ~ one GEMM instead of the six of a dense
autograd step. :func:`topk_grads_autograd` computes the same gradients with autograd (tests check).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib import runtime

_SAE_VERSION = "sae-v1"
KINDS = ("topk", "relu")



@dataclasses.dataclass(frozen=True)
class SAEConfig:
    d_in: int  # width of the activations (576 for SmolLM2's residual stream)
    n_latents: int  # dictionary size (number of latents / features)
    kind: str = "topk"  # "topk" (Gao et al.) or "relu" (ReLU + L1 baseline)
    k: int = 32  # active latents per token (topk)
    l1_coef: float = 1e-3  # L1 penalty weight on sum_i z_i (relu; decoder rows are unit norm)
    aux_k: int | None = None  # dead latents used by AuxK; None = d_in // 2 (as the paper)
    aux_coef: float = 1.0 / 32.0  # AuxK weight; 0 turns AuxK off
    dead_tokens: int = 50_000  # a latent not fired for this many training tokens counts as dead
    tied_init: bool = True  # encoder initialised as the decoder's transpose
    median_init: bool = True  # b_pre = geometric median of a sample (else b_pre starts at 0)

    def __post_init__(self) -> None:
        runtime.check_choice("kind", self.kind, KINDS)
        if self.kind == "topk" and not 0 < self.k <= self.n_latents:
            raise runtime.ParameterError(f"k={self.k} must be in [1, n_latents={self.n_latents}]")

    @property
    def k_aux(self) -> int:
        return self.aux_k if self.aux_k is not None else self.d_in // 2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    n_tokens: int = 500_000  # training tokens (steps = n_tokens // batch_size); may exceed the store (epochs)
    batch_size: int = 1024  # tokens per step
    lr: float = 4e-4  # Adam learning rate (the paper's ~1e-4 is for much wider SAEs)
    warmup_frac: float = 0.02  # linear warm-up over this share of steps
    decay_frac: float = 0.2  # linear decay to 0 over the last share of steps
    fast: bool = True  # TopK: the sparse one-GEMM step (False: dense autograd step)
    buffer_tokens: int = 65_536  # shuffling-buffer rows (bounds RAM)
    log_every: int = 10  # history every this many steps
    seed: int = 0  # init and data order


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
    """TopK or ReLU SAE (see the module docstring). ``encode``/``decode`` work on RAW activations."""

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
        vals, idx = self.pre_acts(x.to(self.W_enc.dtype) * self.scale).topk(self.cfg.k, dim=-1, sorted=False)
        return vals.clamp_min(0), idx

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``z [..., n_latents]`` of raw activations ``x [..., d_in]``."""
        if self.cfg.kind == "relu":
            return F.relu(self.pre_acts(x.to(self.W_enc.dtype) * self.scale))
        vals, idx = self.encode_sparse(x)
        return torch.zeros(*vals.shape[:-1], self.cfg.n_latents, dtype=vals.dtype,
                           device=vals.device).scatter_(-1, idx, vals)

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


def _fvu_denominator(xn: torch.Tensor) -> torch.Tensor:
    return (xn - xn.mean(0)).pow(2).sum().clamp_min(1e-12)


def topk_loss(
    sae: SparseAutoencoder, xn: torch.Tensor, dead: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dense autograd TopK loss on normalised ``xn [B, d]``: ``NMSE + aux_coef * AuxK``.

    ``dead [n_latents]`` bool marks latents for AuxK (None or none dead: AuxK = 0).
    """
    cfg = sae.cfg
    pre = sae.pre_acts(xn)
    vals, idx = pre.topk(cfg.k, dim=1)
    z = torch.zeros_like(pre).scatter(1, idx, F.relu(vals))
    x_hat = z @ sae.W_dec + sae.b_pre
    nmse = (x_hat - xn).pow(2).sum() / _fvu_denominator(xn)
    aux = torch.zeros((), device=xn.device)
    if dead is not None and cfg.aux_coef > 0 and bool(dead.any()):
        kk = min(cfg.k_aux, int(dead.sum()))
        masked = pre.masked_fill(~dead, float("-inf"))
        av, ai = masked.topk(kk, dim=1)
        z_aux = torch.zeros_like(pre).scatter(1, ai, F.relu(av))
        target = (xn - x_hat).detach()
        aux = (z_aux @ sae.W_dec - target).pow(2).sum() / _fvu_denominator(target)
    loss = nmse + cfg.aux_coef * aux
    return loss, {"nmse": nmse.detach(), "aux": aux.detach(), "l0": (z > 0).sum(1).float().mean(),
                  "fired": (z > 0).any(0)}


def relu_loss(sae: SparseAutoencoder, xn: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ReLU baseline: ``NMSE + l1_coef * mean_b sum_i z_bi`` (decoder rows unit norm)."""
    z = F.relu(sae.pre_acts(xn))
    x_hat = z @ sae.W_dec + sae.b_pre
    nmse = (x_hat - xn).pow(2).sum() / _fvu_denominator(xn)
    l1 = z.sum(1).mean()
    loss = nmse + sae.cfg.l1_coef * l1
    return loss, {"nmse": nmse.detach(), "aux": l1.detach(), "l0": (z > 0).sum(1).float().mean(),
                  "fired": (z > 0).any(0)}


def topk_grads_autograd(
    sae: SparseAutoencoder, xn: torch.Tensor, dead: torch.Tensor | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Reference gradients (autograd) of :func:`topk_loss`: ``({param name: grad}, stats)``."""
    params = dict(sae.named_parameters())
    loss, stats = topk_loss(sae, xn, dead)
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
    sae: SparseAutoencoder, xn: torch.Tensor, dead: torch.Tensor | None = None, csr: bool | None = None
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
    cfg = sae.cfg
    W_enc, b_enc, W_dec, b_pre = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_pre
    n = cfg.n_latents
    xc = xn - b_pre
    pre = torch.addmm(b_enc, xc, W_enc.t())  # the one dense GEMM [B, d] x [d, n]
    vals, idx = pre.topk(cfg.k, dim=1, sorted=False)
    z = vals.clamp_min(0)
    x_hat = F.embedding_bag(idx, W_dec, per_sample_weights=z, mode="sum") + b_pre
    e = x_hat - xn
    denom = _fvu_denominator(xn)
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
        dena = _fvu_denominator(target)
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
    stats = {"nmse": nmse, "aux": aux, "l0": (z > 0).sum(1).float().mean(), "fired": fired}
    return grads, stats


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class TrainHistory:
    """Logged every ``log_every`` steps: ``step``, ``tokens``, ``nmse``, ``aux``, ``l0``, ``dead_fraction``."""

    step: list[int] = dataclasses.field(default_factory=list)
    tokens: list[int] = dataclasses.field(default_factory=list)
    nmse: list[float] = dataclasses.field(default_factory=list)
    aux: list[float] = dataclasses.field(default_factory=list)
    l0: list[float] = dataclasses.field(default_factory=list)
    dead_fraction: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _lr_factor(step: int, total: int, warmup: float, decay: float) -> float:
    w, d = max(1, int(warmup * total)), max(1, int(decay * total))
    if step < w:
        return (step + 1) / w
    if step >= total - d:
        return max(0.0, (total - step) / d)
    return 1.0


def train_sae(
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    batches: Iterator[torch.Tensor],
    init_sample: torch.Tensor,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str | None = None,
) -> tuple[SparseAutoencoder, TrainHistory]:
    """Train an SAE on RAW activation batches ``[batch_size, d_in]`` (e.g. ``store.iter_batches``).

    ``init_sample [n, d_in]`` (raw) sets the normalisation and ``b_pre``. Returns the SAE in eval
    mode and its history. Steps: ``train_cfg.n_tokens // train_cfg.batch_size``.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    sae = SparseAutoencoder(sae_cfg, gen)
    sae.init_from_sample(init_sample)
    sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=train_cfg.lr, betas=(0.9, 0.999), eps=6.25e-10)
    total = max(1, train_cfg.n_tokens // train_cfg.batch_size)
    since_fired = torch.zeros(sae_cfg.n_latents, dtype=torch.long, device=device)
    hist = TrainHistory()
    bar = tqdm(total=total, desc=desc or f"{sae_cfg.kind} SAE n={sae_cfg.n_latents}", disable=not progress)
    t0 = time.perf_counter()
    for step in range(total):
        try:
            x = next(batches)
        except StopIteration:
            break
        xn = x.to(device, torch.float32) * sae.scale
        dead = since_fired > sae_cfg.dead_tokens
        for group in opt.param_groups:
            group["lr"] = train_cfg.lr * _lr_factor(step, total, train_cfg.warmup_frac, train_cfg.decay_frac)
        if sae_cfg.kind == "topk" and train_cfg.fast:
            grads, stats = topk_grads_fast(sae, xn, dead)
            for name, p in sae.named_parameters():
                p.grad = grads[name]
        else:
            opt.zero_grad(set_to_none=True)
            loss, stats = topk_loss(sae, xn, dead) if sae_cfg.kind == "topk" else relu_loss(sae, xn)
            loss.backward()
        sae.remove_parallel_grad_()
        opt.step()
        sae.normalise_decoder_()
        since_fired += x.shape[0]
        since_fired[stats["fired"]] = 0
        if step % train_cfg.log_every == 0 or step == total - 1:
            hist.step.append(step)
            hist.tokens.append((step + 1) * x.shape[0])
            hist.nmse.append(float(stats["nmse"]))
            hist.aux.append(float(stats["aux"]))
            hist.l0.append(float(stats["l0"]))
            hist.dead_fraction.append(float(dead.float().mean()))
            bar.set_postfix(nmse=f"{hist.nmse[-1]:.3f}", l0=f"{hist.l0[-1]:.0f}",
                            dead=f"{hist.dead_fraction[-1]:.2f}")
        bar.update(1)
    bar.close()
    hist.seconds = time.perf_counter() - t0
    for p in sae.parameters():
        p.grad = None
    return sae.eval(), hist


# --------------------------------------------------------------------------- the default SAE (notebooks 03, 04)


@dataclasses.dataclass(frozen=True)
class DefaultSAE:
    """The course's main SAE on SmolLM2's middle residual stream, as notebook 04 uses it."""

    sae: SparseAutoencoder  # encode(raw x [..., d_in]) -> z [..., n_latents]; decode(z) -> raw x_hat
    layer: int  # residual stream after this block
    hook_name: str  # e.g. "blocks.15.hook_resid_post"
    model_name: str  # "smollm2"
    n_latents: int  # dictionary size
    store_dir: Path | None = None  # the cached activation store it was trained on (tokens + activations)
    history: dict[str, Any] | None = None  # training history (TrainHistory.to_dict())


def default_configs(profile: str, seed: int = 0):  # -> tuple[HarvestConfig, SAEConfig, TrainConfig]
    """``(HarvestConfig, SAEConfig, TrainConfig)`` of the default SAE for a profile."""
    from course_lib.activations import HarvestConfig

    hc = runtime.by_profile(
        profile,
        smoke=HarvestConfig(n_tokens=2_048, seq_len=64, batch_size=16, shard_tokens=1_024),
        workshop=HarvestConfig(n_tokens=64_000, seq_len=128, batch_size=16),
        full=HarvestConfig(n_tokens=2_000_000, seq_len=128, batch_size=16),
    )
    sc = runtime.by_profile(
        profile,
        smoke=SAEConfig(d_in=576, n_latents=1_152, k=32, dead_tokens=4_096),
        workshop=SAEConfig(d_in=576, n_latents=4_608, k=32, dead_tokens=50_000),
        full=SAEConfig(d_in=576, n_latents=16_384, k=32, dead_tokens=1_000_000),
    )
    tc = runtime.by_profile(
        profile,
        smoke=TrainConfig(n_tokens=16_384, batch_size=512, lr=2e-3, buffer_tokens=2_048, log_every=2, seed=seed),
        workshop=TrainConfig(n_tokens=400_000, batch_size=1024, lr=5e-4, buffer_tokens=65_536, seed=seed),
        full=TrainConfig(n_tokens=20_000_000, batch_size=4096, lr=2e-4, buffer_tokens=262_144, seed=seed),
    )
    return hc, sc, tc


def train_on_store(store: Any, sae_cfg: SAEConfig, train_cfg: TrainConfig, device: str | torch.device = "cpu",
                   progress: bool = True, desc: str | None = None) -> tuple[SparseAutoencoder, TrainHistory]:
    """Train on an :class:`~course_lib.activations.ActivationStore` (epochs as needed)."""
    gen = torch.Generator().manual_seed(train_cfg.seed)
    init = next(store.iter_batches(min(len(store), 8_192), generator=torch.Generator().manual_seed(train_cfg.seed + 1),
                                   buffer_tokens=min(len(store), 8_192)))
    batches = store.iter_batches(train_cfg.batch_size, generator=gen, buffer_tokens=train_cfg.buffer_tokens,
                                 epochs=None)
    return train_sae(sae_cfg, train_cfg, batches, init, device=device, progress=progress, desc=desc)


def load_or_train(store: Any, sae_cfg: SAEConfig, train_cfg: TrainConfig, device: str | torch.device = "cpu",
                  progress: bool = True, desc: str | None = None) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Cached :func:`train_on_store`: ``(sae, history dict)``; the cache folder is in SAELens layout."""
    from course_lib.saelens_io import load_saelens, save_saelens  # saelens_io imports this module

    key = {"store": store.meta["config"], "sae": sae_cfg, "train": train_cfg}

    def build(folder: Path) -> None:
        sae, hist = train_on_store(store, sae_cfg, train_cfg, device, progress, desc)
        save_saelens(sae, folder, hook_name=store.hook_name, model_name=store.meta["model_name"])
        (folder / "history.json").write_text(json.dumps(hist.to_dict()))

    folder = runtime.load_or_build("sae", key, _SAE_VERSION, build)
    hist = json.loads((folder / "history.json").read_text())
    return load_saelens(folder, device), hist


def load_or_train_default_sae(
    profile: str, seed: int = 0, device: str | torch.device = "cpu", model: Any = None
) -> DefaultSAE:
    """The profile's default SAE (cached): harvest SmolLM2's middle residual stream and train, or load.

    Notebook 03 trains exactly this SAE, so notebook 04 reuses it when 03 ran first. ``model`` (a
    loaded SmolLM2 bridge) saves a reload when harvesting is needed.
    """
    from course_lib import activations

    hc, sc, tc = default_configs(profile, seed)
    store = activations.load_or_harvest(hc, model=model, device=device)
    sae, hist = load_or_train(store, sc, tc, device=device)
    return DefaultSAE(sae=sae, layer=hc.layer, hook_name=hc.hook_name, model_name=hc.model_name,
                      n_latents=sc.n_latents, store_dir=store.folder, history=hist)
