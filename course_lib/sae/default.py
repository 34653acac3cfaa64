"""The course's default SAE: SmolLM2's middle residual stream, trained by notebook 03, used by notebook 04.

:func:`load_or_train_default_sae` harvests the activations and trains the SAE, or loads both from
the cache (keyed by their configs), so notebook 04 runs standalone and reuses notebook 03's SAE
when 03 ran first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from course_lib import cache, runtime
from course_lib.sae.harvest import STORE_VERSION, HarvestConfig, load_or_harvest
from course_lib.sae.model import SAEConfig, SparseAutoencoder
from course_lib.sae.training import SAE_VERSION, SAETrainConfig, load_or_train


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
    key: str = ""  # the configs' key (default_sae_key): equal keys mean the same harvest, SAE and training settings
    #   (as configured: the dtype "auto" resolves per machine, so the weights can differ where the key does not)
    digest: str = ""  # a digest of the trained weights (cache.tensor_digest): equal only for bitwise-equal weights


def default_configs(profile: str, seed: int = 0) -> tuple[HarvestConfig, SAEConfig, SAETrainConfig]:
    """``(HarvestConfig, SAEConfig, SAETrainConfig)`` of the default SAE for a profile."""
    hc = runtime.by_profile(
        profile,
        smoke=HarvestConfig(n_tokens=2_048, seq_len=64, batch_size=16, shard_tokens=1_024),
        workshop=HarvestConfig(n_tokens=96_000, seq_len=128, batch_size=16),
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
        smoke=SAETrainConfig(n_tokens=16_384, batch_size=512, lr=2e-3, buffer_tokens=2_048, log_every=2, seed=seed),
        # workshop: two passes over the store (each token seen about twice), at the sweeps' learning rate
        workshop=SAETrainConfig(n_tokens=192_000, batch_size=1024, lr=2e-3, buffer_tokens=65_536, seed=seed),
        full=SAETrainConfig(n_tokens=20_000_000, batch_size=4096, lr=2e-4, buffer_tokens=262_144, seed=seed),
    )
    return hc, sc, tc


def default_sae_key(profile: str, seed: int = 0) -> str:
    """The key (:attr:`DefaultSAE.key`) of the profile's default SAE, from its configs and the store's and the
    SAE's format versions alone: nothing is harvested or trained. Equal to the key
    :func:`load_or_train_default_sae` reports."""
    hc, sc, tc = default_configs(profile, seed)
    return cache.config_hash({"store": dataclasses.asdict(hc), "store_version": STORE_VERSION, "sae": sc,
                              "train": tc.cache_key()}, SAE_VERSION)


def load_or_train_default_sae(
    profile: str, seed: int = 0, device: str | torch.device = "cpu", model: Any = None
) -> DefaultSAE:
    """The profile's default SAE (cached): harvest SmolLM2's middle residual stream and train, or load.

    Notebook 03 trains exactly this SAE, so notebook 04 reuses it when 03 ran first. ``model`` (a
    loaded SmolLM2 bridge) saves a reload when harvesting is needed.
    """
    hc, sc, tc = default_configs(profile, seed)
    store = load_or_harvest(hc, model=model, device=device)
    autoencoder, hist = load_or_train(store, sc, tc, device=device)
    return DefaultSAE(sae=autoencoder, layer=hc.layer, hook_name=hc.hook_name, model_name=hc.model_name,
                      n_latents=sc.n_latents, store_dir=store.folder, history=hist, key=default_sae_key(profile, seed),
                      digest=cache.tensor_digest(v for _, v in sorted(autoencoder.state_dict().items())))
