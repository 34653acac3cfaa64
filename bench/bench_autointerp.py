"""Benchmark: the "all at once" simulator and the detection scorer with the local SmolLM2-135M.

Measures, in one run and interleaved (A B A B ...) so that load from other jobs hits both alike:

* simulation of one unit (10 records x 64 tokens, one batched forward) vs a **bare forward** of the
  transformer body over exactly the same prompt tokens (same padded batch) -- the floor; target
  ratio <= 1.3 and < 5 s;
* the same against a full forward with the ``[batch, L, vocab]`` logits (what a naive
  implementation would pay);
* units/s for simulation and for detection, and the share of each in the model's forward pass;
* the shared-prefix forward (:meth:`LocalLM.hidden`: the prompts' common prefix once, then the
  suffixes) against the plain padded forward of the same prompts (the baseline, sharing disabled),
  for the simulation prompts and for detection + fuzzing's yes/no questions; and one batched greedy
  generation of ``--units`` explanations against generating them one at a time;
* units/s of the whole local path, :func:`pipeline.explain_and_score` (local SmolLM2 explains, then
  every scorer but the embedder runs), over ``--units`` units with a resumable JSONL, and the
  seconds per unit of each stage;
* units/s of the server path over ``--server-units`` of the same units: a real llama.cpp server on 127.0.0.1
  (``.llamacpp-venv``, :mod:`course_lib.autointerp.llamacpp`) serving the same SmolLM2 (Q4_1 GGUF) explains
  over chat, simulates over completions (``echo`` + top-15 log-probabilities, the paper's N) and answers the
  detection and fuzzing questions over chat (:meth:`pipeline.Scorers.from_server`), one request at a time.

Run: ``.venv/bin/python bench/bench_autointerp.py [--repeats 3] [--records 10] [--tokens 64] [--units 8]
[--server-units 2]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from course_lib import corpus
from course_lib.autointerp import (
    backends,
    explainers,
    llamacpp,
    localmodel,
    pipeline,
    records,
    scoring,
    simulator,
    units,
)

ROOT = Path(__file__).resolve().parent.parent
LLAMACPP_VENV = ROOT / os.environ.get("LLAMACPP_VENV", ".llamacpp-venv")


def _unit(lm: localmodel.LocalLM, n_records: int, n_tokens: int) -> records.UnitRecords:
    tok = lm.tokenizer
    texts = corpus.load_texts(corpus.CorpusConfig(max_chars=200_000), "val")
    win = corpus.bos_windows(tok, texts, n_tokens + 1)
    def_id = tok(" def", add_special_tokens=False)["input_ids"]
    acts = units.TokenSource.for_tokens(def_id)(win)
    half = n_records // 2
    cfg = records.RecordConfig(n_train=2, n_test_top=half, n_test_random=n_records - half)
    return records.build_unit_records("token/ def", "token", acts[:, :, 0], win, tok, cfg,
                                      torch.Generator().manual_seed(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--records", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--units", type=int, default=8, help="units for the explain_and_score measurement (0: skip)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    ap.add_argument("--server-units", type=int, default=2, help="units for the server path (0: skip)")
    args = ap.parse_args()

    lm = localmodel.load_local_lm("smollm2", dtype=args.dtype)
    ur = _unit(lm, args.records, args.tokens)
    sim = simulator.AllAtOnceSimulator(lm)
    yn = scoring.YesNoScorer(lm)
    expl = 'the token " def".'
    seqs, reads = sim.prompts(expl, ur.test)
    n_prompt = sum(len(s) for s in seqs)
    det_seqs = yn.questions([scoring.DETECT_Q.format(explanation=expl, text=scoring.record_text(r))
                             for r in ur.test])

    def full_forward() -> None:
        L = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), L), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        with torch.no_grad():
            lm.model(input_ids=ids, attention_mask=mask)

    timings: dict[str, list[float]] = {k: [] for k in ("simulate", "bare", "full", "prompt", "detect", "det_fwd",
                                                       "intruder", "surprisal", "plain", "det_plain")}

    def plain(s: list[list[int]]) -> None:  # the baseline: one padded forward, no shared prefix
        keep = localmodel.MIN_SHARED_PREFIX
        localmodel.MIN_SHARED_PREFIX = 10**9
        try:
            lm.hidden(s)
        finally:
            localmodel.MIN_SHARED_PREFIX = keep
    sim.simulate(expl, ur.test)  # warm-up
    lm.hidden(det_seqs)
    for _ in range(args.repeats):
        for name, fn in (
            ("simulate", lambda: sim.simulate(expl, ur.test)),
            ("bare", lambda: lm.hidden(seqs)),
            ("prompt", lambda: sim.prompts(expl, ur.test)),
            ("full", full_forward),
            ("detect", lambda: yn.detection(expl, ur)),
            ("det_fwd", lambda: lm.hidden(det_seqs)),
            ("plain", lambda: plain(seqs)),
            ("det_plain", lambda: plain(det_seqs)),
            ("intruder", lambda: scoring.intruder_score(lm, ur, torch.Generator().manual_seed(0))),
            ("surprisal", lambda: scoring.surprisal_score(lm, expl, ur)),
        ):
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}
    print(f"unit: {len(ur.test)} records x {args.tokens} tokens -> {n_prompt} prompt tokens "
          f"(batch {len(seqs)} x up to {max(len(s) for s in seqs)}), dtype {args.dtype}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"simulation (all at once, 1 batched forward): {med['simulate']:.2f} s  -> {1 / med['simulate']:.3f} units/s")
    print(f"bare body forward, same tokens (floor):      {med['bare']:.2f} s")
    print(f"full forward with [b, L, vocab] logits:      {med['full']:.2f} s")
    print(f"RATIO simulation / bare forward = {med['simulate'] / med['bare']:.2f}x  (target <= 1.3x)")
    print(f"RATIO simulation / full forward = {med['simulate'] / med['full']:.2f}x")
    print(f"prompt building: {med['prompt'] * 1000:.1f} ms; share of simulation in the forward pass: "
          f"{min(1.0, med['bare'] / med['simulate']):.0%}")
    print(f"detection ({len(det_seqs)} yes/no questions, {sum(map(len, det_seqs))} tokens, 1 forward): "
          f"{med['detect']:.2f} s -> {1 / med['detect']:.3f} units/s; share in the forward pass: "
          f"{min(1.0, med['det_fwd'] / med['detect']):.0%}")
    print(f"shared prefix: simulation prompts {localmodel.shared_prefix_length(seqs)} of up to "
          f"{max(map(len, seqs))} tokens, yes/no questions {localmodel.shared_prefix_length(det_seqs)} of "
          f"{max(map(len, det_seqs))}")
    print(f"RATIO plain padded forward / shared-prefix forward: simulation {med['plain'] / med['bare']:.2f}x, "
          f"detection {med['det_plain'] / med['det_fwd']:.2f}x (baseline: the plain forward)")
    print(f"delphi's cheaper scorers: intruder {med['intruder']:.2f} s/unit, surprisal {med['surprisal']:.2f} s/unit")
    print(f"absolute target: simulation < 5 s: {'met' if med['simulate'] < 5 else 'NOT met'} on this machine")
    if args.units > 0:
        urs = [dataclasses.replace(ur, unit=f"token/ def#{i}") for i in range(args.units)]
        ex = explainers.LocalLLMExplainer(lm, max_new_tokens=24)
        t0 = time.perf_counter()
        one = [ex.explain(u) for u in urs]
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        many = ex.explain_many(urs)
        t_many = time.perf_counter() - t0
        print(f"explanations of {args.units} units: one at a time {t_one:.1f} s, one batched generate {t_many:.1f} s: "
              f"RATIO {t_one / t_many:.2f}x (baseline: one at a time); same text for "
              f"{sum(a.raw == b.raw for a, b in zip(one, many))}/{args.units}")
        scorers = pipeline.Scorers.from_local(lm)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.jsonl"
            t0 = time.perf_counter()
            res = pipeline.explain_and_score(ex, scorers, urs, progress=False, out=out, batch_size=4)
            wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            pipeline.explain_and_score(ex, scorers, urs, progress=False, out=out)  # resumed: nothing to do
            resumed = time.perf_counter() - t0
        stages = {k: statistics.mean(r.extra.get("seconds", {}).get(k, 0.0) for r in res)
                  for k in ("simulation", "detection_and_fuzzing")}
        print(f"explain_and_score, local path ({args.units} units, explain + simulate + detect + fuzz): "
              f"{wall:.1f} s -> {args.units / wall:.3f} units/s, {wall / args.units:.2f} s/unit "
              f"(CPU seconds per unit: simulation {stages['simulation']:.2f}, detection+fuzzing {stages['detection_and_fuzzing']:.2f}; "
              f"explanation the rest); failures {sum(pipeline.is_failure(r) for r in res)}; "
              f"rerun on the finished JSONL: {resumed * 1000:.0f} ms")
    if args.server_units > 0:
        server_path(lm, ur, args.server_units)


def server_path(lm: localmodel.LocalLM, ur: records.UnitRecords, n_units: int) -> None:
    """units/s of explain -> simulate -> detect + fuzz through a real llama.cpp server (one request at a time)."""
    python = llamacpp.venv_python(LLAMACPP_VENV)
    if python is None:
        print(f"server path skipped: no complete {LLAMACPP_VENV} (bash bench/llamacpp_venv.sh builds it)")
        return
    urs = [dataclasses.replace(ur, unit=f"token/ def#s{i}") for i in range(n_units)]
    with tempfile.TemporaryDirectory() as tmp, llamacpp.start_server(python, Path(tmp) / "server.stderr") as srv:
        cfg = backends.ChatConfig(base_url=srv.base_url, model=llamacpp.MODEL_ALIAS, api_key_env=None, timeout_s=600,
                                  max_retries=1, concurrency=1, max_tokens=24)
        client = backends.ChatClient(cfg)
        scorers = pipeline.Scorers.from_server(client, tokenizer=lm.tokenizer, seed=0)
        t0 = time.perf_counter()
        res = pipeline.explain_and_score(explainers.HTTPExplainer(client), scorers, urs, progress=False,
                                         out=Path(tmp) / "server.jsonl", batch_size=4)
        wall = time.perf_counter() - t0
    print(f"explain_and_score, server path ({n_units} units, llama.cpp server on 127.0.0.1, 1 request at a time): "
          f"{wall:.1f} s -> {n_units / wall:.3f} units/s, {wall / n_units:.2f} s/unit (wall time: the work is in the "
          f"server process); failures {sum(pipeline.is_failure(r) for r in res)}")


if __name__ == "__main__":
    main()
