"""A TopK SAE on the dense model's residual channels: the third unit class (Gao et al., 2024).

The SAE of notebook 03 (:class:`course_lib.sae.SparseAutoencoder`, trained by :func:`course_lib.sae.train_sae`)
on an activation tensor ``X [n_tokens, d_model]`` of the dense model's channel site (position 0 of each window
left out), read from the **training** split of 02's corpus, so the units are explained and scored on text the
SAE never saw::

    z = TopK_k(W_enc (s x - b_pre) + b_enc)        x_hat = (W_dec^T z + b_pre) / s      n_latents = expansion * d

Batches are rows of ``X`` drawn at random (a seeded generator). The trained weights are cached
(:func:`course_lib.cache.load_or_build`) under the model's weights, the data and the config.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from course_lib import cache
from course_lib.sae import SAEConfig, SAETrainConfig, SparseAutoencoder, nmse, train_sae

VERSION = "capstone-sae-v1"


@dataclasses.dataclass(frozen=True)
class DictionaryConfig:
    expansion: int = 8  # latents per residual channel
    k: int = 8  # active latents per token (TopK)
    n_tokens: int = 300_000  # training tokens (epochs over X as needed)
    batch_size: int = 512  # tokens per step
    lr: float = 1e-3  # Adam learning rate (small SAEs take a larger one than 03's)
    seed: int = 0  # init and batch order


def batches(x: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless random batches ``[batch_size, d]`` of the rows of ``x [n, d]`` (a fresh permutation per epoch)."""
    while True:
        perm = torch.randperm(x.shape[0], generator=generator)
        for i in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[perm[i:i + batch_size]]


def train_dictionary(x: torch.Tensor, cfg: DictionaryConfig, device: str | torch.device = "cpu"
                     ) -> tuple[SparseAutoencoder, dict]:
    """A TopK SAE on ``x [n_tokens, d]`` (uncached): ``(autoencoder in eval mode, {"nmse", "dead_fraction", "l0"})``;
    the statistics on the last 10% of ``x``'s rows."""
    d = int(x.shape[1])
    scfg = SAEConfig(d_in=d, n_latents=cfg.expansion * d, kind="topk", k=min(cfg.k, cfg.expansion * d))
    tcfg = SAETrainConfig(n_tokens=cfg.n_tokens, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    autoencoder, hist = train_sae(scfg, tcfg, batches(x, cfg.batch_size, gen), x[:8192], device, progress=False)
    held = x[-max(1, x.shape[0] // 10):].to(next(autoencoder.parameters()).device)
    with torch.no_grad():
        z = autoencoder.encode(held)
        err = float(nmse(held, autoencoder(held)))
    fired = (z > 0).any(dim=0)
    return autoencoder, {"nmse": err, "dead_fraction": float(1 - fired.float().mean()),
                         "l0": float((z > 0).float().sum(-1).mean()), "n_latents": scfg.n_latents, "k": scfg.k,
                         "steps": max(1, cfg.n_tokens // cfg.batch_size), "train_seconds": hist.seconds}


def load_or_train_dictionary(model_key: str, x: torch.Tensor, cfg: DictionaryConfig,
                             device: str | torch.device = "cpu") -> tuple[SparseAutoencoder, dict]:
    """:func:`train_dictionary`, cached under ``model_key`` (the model's name and weights' digest), a digest of
    ``x`` and ``cfg``."""
    key = {"model": model_key, "data": cache.tensor_digest([x]), "cfg": dataclasses.asdict(cfg)}

    def build(folder: Path) -> None:
        autoencoder, stats = train_dictionary(x, cfg, device)
        save_file({k: v.detach().cpu().contiguous() for k, v in autoencoder.state_dict().items()},
                  str(folder / "sae.safetensors"))
        (folder / "stats.json").write_text(json.dumps(stats | {"cfg": dataclasses.asdict(autoencoder.cfg)}))

    folder = cache.load_or_build("capstone_sae", key, VERSION, build)
    stats = json.loads((folder / "stats.json").read_text())
    scfg = SAEConfig(**stats.pop("cfg"))
    autoencoder = SparseAutoencoder(scfg)
    autoencoder.load_state_dict(load_file(str(folder / "sae.safetensors")))
    return autoencoder.to(device).eval(), stats
