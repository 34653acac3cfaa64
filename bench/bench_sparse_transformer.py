"""Training step time of a weight-sparse SparseTransformer over a dense one of the same shape.

Both models train on the same random token windows with the same optimizer; the sparse one also runs
the top-k projection of every weight matrix, bias and embedding after each step (at a kept fraction
of 0.05, i.e. after the anneal). The two are timed in interleaved rounds in one process, so machine
load affects both alike; the script prints the median step times and their ratio (target <= 1.25x),
both wall-clock and process CPU time (the latter is robust on a machine shared with other jobs).

Usage: ``python bench/bench_sparse_transformer.py [--steps N] [--rounds R] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from course_lib import circuits, weight_sparsity


def make(cfg: circuits.SparseTransformerConfig, device: str) -> tuple[circuits.SparseTransformer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = circuits.SparseTransformer(cfg).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.95))


def step(model, opt, batch, fraction: float | None) -> None:
    loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if fraction is not None:
        weight_sparsity.project_topk_(model.sparsified_parameters().values(), fraction)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved dense/sparse rounds")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    cfg = circuits.SparseTransformerConfig()  # the workshop shape: d_model 64, 2 layers, d_mlp 256, n_ctx 64
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.d_vocab, (args.batch, cfg.n_ctx + 1), generator=g).to(args.device)
               for _ in range(args.steps)]
    dense, dense_opt = make(cfg, args.device)
    sparse, sparse_opt = make(cfg, args.device)
    weight_sparsity.project_topk_(sparse.sparsified_parameters().values(), args.fraction)

    def timed(model, opt, fraction) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) per step."""
        if args.device == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        for b in batches:
            step(model, opt, b, fraction)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / len(batches), (time.process_time() - c) / len(batches)

    timed(dense, dense_opt, None)  # warm-up (imports, allocator)
    timed(sparse, sparse_opt, args.fraction)
    d_times, s_times = [], []
    for _ in range(args.rounds):
        d_times.append(timed(dense, dense_opt, None))
        s_times.append(timed(sparse, sparse_opt, args.fraction))
    d, s = statistics.median(t[0] for t in d_times), statistics.median(t[0] for t in s_times)
    dc, sc = statistics.median(t[1] for t in d_times), statistics.median(t[1] for t in s_times)
    nz = weight_sparsity.nonzero_fraction(sparse.sparsified_parameters().values())
    print(f"device={args.device} threads={torch.get_num_threads()} shape={cfg.d_model}x{cfg.n_layers}L "
          f"d_mlp={cfg.d_mlp} batch={args.batch}x{cfg.n_ctx} kept fraction={args.fraction} (measured {nz:.4f})")
    print(f"dense step  {d * 1e3:8.1f} ms wall, {dc * 1e3:8.1f} ms CPU (median of {args.rounds} rounds x {args.steps})")
    print(f"sparse step {s * 1e3:8.1f} ms wall, {sc * 1e3:8.1f} ms CPU (incl. top-k projection)")
    print(f"ratio sparse/dense = {s / d:.3f}x wall-clock, {sc / dc:.3f}x process CPU time (target <= 1.25x)")


if __name__ == "__main__":
    main()
