"""bfloat16 vs float32 on this machine: SmolLM2-135M forward throughput and a bare matmul.

Both dtypes run the same batches, interleaved, and the median of ``--repeats`` rounds is kept, so
background load hits both alike. Prints the CPU model, whether it computes bf16 natively
(``runtime.native_bf16``), tokens/s in each dtype, the ratio bf16/fp32, and what ``dtype="auto"``
picks here. Baseline: float32.

    .venv/bin/python bench/bench_dtype.py [--batch-size 2] [--seq-len 64] [--repeats 3]

The default batch is small because emulated bf16 can be 50x slower than float32 (AVX2-only CPUs).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from course_lib import corpus, lm, runtime


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    threads = runtime.configure_threads()
    print(f"machine: {cpu_model()}, {runtime.cpu_cores()} cores, torch {torch.__version__}, {threads} threads, "
          f"device {dev}, native bf16: {runtime.native_bf16(dev)}; dtype='auto' picks "
          f"{runtime.resolve_dtype('auto', dev)}")

    # a bare matmul of the shape SmolLM2's MLP sees (tokens x d_model @ d_model x d_mlp)
    a32, b32 = torch.randn(512, 576, device=dev), torch.randn(576, 1536, device=dev)
    flop = 2 * 512 * 576 * 1536
    mm = {}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = a32.to(dt), b32.to(dt)

        def twenty(a=a, b=b) -> None:
            for _ in range(20):
                c = a @ b
            if dev == "cuda":
                torch.cuda.synchronize()
            del c

        twenty()  # warm-up
        mm[name] = timed(twenty, args.repeats) / 20
    for name, s in mm.items():
        print(f"matmul 512x576 @ 576x1536 {name:8s}: {flop / s / 1e9:7.1f} GFLOP/s")
    print(f"matmul bf16/fp32 throughput ratio: {mm['float32'] / mm['bfloat16']:.2f}x (>1: bf16 faster)")

    models = {name: lm.load_lm("smollm2", dtype=name, device=dev) for name in ("float32", "bfloat16")}
    tok = models["float32"].tokenizer
    texts = corpus.load_texts(corpus.CorpusConfig(max_chars=200_000), "val")
    windows = corpus.windows(corpus.hf_token_stream(tok, texts), args.seq_len, bos_id=tok.bos_token_id)
    batch = windows[: args.batch_size].to(dev)
    n_tok = batch.numel()
    rounds: dict[str, list[float]] = {k: [] for k in models}

    @torch.no_grad()
    def forward(m) -> None:
        m(batch, return_type="logits")
        if dev == "cuda":
            torch.cuda.synchronize()

    for m in models.values():
        forward(m)  # warm-up
    for _ in range(args.repeats):  # interleaved rounds
        for name, m in models.items():
            t0 = time.perf_counter()
            forward(m)
            rounds[name].append(time.perf_counter() - t0)
    tps = {k: n_tok / statistics.median(v) for k, v in rounds.items()}
    for name, v in tps.items():
        print(f"SmolLM2-135M forward {name:8s}: {v:8.0f} tokens/s ({args.batch_size} x {args.seq_len} tokens)")
    print(f"forward bf16/fp32 throughput ratio: {tps['bfloat16'] / tps['float32']:.2f}x (>1: bf16 faster)")


if __name__ == "__main__":
    main()
