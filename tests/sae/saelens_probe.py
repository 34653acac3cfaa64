"""Run by tests/sae/test_saelens_real.py with the SAELens venv's python (not collected by pytest).

    .saelens-venv/bin/python tests/sae/saelens_probe.py INPUT.safetensors FOLDER [FOLDER...]

Loads each exported folder with the real ``sae_lens`` (``SAE.load_from_disk``, SAELens's own loader and
config handling), encodes and decodes the fixed input ``x`` from INPUT.safetensors, and prints one JSON
line per folder: what SAELens read from cfg.json (class, architecture, d_in, d_sae, k, metadata, the keys
of the cfg.json SAELens would write for it) and the latents and reconstruction ``decode(encode(x))`` as
lists. Imports nothing from course_lib.
"""

from __future__ import annotations

import json
import sys

import sae_lens
import torch
from safetensors.torch import load_file


def main(argv: list[str]) -> None:
    x = load_file(argv[0])["x"]
    for folder in argv[1:]:
        sae = sae_lens.SAE.load_from_disk(folder, device="cpu")
        cfg = sae.cfg
        with torch.no_grad():
            z = sae.encode(x)
            recon = sae.decode(z)
            forward = sae(x)
        print(json.dumps({
            "folder": folder,
            "sae_lens_version": sae_lens.__version__,
            "class": type(sae).__name__,
            "architecture": cfg.architecture(),
            "d_in": cfg.d_in,
            "d_sae": cfg.d_sae,
            "k": getattr(cfg, "k", None),
            "cfg_keys": sorted(cfg.to_dict()),  # what SAELens itself writes to cfg.json for this SAE
            "hook_name": cfg.metadata.hook_name,
            "model_name": cfg.metadata.model_name,
            "normalize_activations": cfg.normalize_activations,
            "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
            "latents": z.tolist(),
            "reconstruction": recon.tolist(),
            "forward": forward.tolist(),
        }))


if __name__ == "__main__":
    main(sys.argv[1:])
