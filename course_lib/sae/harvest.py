"""Harvest residual-stream activations of a real LM into an on-disk store (notebook 03).

Token windows ``[n_seq, seq_len]`` (BOS first) go through the transformer-lens bridge with one forward
hook on ``blocks.{layer}.hook_resid_post``; the forward pass stops right after that block
(``run_with_hooks(..., stop_at_layer=layer + 1)``, supported by the 4.x bridge), so a middle layer
costs about half a full forward (:func:`course_lib.hooks.grab`). Of every window we keep positions
``1..seq_len-1``, less the massive tokens (the one rule, :func:`course_lib.hooks.keep_positions`):

* BOS (position 0) is left out: its residual norm is ~100x the others' (SmolLM2: ~23,000 vs ~180).
* *Massive-activation* tokens, whose norm exceeds ``massive_factor`` x the batch's median norm, are
  left out and counted (SmolLM2 layer 15: ~0.02% of tokens, but most of the variance).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from course_lib import cache, corpus, hooks, lm, runtime
from course_lib.sae.store import ActivationStore

STORE_VERSION = "act-store-v1"  # bump when what a store holds changes (e.g. how corpus.mixed_texts interleaves)


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
    massive_factor: float = hooks.MASSIVE_FACTOR  # exclude tokens with norm > massive_factor x median norm
    shard_tokens: int = 16_384  # rows per shard file
    corpus_root: str | None = None  # folder of text/code; None = Python's standard library
    prose_share: float = corpus.PROSE_SHARE  # share of characters from English prose (corpus.mixed_texts); 0: code only

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


def _need_windows(cfg: HarvestConfig) -> int:
    return math.ceil(cfg.n_tokens / (cfg.seq_len - 1) * 1.02) + 1


def _sourced(cfg: HarvestConfig) -> list[tuple[str, str]]:
    ccfg = corpus.CorpusConfig(root=cfg.corpus_root, max_chars=max(20_000, cfg.n_tokens * 6))
    return corpus.mixed_sources(ccfg, cfg.split, cfg.prose_share)


def prose_token_share(cfg: HarvestConfig, tokenizer: Any) -> float:
    """Share of the store's windows' tokens (BOS left out) that come from English prose, measured on the
    windows :func:`token_windows` cuts (no model needed)."""
    mask = corpus.window_sources(tokenizer, _sourced(cfg), cfg.seq_len)[: _need_windows(cfg), 1:]
    return float(mask.float().mean()) if mask.numel() else float("nan")


def token_windows(cfg: HarvestConfig, tokenizer: Any) -> torch.Tensor:
    """Windows ``[n_windows, seq_len]`` (BOS first) from the corpus, enough for ``cfg.n_tokens``.

    Reads ~6 characters per wanted token (code tokenises at ~3-4 chars/token, prose at ~4-5), plus a
    margin for excluded tokens, ``cfg.prose_share`` of them English prose; raises if the corpus is too small.
    """
    need_windows = _need_windows(cfg)
    win = corpus.bos_windows(tokenizer, [t for _, t in _sourced(cfg)], cfg.seq_len)
    if win.shape[0] < need_windows:
        raise ValueError(
            f"corpus gives {win.shape[0]} windows of {cfg.seq_len} tokens; {need_windows} needed "
            f"for n_tokens={cfg.n_tokens}"
        )
    return win[:need_windows]


class ResidHarvester:
    """Forward hook + early stop: ``harvester(tokens [b, s]) -> (acts [m, d], where [m, 2], n_massive)``.

    ``acts`` are the kept rows (BOS and massive tokens removed) in the model's dtype; ``where`` holds
    ``(row in tokens, position)``.
    """

    def __init__(self, model: Any, layer: int, massive_factor: float = 10.0, stop_early: bool = True):
        self.model = model
        self.layer = layer
        self.hook_name = hooks.resid_hook(layer)
        self.massive_factor = massive_factor
        self.stop_early = stop_early
        self.stop_at = hooks.stop_layer(model, [self.hook_name]) if stop_early else None

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        resid = hooks.grab(self.model, tokens, [self.hook_name], self.stop_early)[self.hook_name]
        x = resid[:, 1:, :]  # drop BOS: [b, s-1, d]
        b, s1, d = x.shape
        flat = x.reshape(b * s1, d)
        keep = hooks.keep_positions(resid, self.massive_factor)[:, 1:].reshape(-1)
        n_massive = int((~keep).sum())
        pos = torch.arange(1, s1 + 1, device=flat.device).repeat(b)
        row = torch.arange(b, device=flat.device).repeat_interleave(s1)
        where = torch.stack([row, pos], dim=1)[keep].to(torch.int32)
        return flat[keep].cpu(), where.cpu(), n_massive


def harvest(
    cfg: HarvestConfig, folder: Path, model: Any | None = None, device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the model over corpus windows and write the store's files into ``folder``; return meta."""
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
    folder = cache.load_or_build(
        "activations", cfg, STORE_VERSION, lambda d: harvest(cfg, d, model, device, progress)
    )
    return ActivationStore(folder)
