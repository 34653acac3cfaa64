"""Compact checkpoint storage for notebook 02's reference set (sparse tensors as indices + values).

Storage: one safetensors file per model. A tensor with at most half of its entries nonzero is stored
as ``<name>::indices`` (int32 flat indices of the nonzeros) and ``<name>::values`` (their values); the
file's metadata records every tensor's shape and dtype, so :func:`load_compact` rebuilds the exact
state dict (bit for bit). Denser tensors are stored as they are.

Notebook 02's reference set (several widths, kept fractions and seeds; hours of CPU) is trained resumably by
:mod:`course_lib.circuits.reference_training`, which writes its export with :func:`save_compact`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from course_lib import cache

FORMAT = "course-lib-compact-v1"


def save_compact(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write ``state`` to ``path`` (atomically); tensors at most half nonzero as indices + values."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, list] = {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        meta[name] = [list(t.shape), str(t.dtype).removeprefix("torch.")]
        flat = t.reshape(-1)
        nz = torch.nonzero(flat).flatten()
        if flat.numel() > 0 and nz.numel() <= flat.numel() // 2:
            tensors[f"{name}::indices"] = nz.to(torch.int32)
            tensors[f"{name}::values"] = flat[nz].clone()
        else:
            tensors[name] = t
    with cache.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "tensors": json.dumps(meta)})


def load_compact(path: str | Path) -> dict[str, torch.Tensor]:
    """The exact state dict that :func:`save_compact` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["tensors"])
    raw = load_file(str(path))
    out = {}
    for name, (shape, dtype) in meta.items():
        if name in raw:
            out[name] = raw[name]
            continue
        flat = torch.zeros(int(torch.tensor(shape).prod()) if shape else 1, dtype=getattr(torch, dtype))
        flat[raw[f"{name}::indices"].long()] = raw[f"{name}::values"]
        out[name] = flat.reshape(shape)
    return out
