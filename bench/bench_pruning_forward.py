"""The pruning's forward pass: the last block at each prompt's last position only, against the full forward.

Baseline: ``model(tokens, return_type="final")`` indexed at ``last`` (every position through every block).
Candidate: ``model(tokens, return_type="final", last=last)`` (the last block computes only the positions the
task loss reads). Workload: notebook 02's mask learning (``pruning.learn_masks``: hard masks on every node,
mean ablation, forward and backward) on a shipped reference model, for the shortest and the longest task
prompts, 64 prompts, one thread. Rounds alternate baseline and candidate in one process; prints the median
seconds of each and their ratio, and checks that both give the same final residual.

    .venv/bin/python bench/bench_pruning_forward.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

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


if __name__ == "__main__":
    main()
