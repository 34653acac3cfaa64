"""Harvest throughput: our hooked, early-stopped harvester against a bare forward of the same model/batch.

Prints tokens/s of (a) a bare forward stopped after the same block (no hooks), (b) our harvester
(hook + BOS/massive filtering + copy to CPU), (c) the whole ``sae.harvest.harvest`` loop (shards written),
(d) a full forward to the logits, and the overheads (b)/(a), (c)/(a). Measurements are interleaved and the
median of ``--repeats`` rounds is kept, so background load hits every variant alike. Target: <= 10%.

    .venv/bin/python bench/bench_harvest.py [--batches 4] [--batch-size 16] [--seq-len 128] [--layer 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from course_lib import lm, sae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    args = ap.parse_args()

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = lm.load_lm("smollm2", dtype=args.dtype, device=dev)
    n_tok = args.batches * args.batch_size * (args.seq_len - 1)
    cfg = sae.HarvestConfig(layer=args.layer, n_tokens=n_tok, seq_len=args.seq_len,
                            batch_size=args.batch_size, dtype=args.dtype, shard_tokens=4096)
    windows = sae.harvest.token_windows(cfg, model.tokenizer)
    batches = [windows[i * args.batch_size:(i + 1) * args.batch_size].to(dev) for i in range(args.batches)]
    harvester = sae.harvest.ResidHarvester(model, args.layer, cfg.massive_factor)

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def bare_stopped() -> None:
        for b in batches:
            model.run_with_hooks(b, fwd_hooks=[], stop_at_layer=args.layer + 1, return_type=None)
        sync()

    def ours() -> None:
        for b in batches:
            harvester(b)
        sync()

    def whole_loop() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            sae.harvest.harvest(cfg, Path(tmp), model=model, progress=False)
        sync()

    @torch.no_grad()
    def full_forward() -> None:
        for b in batches:
            model(b, return_type="logits")
        sync()

    variants = {"bare forward, stopped": bare_stopped, "our harvester": ours,
                "harvest() incl. shards": whole_loop, "full forward (logits)": full_forward}
    bare_stopped()  # warm-up
    ours()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    seen = args.batches * args.batch_size * args.seq_len
    print(f"device {dev}, {args.dtype}, layer {args.layer}, {args.batches} batches of "
          f"{args.batch_size}x{args.seq_len}, {torch.get_num_threads()} threads")
    for name, t in med.items():
        print(f"{name:>26}: {seen / t:8.0f} tokens/s  ({t:.2f} s)")
    base = med["bare forward, stopped"]
    print(f"overhead of our hooks over bare stopped forward: {100 * (med['our harvester'] / base - 1):+.1f}%")
    print(f"overhead of the whole harvest loop (shards written): {100 * (med['harvest() incl. shards'] / base - 1):+.1f}%")
    print(f"speed-up of stopping after block {args.layer} vs a full forward: {med['full forward (logits)'] / med['our harvester']:.2f}x")


if __name__ == "__main__":
    main()
