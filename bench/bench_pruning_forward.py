"""Notebook 02's circuit search: (1) the last block at each prompt's last position only, against the full
forward; (2) several searches in forked one-thread workers (``runtime.parallel_calls``), against one by one.

Baseline: ``model(tokens, return_type="final")`` indexed at ``last`` (every position through every block).
Candidate: ``model(tokens, return_type="final", last=last)`` (the last block computes only the positions the
task loss reads). Workload: notebook 02's mask learning (``pruning.learn_masks``: hard masks on every node,
mean ablation, forward and backward) on a shipped reference model, for the shortest and the longest task
prompts, 64 prompts, one thread. Rounds alternate baseline and candidate in one process; prints the median
seconds of each and their ratio, and checks that both give the same final residual.

Part (2): 4 whole ``find_circuit`` searches (notebook 02's workshop settings: 48 prompts, 150 mask steps) on
one model, serial in this process (baseline) against ``runtime.parallel_calls`` with one worker per core;
prints both wall times and the ratio, and checks that the circuits are identical.

    .venv/bin/python bench/bench_pruning_forward.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time

import torch

from course_lib import corpus, runtime
from course_lib.circuits import pruning, tasks
from course_lib.circuits import reference_training as rt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tok, _ = rt.set_tokenizer("reference", "shipped")
    _, loaded = rt.obtain_set("reference", "shipped")
    name, model = next((e["name"], m) for e, m in loaded if e["train"]["target_fraction"] < 1)
    means = {s.hook: torch.zeros(s.size) for s in pruning.node_sites(model)}
    pcfg = pruning.PruneConfig(steps=a.steps)
    full_forward = pruning.masked_final_last

    def baseline(model, data, masks, means):
        hooks = [(h, pruning._ablation_hook(m, means[h])) for h, m in masks.items()]
        with model.hooks(fwd_hooks=hooks):
            final = model(data.tokens, return_type="final")
        return final[torch.arange(final.shape[0]), data.last]

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread; model {name}; "
          f"{a.steps} mask steps per round")
    for task in ("quote_close", "bracket_depth"):
        data = tasks.make_task_data(task, tok, 64, 0, "train")
        ones = {s.hook: torch.ones(s.size) for s in pruning.node_sites(model)}
        with torch.no_grad():
            same = (baseline(model, data, ones, means) - full_forward(model, data, ones, means)).abs().max()
        times: dict[str, list[float]] = {"baseline": [], "candidate": []}
        for _ in range(a.rounds):
            for label, fn in (("baseline", baseline), ("candidate", full_forward)):
                pruning.masked_final_last = fn
                t0 = time.perf_counter()
                pruning.learn_masks(model, data, means, pcfg)
                times[label].append(time.perf_counter() - t0)
        pruning.masked_final_last = full_forward
        b, c = statistics.median(times["baseline"]), statistics.median(times["candidate"])
        print(f"{task:14s} prompts of {data.tokens.shape[1]} tokens: full forward {b:.2f} s, last position only "
              f"{c:.2f} s -> {b / c:.2f}x (max |difference| of the final residual {float(same):.1e})")

    # (2) four searches, serial vs forked workers
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    texts = corpus.load_texts(corpus.config_for("full"), "train")[:20]
    means = pruning.node_means(model, corpus.windows(corpus.encode_texts(tok, texts), model.cfg.n_ctx)[:32])
    pcfg = pruning.PruneConfig(steps=150, target_loss=0.3, grid_points=20, train_target_ratio=0.85)
    calls = [functools.partial(pruning.find_circuit, model, name, tasks.make_task_data(t, tok, 48, 0, "train"),
                               tasks.make_task_data(t, tok, 48, 0, "test"), means, pcfg)
             for t in ("quote_close", "bracket_type", "self_or_cls", "bracket_depth")]
    t0 = time.perf_counter()
    serial = runtime.parallel_calls(calls, workers=1)
    t1 = time.perf_counter()
    par = runtime.parallel_calls(calls)
    t2 = time.perf_counter()
    same = all(a.n_nodes == b.n_nodes and a.test_loss == b.test_loss for a, b in zip(serial, par))
    print(f"4 searches on {len(os.sched_getaffinity(0))} cores: serial {t1 - t0:.1f} s, parallel_calls {t2 - t1:.1f} s "
          f"-> {(t1 - t0) / (t2 - t1):.2f}x (identical circuits: {same})")


if __name__ == "__main__":
    main()
