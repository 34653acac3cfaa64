"""Reference checkpoints for notebook 02: compact storage, a manifest, one command to regenerate a set.

Storage: one safetensors file per model. A tensor with at most half of its entries nonzero is stored
as ``<name>::indices`` (int32 flat indices of the nonzeros) and ``<name>::values`` (their values); the
file's metadata records every tensor's shape and dtype, so :func:`load_compact` rebuilds the exact
state dict (bit for bit). Denser tensors are stored as they are.

A *set* is a folder with ``manifest.json`` (model and train configs, the command that made it, steps,
wall time, machine, final train and validation losses per model) and ``<model>.safetensors`` files.
Regenerate one with::

    python -m course_lib.circuits.checkpoints --profile workshop --levels 0.2 0.1 --out DIR

Training is seeded (model init and batch order), so on the same machine and thread count the command
gives the same weights again. The larger, hours-long reference set of issue 11 (several widths, kept
fractions and seeds) is trained resumably by :mod:`course_lib.circuits.reference_training`, which writes
its export with :func:`save_compact`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from course_lib import cache, corpus, weight_sparsity
from course_lib.circuits.training import (
    CircuitTrainConfig,
    TrainedModel,
    eval_loss,
    train,
    val_windows,
)
from course_lib.circuits.transformer import SparseTransformer, SparseTransformerConfig

MANIFEST = "manifest.json"
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


def reference_dir(profile: str) -> Path:
    """Where a shipped reference set for ``profile`` lives (``course_lib/circuits/reference/<profile>``)."""
    return Path(__file__).parent / "reference" / profile


def _machine() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def model_name(fraction: float) -> str:
    return "dense" if fraction >= 1.0 else f"sparse {fraction:g}"


def build_reference_set(
    out: str | Path, mcfg: SparseTransformerConfig, tcfg: CircuitTrainConfig, levels: list[float],
    train_stream: torch.Tensor, val_stream: torch.Tensor, command: str, progress: bool = False,
    data_key: dict | None = None,
) -> dict:
    """Train a dense model and one sparse model per kept fraction in ``levels``; write them and the manifest.

    ``data_key`` (e.g. the profile and the token count of the corpus) is stored so that a set trained on
    another corpus or tokenizer (the default corpus is the running Python's standard library) is not loaded.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = []
    for frac in [1.0] + [f for f in levels if f < 1.0]:
        t = dataclasses.replace(tcfg, target_fraction=frac)
        torch.manual_seed(t.seed)
        model = SparseTransformer(mcfg)
        t0 = time.perf_counter()
        log = train(model, train_stream, t, progress) if t.steps > 0 else {}
        wall = time.perf_counter() - t0
        vloss = eval_loss(model, val_windows(val_stream, mcfg.n_ctx, t.eval_windows))
        fname = model_name(frac).replace(" ", "_") + ".safetensors"
        save_compact(model.state_dict(), out / fname)
        models.append({
            "name": model_name(frac), "file": fname, "train": dataclasses.asdict(t), "steps": t.steps,
            "wall_time_s": round(wall, 2), "final_train_loss": log["loss"][-1] if log.get("loss") else None,
            "val_loss": vloss, "log": log,
            "nonzero_fraction": weight_sparsity.nonzero_fraction(model.sparsified_parameters().values()),
        })
    manifest = {"format": FORMAT, "model": dataclasses.asdict(mcfg), "data": data_key, "command": command,
                "machine": _machine(), "models": models}
    cache.atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def load_reference_set(folder: str | Path, mcfg: SparseTransformerConfig, device: torch.device | str = "cpu",
                       data_key: dict | None = None) -> list[TrainedModel] | None:
    """The models of a shipped set (dense first), or ``None`` when ``folder`` holds no set for ``mcfg``
    (or, when ``data_key`` is given, for other data)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return None
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("model") != json.loads(json.dumps(dataclasses.asdict(mcfg))):
        return None
    if data_key is not None and manifest.get("data") != json.loads(json.dumps(data_key)):
        return None
    out = []
    for m in manifest["models"]:
        model = SparseTransformer(mcfg)
        model.load_state_dict(load_compact(folder / m["file"]))
        model.to(device).eval()
        nz = weight_sparsity.nonzero_fraction(model.sparsified_parameters().values())
        out.append(TrainedModel(m["name"], model, float(m["val_loss"]), nz, m["log"], folder / m["file"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="workshop", choices=("smoke", "workshop", "full"))
    ap.add_argument("--levels", type=float, nargs="+", default=[0.2, 0.1])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the notebook's for the profile)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    mcfg = {
        "smoke": SparseTransformerConfig(d_model=32, n_layers=2, d_mlp=64, n_ctx=32),
        "workshop": SparseTransformerConfig(d_model=64, n_layers=2, d_mlp=256, n_ctx=64),
        "full": SparseTransformerConfig(d_model=128, n_layers=4, d_mlp=512, n_ctx=128, use_bigram=True),
    }[a.profile]
    steps = a.steps or {"smoke": 40, "workshop": 1200, "full": 20_000}[a.profile]
    batch = {"smoke": 8, "workshop": 16, "full": 32}[a.profile]
    _, train_stream, val_stream = corpus.data_streams(a.profile)
    command = "python -m course_lib.circuits.checkpoints " + " ".join(sys.argv[1:] if argv is None else argv)
    data_key = {"profile": a.profile, "tokens": int(train_stream.numel())}  # as notebook 02's DATA_KEY
    build_reference_set(a.out, mcfg, CircuitTrainConfig(steps=steps, batch_size=batch, seed=a.seed), a.levels,
                        train_stream, val_stream, command, progress=True, data_key=data_key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
