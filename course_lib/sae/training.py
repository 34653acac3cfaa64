"""Training SAEs: Adam with warm-up and decay, AuxK dead-latent bookkeeping, cached on disk.

Each step (:func:`train_step`) normalises the raw batch, computes the gradients (fast sparse TopK
gradients or autograd), removes each decoder row's parallel gradient, takes an Adam step and
renormalises the decoder rows. :func:`train_sae` loops over batches; :func:`load_or_train` caches
the result in SAELens's folder layout (:mod:`course_lib.sae.saelens_io`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from course_lib import cache
from course_lib.sae.fast_grads import topk_grads_fast
from course_lib.sae.model import ARCHITECTURES, SAEConfig, SparseAutoencoder, sae_loss
from course_lib.sae.saelens_io import load_saelens, save_saelens
from course_lib.sae.store import ActivationStore

SAE_VERSION = "sae-v2"  # v2: the history names the loss's second term


@dataclasses.dataclass(frozen=True)
class SAETrainConfig:
    n_tokens: int = 500_000  # training tokens (steps = n_tokens // batch_size); may exceed the store (epochs)
    batch_size: int = 1024  # tokens per step
    lr: float = 4e-4  # Adam learning rate (the paper's ~1e-4 is for much wider SAEs)
    warmup_frac: float = 0.02  # linear warm-up over this share of steps
    decay_frac: float = 0.2  # linear decay to 0 over the last share of steps
    fast: bool = True  # TopK: the sparse one-GEMM step (False: dense autograd step)
    buffer_tokens: int = 65_536  # shuffling-buffer rows (bounds RAM)
    log_every: int = 10  # history every this many steps
    seed: int = 0  # init and data order


    def cache_key(self) -> dict[str, Any]:
        """The fields that determine the trained SAE (``IMPLEMENTATION_FIELDS`` left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in IMPLEMENTATION_FIELDS}


# how the SAE is computed and logged, not what it is: not part of the cache key
IMPLEMENTATION_FIELDS: tuple[str, ...] = ("fast", "log_every")


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class TrainHistory:
    """Logged every ``log_every`` steps: ``step``, ``tokens``, ``nmse``, ``penalty`` (the loss's second term,
    named ``penalty_name``: ``auxk``, ``l1`` or ``l0_penalty``), ``l0``, ``dead_fraction``."""

    step: list[int] = dataclasses.field(default_factory=list)
    tokens: list[int] = dataclasses.field(default_factory=list)
    nmse: list[float] = dataclasses.field(default_factory=list)
    penalty: list[float] = dataclasses.field(default_factory=list)
    penalty_name: str = ""
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


def train_step(autoencoder: SparseAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor, since_fired: torch.Tensor,
               fast: bool = True) -> dict[str, torch.Tensor]:
    """One optimizer step on a RAW batch ``x [B, d_in]``; updates ``since_fired [n_latents]`` in place.

    Normalise (``x_n = s x``), mark dead latents (``since_fired > dead_tokens``), compute the gradients
    (TopK: :func:`~course_lib.sae.fast_grads.topk_grads_fast` when ``fast``, else autograd of
    :func:`~course_lib.sae.model.sae_loss`), remove each decoder row's parallel gradient, Adam step,
    renormalise the decoder rows; then keep a JumpReLU's thresholds >= 0, or move a BatchTopK's inference
    threshold towards the step's smallest selected value. Returns the
    step's stats (``nmse``, the loss's second term under its architecture's name -- ``auxk``, ``l1`` or
    ``l0_penalty`` --, ``l0``, ``fired``) and ``dead`` (the mask used).
    """
    cfg = autoencoder.cfg
    xn = x.to(autoencoder.W_dec.device, torch.float32) * autoencoder.scale
    dead = since_fired > cfg.dead_tokens
    if cfg.kind == "topk" and fast:
        grads, stats = topk_grads_fast(autoencoder, xn, dead)
        for name, p in autoencoder.named_parameters():
            p.grad = grads[name]
    else:
        opt.zero_grad(set_to_none=True)
        loss, stats = sae_loss(autoencoder, xn, dead)
        loss.backward()
    autoencoder.remove_parallel_grad_()
    opt.step()
    autoencoder.normalise_decoder_()
    ARCHITECTURES[cfg.kind].post_step(autoencoder, stats)
    since_fired += x.shape[0]
    since_fired[stats["fired"]] = 0
    return {**stats, "dead": dead}


def train_sae(
    sae_cfg: SAEConfig,
    train_cfg: SAETrainConfig,
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
    autoencoder = SparseAutoencoder(sae_cfg, gen)
    autoencoder.init_from_sample(init_sample)
    autoencoder.to(device)
    opt = torch.optim.Adam(autoencoder.parameters(), lr=train_cfg.lr, betas=(0.9, 0.999), eps=6.25e-10)
    total = max(1, train_cfg.n_tokens // train_cfg.batch_size)
    since_fired = torch.zeros(sae_cfg.n_latents, dtype=torch.long, device=device)
    hist = TrainHistory(penalty_name=ARCHITECTURES[sae_cfg.kind].penalty)
    bar = tqdm(total=total, desc=desc or f"{sae_cfg.kind} SAE n={sae_cfg.n_latents}", disable=not progress)
    t0 = time.perf_counter()
    for step in range(total):
        try:
            x = next(batches)
        except StopIteration:
            break
        for group in opt.param_groups:
            group["lr"] = train_cfg.lr * _lr_factor(step, total, train_cfg.warmup_frac, train_cfg.decay_frac)
        stats = train_step(autoencoder, opt, x, since_fired, fast=train_cfg.fast)
        dead = stats["dead"]
        if step % train_cfg.log_every == 0 or step == total - 1:
            hist.step.append(step)
            hist.tokens.append((step + 1) * x.shape[0])
            hist.nmse.append(float(stats["nmse"]))
            hist.penalty.append(float(stats[hist.penalty_name]))
            hist.l0.append(float(stats["l0"]))
            hist.dead_fraction.append(float(dead.float().mean()))
            bar.set_postfix(nmse=f"{hist.nmse[-1]:.3f}", l0=f"{hist.l0[-1]:.0f}",
                            dead=f"{hist.dead_fraction[-1]:.2f}")
        bar.update(1)
    bar.close()
    hist.seconds = time.perf_counter() - t0
    for p in autoencoder.parameters():
        p.grad = None
    return autoencoder.eval(), hist


def train_on_store(store: ActivationStore, sae_cfg: SAEConfig, train_cfg: SAETrainConfig, device: str | torch.device = "cpu",
                   progress: bool = True, desc: str | None = None) -> tuple[SparseAutoencoder, TrainHistory]:
    """Train on an :class:`~course_lib.sae.store.ActivationStore` (epochs as needed)."""
    gen = torch.Generator().manual_seed(train_cfg.seed)
    init = next(store.iter_batches(min(len(store), 8_192), generator=torch.Generator().manual_seed(train_cfg.seed + 1),
                                   buffer_tokens=min(len(store), 8_192)))
    batches = store.iter_batches(train_cfg.batch_size, generator=gen, buffer_tokens=train_cfg.buffer_tokens,
                                 epochs=None)
    return train_sae(sae_cfg, train_cfg, batches, init, device=device, progress=progress, desc=desc)


def _cache_config(store: ActivationStore, sae_cfg: SAEConfig, train_cfg: SAETrainConfig) -> dict[str, Any]:
    return {"store": store.meta["config"], "sae": sae_cfg, "train": train_cfg.cache_key()}


def load_or_train(store: ActivationStore, sae_cfg: SAEConfig, train_cfg: SAETrainConfig, device: str | torch.device = "cpu",
                  progress: bool = True, desc: str | None = None) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Cached :func:`train_on_store`: ``(autoencoder, history dict)``; the cache folder is in SAELens layout.

    The key is the store's config, ``sae_cfg`` and :meth:`SAETrainConfig.cache_key` (implementation
    flags that leave the trained weights unchanged, ``fast`` and ``log_every``, are not part of it).
    """
    key = _cache_config(store, sae_cfg, train_cfg)

    def build(folder: Path) -> None:
        autoencoder, hist = train_on_store(store, sae_cfg, train_cfg, device, progress, desc)
        save_saelens(autoencoder, folder, hook_name=store.hook_name, model_name=store.meta["model_name"])
        (folder / "history.json").write_text(json.dumps(hist.to_dict()))

    folder = cache.load_or_build("sae", key, SAE_VERSION, build)
    hist = json.loads((folder / "history.json").read_text())
    return load_saelens(folder, device), hist
