"""The on-disk activation store: shards of activations, the windows they came from, and shuffled batches.

A folder of safetensors shards ``shard_XXXXX.safetensors`` each holding ``acts [n, d_in]`` (the model's
dtype, so bfloat16 activations are stored exactly) and ``where [n, 2]`` int32 ``(window, position)``
pointing into ``tokens.safetensors`` (``tokens [n_windows, seq_len]``), plus ``meta.json`` (counts,
median norm, hook name). It is built by :mod:`course_lib.sae.harvest` through :func:`course_lib.cache.load_or_build`, so it is
cached by its :class:`HarvestConfig`. :meth:`ActivationStore.iter_batches` streams shuffled batches
through a bounded shuffling buffer: RAM ~ ``buffer_tokens x d_in x 4`` bytes whatever the store size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


class ActivationStore:
    """Read side of a store folder: ``len(store)`` rows of ``d_in`` activations in shards."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((self.folder / "meta.json").read_text())
        self.shards = sorted(self.folder.glob("shard_*.safetensors"))
        self.d_in: int = int(self.meta["d_in"])
        self.peak_buffer_rows = 0  # largest number of rows the last iter_batches held at once
        self._tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def hook_name(self) -> str:
        return str(self.meta["hook_name"])

    @property
    def tokens(self) -> torch.Tensor:
        """The harvested windows ``[n_windows, seq_len]`` (for contexts in dashboards)."""
        if self._tokens is None:
            self._tokens = load_file(str(self.folder / "tokens.safetensors"))["tokens"]
        return self._tokens

    def shard(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(acts [n, d_in], where [n, 2])`` of shard ``i``."""
        d = load_file(str(self.shards[i]))
        return d["acts"], d["where"]

    def iter_shards(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(len(self.shards)):
            yield self.shard(i)

    def head(self, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The first ``n`` rows ``[min(n, len), d_in]`` (reads only the shards needed)."""
        out, have = [], 0
        for acts, _ in self.iter_shards():
            out.append(acts[: n - have].to(dtype))
            have += out[-1].shape[0]
            if have >= n:
                break
        return torch.cat(out) if out else torch.empty(0, self.d_in, dtype=dtype)

    def iter_batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        buffer_tokens: int = 65_536,
        epochs: float | None = 1.0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> Iterator[torch.Tensor]:
        """Shuffled batches ``[batch_size, d_in]`` through a bounded shuffling buffer.

        Shards are visited in a random order each epoch; their rows enter a buffer of at most
        ``buffer_tokens`` rows (+ one shard while refilling); batches are drawn at random from the
        buffer and removed. ``epochs=None`` streams forever; a final partial batch is dropped.
        """
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.peak_buffer_rows = 0
        total = None if epochs is None else int(epochs * len(self))
        n_perms = None if epochs is None else max(1, math.ceil(epochs))
        served = 0

        def shard_order() -> Iterator[int]:
            done = 0
            while n_perms is None or done < n_perms:
                yield from torch.randperm(len(self.shards), generator=gen).tolist()
                done += 1

        order = shard_order()
        buf = torch.empty(0, self.d_in, dtype=dtype)
        exhausted = False
        while total is None or served + batch_size <= total:
            while not exhausted and buf.shape[0] < max(buffer_tokens, batch_size):
                nxt = next(order, None)
                if nxt is None:
                    exhausted = True
                    break
                acts, _ = self.shard(nxt)
                buf = torch.cat([buf, acts.to(dtype)])
                self.peak_buffer_rows = max(self.peak_buffer_rows, buf.shape[0])
            if buf.shape[0] < batch_size:
                return
            perm = torch.randperm(buf.shape[0], generator=gen)
            # serve half the buffer (all of it once the shards are exhausted), then refill
            half = buf.shape[0] if exhausted else buf.shape[0] // 2
            n_out = max(batch_size, half // batch_size * batch_size)
            for j in range(0, n_out, batch_size):
                if total is not None and served + batch_size > total:
                    return
                yield buf[perm[j : j + batch_size]].to(device, non_blocking=True)
                served += batch_size
            buf = buf[perm[n_out:]]


def write_store(folder: str | Path, acts: torch.Tensor, tokens: torch.Tensor | None = None,
                where: torch.Tensor | None = None, shard_tokens: int = 16_384,
                meta: dict[str, Any] | None = None) -> ActivationStore:
    """Write ``acts [N, d]`` (any source: synthetic data, another model) as a store folder and open it.

    ``where [N, 2]`` defaults to ``(row, 0)`` and ``tokens`` to zeros ``[N, 1]``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, d = acts.shape
    if where is None:
        where = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long)], 1)
    if tokens is None:
        tokens = torch.zeros(n, 1, dtype=torch.long)
    n_shards = 0
    for s in range(0, n, shard_tokens):
        save_file({"acts": acts[s : s + shard_tokens].contiguous(),
                   "where": where[s : s + shard_tokens].to(torch.int32).contiguous()},
                  str(folder / f"shard_{n_shards:05d}.safetensors"))
        n_shards += 1
    save_file({"tokens": tokens.contiguous()}, str(folder / "tokens.safetensors"))
    norms = acts.float().norm(dim=1)
    info = {"hook_name": "", "layer": -1, "model_name": "", "d_in": d, "n_tokens": n, "tokens_seen": n,
            "massive_excluded": 0, "n_shards": n_shards, "mean_norm": float(norms.mean()),
            "median_norm": float(norms.median()), "harvest_seconds": 0.0, "tokens_per_second": 0.0,
            "stopped_at_layer": None, "config": {"source": "write_store", "n": n, "d": d}}
    info.update(meta or {})
    (folder / "meta.json").write_text(json.dumps(info, indent=2))
    return ActivationStore(folder)
