"""Harvest residual-stream activations of a real LM into an on-disk store, and stream them back.

Harvest
-------
Token windows ``[n_seq, seq_len]`` (BOS first) go through the transformer-lens bridge with one forward
hook on ``blocks.{layer}.hook_resid_post``; the forward pass stops right after that block
(``run_with_hooks(..., stop_at_layer=layer + 1)``, supported by the 4.x bridge), so a middle layer
costs about half a full forward. Of every window we keep positions ``1..seq_len-1``:

* BOS (position 0) is left out: its residual norm is ~100x the others' (SmolLM2: ~23,000 vs ~180).
* *Massive-activation* tokens, whose norm exceeds ``massive_factor`` x the batch's median norm, are
  left out and counted (SmolLM2 layer 15: ~0.02% of tokens, but most of the variance).

Store
-----
A folder of safetensors shards ``shard_XXXXX.safetensors`` each holding ``acts [n, d_in]`` (the model's
dtype, so bfloat16 activations are stored exactly) and ``where [n, 2]`` int32 ``(window, position)``
pointing into ``tokens.safetensors`` (``tokens [n_windows, seq_len]``), plus ``meta.json`` (counts,
median norm, hook name). It is built through :func:`course_lib.runtime.load_or_build`, so it is
cached by its :class:`HarvestConfig`. :meth:`ActivationStore.iter_batches` streams shuffled batches
through a bounded shuffling buffer: RAM ~ ``buffer_tokens x d_in x 4`` bytes whatever the store size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from course_lib import corpus, runtime

_STORE_VERSION = "act-store-v1"


@dataclasses.dataclass(frozen=True)
class HarvestConfig:
    model_name: str = "smollm2"  # name for course_lib.lm.load_lm ("smollm2" offline; hub names online)
    layer: int = 15  # residual stream after this block (SmolLM2 has 30: 15 is the middle)
    n_tokens: int = 100_000  # non-BOS, non-massive tokens to store
    seq_len: int = 128  # tokens per window, BOS included
    batch_size: int = 16  # windows per forward pass
    dtype: str = "auto"  # model dtype: "auto" = bfloat16 where native (CUDA, avx512_bf16/AMX), else float32
    store_dtype: str = "bfloat16"  # dtype of the stored activations (half the disk of float32)
    split: str = "train"  # corpus split ("train" or "val", split by file)
    massive_factor: float = 10.0  # exclude tokens with norm > massive_factor x median norm
    shard_tokens: int = 16_384  # rows per shard file
    corpus_root: str | None = None  # folder of text/code; None = Python's standard library

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


# --------------------------------------------------------------------------- harvesting


def token_windows(cfg: HarvestConfig, tokenizer: Any) -> torch.Tensor:
    """Windows ``[n_windows, seq_len]`` (BOS first) from the corpus, enough for ``cfg.n_tokens``.

    Reads ~6 characters per wanted token (code tokenises at ~3-4 chars/token), plus a margin for
    excluded tokens; raises if the corpus is too small.
    """
    need_windows = math.ceil(cfg.n_tokens / (cfg.seq_len - 1) * 1.02) + 1
    ccfg = corpus.CorpusConfig(root=cfg.corpus_root, max_chars=max(20_000, cfg.n_tokens * 6))
    texts = corpus.load_texts(ccfg, cfg.split)
    stream = corpus.hf_token_stream(tokenizer, texts)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    win = corpus.windows(stream, cfg.seq_len, bos_id=bos)
    if win.shape[0] < need_windows:
        raise ValueError(
            f"corpus gives {win.shape[0]} windows of {cfg.seq_len} tokens; {need_windows} needed "
            f"for n_tokens={cfg.n_tokens}"
        )
    return win[:need_windows]


def keep_positions(resid: torch.Tensor, massive_factor: float = 10.0) -> torch.Tensor:
    """Which positions of ``resid [b, p, d]`` to use: ``[b, p]`` bool.

    False at BOS (position 0) and at *massive* tokens, whose norm exceeds ``massive_factor`` times
    the median norm of the batch's non-BOS positions. The one rule for SAE training (notebook 03)
    and for the units explained in notebook 04.
    """
    norms = resid.float().norm(dim=-1)
    keep = norms <= massive_factor * norms[:, 1:].median()
    keep[:, 0] = False
    return keep


class ResidHarvester:
    """Forward hook + early stop: ``harvester(tokens [b, s]) -> (acts [m, d], where [m, 2], n_massive)``.

    ``acts`` are the kept rows (BOS and massive tokens removed) in the model's dtype; ``where`` holds
    ``(row in tokens, position)``.
    """

    def __init__(self, model: Any, layer: int, massive_factor: float = 10.0, stop_early: bool = True):
        self.model = model
        self.layer = layer
        self.hook_name = f"blocks.{layer}.hook_resid_post"
        self.massive_factor = massive_factor
        n_layers = int(model.cfg.n_layers)
        self.stop_at = layer + 1 if (stop_early and layer + 1 < n_layers) else None
        self._grabbed: torch.Tensor | None = None

    def _hook(self, x: torch.Tensor, hook: Any) -> torch.Tensor:
        self._grabbed = x.detach()
        return x

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        self._grabbed = None
        self.model.run_with_hooks(
            tokens, fwd_hooks=[(self.hook_name, self._hook)], stop_at_layer=self.stop_at, return_type=None
        )
        if self._grabbed is None:
            raise RuntimeError(f"hook {self.hook_name} did not fire")
        x = self._grabbed[:, 1:, :]  # drop BOS: [b, s-1, d]
        b, s1, d = x.shape
        flat = x.reshape(b * s1, d)
        keep = keep_positions(self._grabbed, self.massive_factor)[:, 1:].reshape(-1)
        n_massive = int((~keep).sum())
        pos = torch.arange(1, s1 + 1, device=flat.device).repeat(b)
        row = torch.arange(b, device=flat.device).repeat_interleave(s1)
        where = torch.stack([row, pos], dim=1)[keep].to(torch.int32)
        self._grabbed = None
        return flat[keep].cpu(), where.cpu(), n_massive


def harvest(
    cfg: HarvestConfig, folder: Path, model: Any | None = None, device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the model over corpus windows and write the store's files into ``folder``; return meta."""
    from course_lib import lm

    if model is None:
        model = lm.load_lm(cfg.model_name, dtype=cfg.dtype, device=device)
    dev = next(model.parameters()).device
    tokens = token_windows(cfg, model.tokenizer)
    grab = ResidHarvester(model, cfg.layer, cfg.massive_factor)
    shard_acts: list[torch.Tensor] = []
    shard_where: list[torch.Tensor] = []
    n_buf = n_kept = n_massive = n_seen = n_shards = 0
    norm_sum = 0.0
    norm_samples: list[torch.Tensor] = []
    used_windows = 0

    def flush() -> None:
        nonlocal n_buf, n_shards
        if not shard_acts:
            return
        acts = torch.cat(shard_acts).contiguous()
        where = torch.cat(shard_where).contiguous()
        save_file({"acts": acts, "where": where}, str(folder / f"shard_{n_shards:05d}.safetensors"))
        shard_acts.clear()
        shard_where.clear()
        n_buf = 0
        n_shards += 1

    t0 = time.perf_counter()
    bar = tqdm(total=cfg.n_tokens, desc=f"harvest {grab.hook_name}", unit="tok", unit_scale=True,
               disable=not progress)
    for start in range(0, tokens.shape[0], cfg.batch_size):
        if n_kept >= cfg.n_tokens:
            break
        batch = tokens[start : start + cfg.batch_size]
        acts, where, massive = grab(batch.to(dev))
        acts = acts.to(lm.DTYPES[cfg.store_dtype])
        where[:, 0] += start
        take = min(acts.shape[0], cfg.n_tokens - n_kept)
        acts, where = acts[:take], where[:take]
        n_seen += batch.shape[0] * (batch.shape[1] - 1)
        n_massive += massive
        n_kept += take
        used_windows = start + batch.shape[0]
        nf = acts.float().norm(dim=-1)
        norm_sum += float(nf.sum())
        norm_samples.append(nf[:: max(1, nf.numel() // 256)])
        shard_acts.append(acts)
        shard_where.append(where)
        n_buf += take
        if n_buf >= cfg.shard_tokens:
            flush()
        bar.update(take)
        bar.set_postfix(tok_per_s=f"{n_seen / (time.perf_counter() - t0):.0f}")
    flush()
    bar.close()
    elapsed = time.perf_counter() - t0
    save_file({"tokens": tokens[:used_windows].contiguous()}, str(folder / "tokens.safetensors"))
    meta = {
        "hook_name": grab.hook_name,
        "layer": cfg.layer,
        "model_name": cfg.model_name,
        "d_in": int(model.cfg.d_model),
        "n_tokens": n_kept,
        "tokens_seen": n_seen,
        "massive_excluded": n_massive,
        "n_shards": n_shards,
        "mean_norm": norm_sum / max(n_kept, 1),
        "median_norm": float(torch.cat(norm_samples).median()) if norm_samples else 0.0,
        "harvest_seconds": elapsed,
        "tokens_per_second": n_seen / max(elapsed, 1e-9),
        "stopped_at_layer": grab.stop_at,
        "config": dataclasses.asdict(cfg),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def load_or_harvest(
    cfg: HarvestConfig, model: Any | None = None, device: str | torch.device = "cpu", progress: bool = True
) -> ActivationStore:
    """The cached store for ``cfg`` (harvesting it first if absent; ``model`` is loaded if needed).

    ``cfg.dtype="auto"`` is resolved for ``device`` first, so the cache key names the dtype used.
    """
    cfg = dataclasses.replace(cfg, dtype=runtime.resolve_dtype(cfg.dtype, device))
    folder = runtime.load_or_build(
        "activations", cfg, _STORE_VERSION, lambda d: harvest(cfg, d, model, device, progress)
    )
    return ActivationStore(folder)


# --------------------------------------------------------------------------- the store


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


@torch.no_grad()
def token_norms(model: Any, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual norms ``[b, s]`` at ``blocks.{layer}.hook_resid_post`` (BOS and massive tokens included)."""
    grabbed: dict[str, torch.Tensor] = {}

    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
        grabbed["x"] = x.detach()
        return x

    n_layers = int(model.cfg.n_layers)
    dev = next(model.parameters()).device
    model.run_with_hooks(tokens.to(dev), fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook)],
                         stop_at_layer=layer + 1 if layer + 1 < n_layers else None, return_type=None)
    return grabbed["x"].float().norm(dim=-1).cpu()


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
