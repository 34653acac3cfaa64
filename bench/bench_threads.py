"""One torch thread against all cores, for the small programs that `runtime.faster_thread_count` decides on.

Baseline: all cores (``torch.set_num_threads(os.sched_getaffinity)``, what every notebook starts with).
Candidate: one thread. Two workloads, each timed in interleaved rounds in one process (machine load hits
both alike), median wall time per round:

* notebook 02's circuit search: ``circuits.find_circuit`` on the shipped workshop dense model, one task,
  the workshop's prompts and pruning settings (150 mask steps, 20 grid points);
* notebook 01's toy training: 300 steps of the 5 -> 2 toy models (10 sparsities x 3 seeds).

Prints both medians, their ratio, and what ``runtime.faster_thread_count`` picks from its few-millisecond
probe, so a reader sees whether the probe's choice agrees with the full workload's.

    .venv/bin/python bench/bench_threads.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_lib import circuits, corpus, runtime, toy
from course_lib.circuits import pruning


def circuit_workload():
    mcfg = circuits.SparseTransformerConfig(d_model=64, n_layers=2, d_mlp=256, n_ctx=64)
    tokenizer, train_stream, _ = corpus.data_streams("workshop")
    models = circuits.checkpoints.load_reference_set(circuits.checkpoints.reference_dir("workshop"), mcfg, "cpu")
    if not models:
        raise SystemExit("no shipped workshop reference set for notebook 02")
    dense = models[0].model
    task = next(iter(circuits.TASKS))
    train = circuits.make_task_data(task, tokenizer, 64, 0, "train")
    test = circuits.make_task_data(task, tokenizer, 64, 0, "test")
    means = circuits.node_means(dense, corpus.windows(train_stream, mcfg.n_ctx)[:32])
    pcfg = circuits.PruneConfig(steps=150, target_loss=0.3, grid_points=20)
    search = lambda: pruning._find_circuit(dense, "dense", train, test, means, pcfg, False,  # noqa: E731
                                                    circuits.hard_mask, circuits.accept_circuit,
                                                    circuits.weight_edges)
    ones = {h: m.float() for h, m in circuits.all_kept(dense).items()}
    probe = lambda: circuits.task_loss(dense, train, ones, means)  # noqa: E731
    return search, probe


def toy_workload():
    cfg = toy.ToyConfig(n_features=5, d_hidden=2, n_instances=30)
    p = toy.feature_probabilities(10).repeat_interleave(3)
    imp = toy.importances(5, 0.9, 30)  # [30, 5]

    def train(threads: int):
        torch.manual_seed(0)
        toy.train(toy.ToyModel(cfg, p, imp), toy.ToyTrainConfig(steps=300, batch_size=1024, cpu_threads=threads))

    return train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    many = runtime.configure_threads()
    print(f"cores available: {many}; torch {torch.__version__}")
    if many < 2:
        print("one core: nothing to compare")
        return
    search, probe = circuit_workload()
    train = toy_workload()
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for n in (many, 1):
            with runtime.cpu_threads(n):
                t0 = time.perf_counter()
                search()
                times.setdefault(("circuit search", n), []).append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            train(n)
            times.setdefault(("toy training", n), []).append(time.perf_counter() - t0)
    picked = runtime.faster_thread_count(("bench", "circuit"), probe)
    for name in ("circuit search", "toy training"):
        a, b = statistics.median(times[(name, many)]), statistics.median(times[(name, 1)])
        print(f"{name:15s} {many} threads {a:6.2f} s   1 thread {b:6.2f} s   all/one = {a / b:.2f}x")
    print(f"runtime.faster_thread_count's probe picks {picked} thread(s) for the circuit search")


if __name__ == "__main__":
    main()
