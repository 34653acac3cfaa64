"""Benchmark: a toy-model sweep trained as one batched program vs a per-instance loop, same steps.

Baseline (named): the same 20 models trained one after the other, each as its own ``ToyModel`` with
``n_instances=1``, by the same training code (same Adam, batch, steps, thread count). Candidate: one
``ToyModel`` holding all instances (``torch.bmm`` over the instance dimension).

Cases (each prints its own ratio, measured in this one run):

* ``200->20 x 20`` — the sweep of the issue (p_i = 20^-linspace(0, 1, 20), uniform importance,
  batch 1024). On a CPU this is compute-bound: batching removes per-op overhead, not arithmetic.
* ``5->2 x 10`` — the small sweep of the notebook's first figure, where per-op overhead dominates.

    .venv/bin/python bench/bench_toy_models.py [--steps 200] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from course_lib import toy


def bench_case(F: int, H: int, n_inst: int, steps: int, batch: int, threads: int, dev: torch.device) -> float:
    p = toy.feature_probabilities(n_inst)
    imp = toy.importances(F, 1.0, n_inst)
    tc = toy.ToyTrainConfig(steps=steps, batch_size=batch, lr=1e-3, cpu_threads=threads)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    warm = toy.ToyTrainConfig(steps=5, batch_size=batch, cpu_threads=threads)
    toy.train_new(toy.ToyConfig(F, H, n_inst), p, imp, warm, device=dev)
    toy.train_new(toy.ToyConfig(F, H, 1), p[:1], imp[:1], warm, device=dev)
    sync()

    t0 = time.perf_counter()
    batched = toy.train_new(toy.ToyConfig(F, H, n_inst), p, imp, tc, seed=0, device=dev)
    sync()
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop_dpf = []
    for i in range(n_inst):
        m = toy.train_new(toy.ToyConfig(F, H, 1), p[i : i + 1], imp[i : i + 1], tc, seed=i, device=dev)
        loop_dpf.append(float(toy.dimensions_per_feature(m.W.detach())[0]))
    sync()
    t_loop = time.perf_counter() - t0

    dpf = toy.dimensions_per_feature(batched.W.detach()).cpu().tolist()
    print(f"\n== {F}->{H} x {n_inst} instances, batch {batch}, {steps} steps, device {dev}, threads {threads}")
    print(f"batched program  : {t_batched:8.2f} s  ({t_batched / steps * 1e3:.2f} ms/step for all instances)")
    print(f"per-instance loop: {t_loop:8.2f} s  ({t_loop / steps / n_inst * 1e3:.2f} ms/step per instance)")
    print(f"speedup (loop / batched): {t_loop / t_batched:.1f}x")
    print("D* batched:", " ".join(f"{d:.2f}" for d in dpf))
    print("D* loop   :", " ".join(f"{d:.2f}" for d in loop_dpf))
    return t_loop / t_batched


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for both (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    dev = torch.device(args.device)
    big = bench_case(200, 20, 20, args.steps, 1024, threads, dev)
    small = bench_case(5, 2, 10, args.steps * 5, 1024, threads, dev)
    print(f"\nSUMMARY speedup batched vs per-instance loop: 200->20 x 20: {big:.1f}x; 5->2 x 10: {small:.1f}x "
          f"(target >= 10x for 200->20)")


if __name__ == "__main__":
    main()
