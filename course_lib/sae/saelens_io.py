"""Export and import sparse autoencoders in SAELens's (version 6) folder layout, to use ours in that ecosystem.

A SAELens SAE is a folder with ``cfg.json`` and ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``,
``b_enc [d_sae]``, ``W_dec [d_sae, d_in]`` and ``b_dec [d_in]``, acting on raw activations. Our
:class:`course_lib.sae.model.SparseAutoencoder` keeps a constant input scale ``s`` separately; export
folds it into the weights and import unfolds it.

What SAELens 6 (``SAE.load_from_disk(folder)``) expects in ``cfg.json``, and what we write:

- ``architecture``: picks the class: ``"topk"`` -> ``TopKSAE`` (reads ``k``; ``rescale_acts_by_decoder_norm``
  false), ``"standard"`` -> ``StandardSAE`` (ReLU; our ``relu`` kind), ``"jumprelu"`` -> ``JumpReLUSAE``
  (a ``threshold [d_sae]`` tensor beside the weights; our ``jumprelu`` kind, and our ``batchtopk`` kind at
  inference, its one threshold repeated, as SAELens itself saves a BatchTopK SAE for inference).
- ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input`` (true: ``b_dec`` is subtracted
  before encoding, our ``b_pre``), ``normalize_activations`` (``"none"``: ``s`` is folded in),
  ``reshape_activations`` (``"none"``). Top-level keys its config class lacks are ignored.
- ``metadata``: restored as is (``cfg.metadata.hook_name``, ``.model_name``, ``.hook_head_index``,
  ``.prepend_bos``...), but only when ``sae_lens_version`` (top level or in ``metadata``) is >= 6.0;
  otherwise SAELens takes its pre-6.0 path, which rebuilds ``metadata`` from top-level keys
  (``hook_point`` -> ``hook_name``) and so drops ours. We write ``metadata.sae_lens_version = "6.0.0"``.

``tests/sae/test_saelens_real.py`` loads our export with the real SAELens 6 (its own venv, built by
`make test`) and checks the class, ``k``, the hook and model names and the reconstruction.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from course_lib import cache
from course_lib.sae.model import ARCHITECTURES, SAEConfig, SparseAutoencoder

# The cfg.json layout we write: SAELens >= 6 reads ``metadata.sae_lens_version`` to choose its loader;
# without it (or below 6.0) it takes the pre-6.0 path, which rebuilds ``metadata`` from top-level keys
# and so drops our nested hook_name and model_name.
SAELENS_FORMAT_VERSION = "6.0.0"


def save_saelens(autoencoder: SparseAutoencoder, folder: str | Path, hook_name: str = "", model_name: str = "",
                 extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``folder/cfg.json`` + ``folder/sae_weights.safetensors`` in SAELens's layout.

    The normalisation is folded into the weights (as SAELens does when it finishes training), so the
    exported SAE acts on raw activations: ``W_enc' = s W_enc^T [d_in, d_sae]``, ``b_dec' = b_pre / s``,
    ``W_dec' = W_dec / s [d_sae, d_in]`` and ``normalize_activations = "none"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s = float(autoencoder.scale)
    tensors = {
        "W_enc": (autoencoder.W_enc.detach().float().cpu() * s).t().contiguous(),
        "b_enc": autoencoder.b_enc.detach().float().cpu().contiguous(),
        "W_dec": (autoencoder.W_dec.detach().float().cpu() / s).contiguous(),
        "b_dec": (autoencoder.b_pre.detach().float().cpu() / s).contiguous(),
    }
    cfg = autoencoder.cfg
    if ARCHITECTURES[cfg.kind].threshold != "none":  # pre-activations are unchanged by the folding, so is theta
        tensors["threshold"] = (autoencoder.threshold.detach().float().cpu()
                                * torch.ones(cfg.n_latents)).contiguous()
    meta = {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
            "model_name": model_name, "hook_name": hook_name, "hook_head_index": None, "prepend_bos": True,
            "course_lib": {"sae_config": dataclasses.asdict(cfg)},
            **(extra_metadata or {})}
    cfg_json: dict[str, Any] = {
        "architecture": ARCHITECTURES[cfg.kind].saelens,
        "d_in": cfg.d_in,
        "d_sae": cfg.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
    }
    if cfg.kind == "topk":
        cfg_json["k"] = cfg.k
        cfg_json["rescale_acts_by_decoder_norm"] = False
    with cache.atomic_path(folder / "sae_weights.safetensors") as tmp:
        save_file(tensors, str(tmp))
    cache.atomic_write_text(folder / "cfg.json", json.dumps(cfg_json, indent=2))
    return folder


def load_saelens(folder: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a SAELens-layout folder (``topk``, ``standard`` or ``jumprelu``) into a :class:`SparseAutoencoder`.

    The normalisation ``s`` is recovered from the decoder's row norms (``1/s`` when our SAE exported
    it; 1 for a SAELens SAE with unit-norm decoder rows), and the weights are unfolded back.
    """
    folder = Path(folder)
    cfg_json = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    arch = cfg_json.get("architecture", "standard")
    if arch not in ("topk", "standard", "jumprelu"):
        raise ValueError(f"architecture {arch!r} not supported; valid values: 'topk', 'standard', 'jumprelu'")
    ours = (cfg_json.get("metadata") or {}).get("course_lib", {}).get("sae_config", {})
    d_in, d_sae = int(cfg_json["d_in"]), int(cfg_json["d_sae"])
    kind = {"topk": "topk", "standard": "relu"}.get(arch) or (
        "batchtopk" if ours.get("kind") == "batchtopk" else "jumprelu")
    cfg = SAEConfig(**{**ours, "d_in": d_in, "n_latents": d_sae, "kind": kind,
                       "k": int(cfg_json.get("k", ours.get("k", 32)))})
    W_dec = w["W_dec"].float()
    norms = W_dec.norm(dim=1)
    s = float(1.0 / norms.mean()) if norms.numel() else 1.0
    autoencoder = SparseAutoencoder(cfg)
    with torch.no_grad():
        autoencoder.scale.fill_(s)
        autoencoder.W_dec.copy_(W_dec * s)
        autoencoder.W_enc.copy_(w["W_enc"].float().t() / s)
        autoencoder.b_enc.copy_(w["b_enc"].float())
        autoencoder.b_pre.copy_(w["b_dec"].float() * s)
        threshold = ARCHITECTURES[kind].threshold
        if threshold == "learned":
            autoencoder.threshold.copy_(w["threshold"].float())
        elif threshold == "running":
            autoencoder.threshold.fill_(float(w["threshold"].float().mean()))
    return autoencoder.to(device).eval()


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The hook metadata of a SAELens-layout folder (``hook_name``, ``model_name``...), as SAELens reads it.

    SAELens >= 6 files (``sae_lens_version`` >= 6, top level or in ``metadata``) keep it in ``metadata``;
    older files keep it at the top level (``hook_point`` was the old name of ``hook_name``).
    """
    cfg_json = json.loads((Path(folder) / "cfg.json").read_text())
    meta = cfg_json.get("metadata") or {}
    version = str(cfg_json.get("sae_lens_version") or meta.get("sae_lens_version") or "0")
    if int(version.split(".")[0] or 0) >= 6:
        return dict(meta)
    old = {("hook_name" if k == "hook_point" else k): v for k, v in cfg_json.items() if k != "metadata"}
    return {k: old.get(k) for k in ("model_name", "hook_name", "hook_head_index", "prepend_bos")}
