"""One torch thread against all cores, for the small programs that `runtime.faster_thread_count` decides on.

Baseline: all cores (``torch.set_num_threads(os.sched_getaffinity)``, what every notebook starts with).
Candidate: one thread. Two workloads, each timed in interleaved rounds in one process (machine load hits
both alike), median wall time per round:

* notebook 02's circuit search: ``circuits.find_circuit`` on the shipped reference set's first dense model, one task,
  the workshop's prompts and pruning settings (150 mask steps, 20 grid points);
* notebook 01's two costliest toy trainings (the 100 -> 20 sweep and the abs 20 -> 10 models), 400 steps each.

Prints both medians, their ratio, and what the library's probe (``runtime.faster_thread_count``) picks for
each, so a reader sees whether the probe's choice agrees with the full workload's.

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
    from course_lib.circuits import reference_training as rt

    tokenizer, data = rt.set_tokenizer("reference", "shipped")
    _, loaded = rt.obtain_set("reference", "shipped")
    dense = next(m for e, m in loaded if e["group"] == "dense" and e["model"]["d_model"] == 64)
    mcfg = dense.cfg
    train_stream = corpus.encode_texts(tokenizer, corpus.load_texts(corpus.config_for(data), "train")[:20])
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


TOY_WORKLOADS = {  # notebook 01's two costliest workshop cells, fewer steps
    "toy 100->20 sweep": (toy.ToyConfig(n_features=100, d_hidden=20, n_instances=16), 256, 0.7),
    "toy abs 20->10": (toy.ToyConfig(n_features=20, d_hidden=10, n_instances=9, kind="abs"), 1024, 0.8),
}


def toy_train(cfg: toy.ToyConfig, batch: int, decay: float, threads: int | None, steps: int = 400) -> None:
    """``steps`` training steps; ``threads=None`` lets the library choose (what the notebook does)."""
    torch.manual_seed(0)
    model = toy.ToyModel(cfg, toy.feature_probabilities(cfg.n_instances),
                         toy.importances(cfg.n_features, decay, cfg.n_instances))
    toy.train(model, toy.ToyTrainConfig(steps=steps, batch_size=batch, cpu_threads=threads))


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
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for n in (many, 1):
            with runtime.cpu_threads(n):
                t0 = time.perf_counter()
                search()
                times.setdefault(("circuit search", n), []).append(time.perf_counter() - t0)
            for name, (cfg, batch, decay) in TOY_WORKLOADS.items():
                t0 = time.perf_counter()
                toy_train(cfg, batch, decay, n)
                times.setdefault((name, n), []).append(time.perf_counter() - t0)
    picks = {"circuit search": runtime.faster_thread_count(("bench", "circuit"), probe)}
    for name, (cfg, batch, decay) in TOY_WORKLOADS.items():
        toy_train(cfg, batch, decay, None, steps=1)  # the library's own probe decides (and remembers)
        picks[name] = next(v for k, v in runtime._THREAD_CHOICE.items() if k[0] == "toy" and k[1] == cfg)
    for name in ["circuit search", *TOY_WORKLOADS]:
        a, b = statistics.median(times[(name, many)]), statistics.median(times[(name, 1)])
        print(f"{name:18s} {many} threads {a:6.2f} s   1 thread {b:6.2f} s   all/one = {a / b:.2f}x   "
              f"the library's probe picks {picks[name]}")


if __name__ == "__main__":
    main()
