"""Resumable training of notebook 02's reference set on a CPU (hours, in the background).

A *set* is an ordered list of :class:`RunSpec` (one model each: architecture, training config, corpus
profile). :func:`train_set` trains what is missing, resumes what is partial and skips what is done:
every run keeps one checkpoint file ``<root>/<set>/<run>/state.safetensors`` holding the model, the
Adam state (``exp_avg``, ``exp_avg_sq``, ``step`` per parameter), the batch generator's RNG state, the
step reached, the log and the wall/CPU time spent, written atomically every ``checkpoint_s`` seconds.
Training is a pure function of (spec, thread count, machine): the batch at step ``t`` depends only on
the generator state, which is saved, so a run interrupted and resumed any number of times ends with the
same weights, bit for bit, as one trained straight through (tests/circuits/test_reference_training.py).

The step is the one of :func:`course_lib.circuits.training.train` (Adam, warmup then linear decay,
global grad-norm clip, top-k projection of every sparsified tensor after the step with the kept
fraction annealed from 1 to ``target_fraction``). Every ``eval_every`` steps the run records the
validation loss (``eval_windows`` consecutive held-out windows) and the full model's two-token task
loss on each task of :data:`course_lib.circuits.tasks.SUITE`'s *test* prompts (chance is ln 2 = 0.693).

When every run is done, :func:`export_set` writes each model with
:func:`course_lib.circuits.checkpoints.save_compact` (sparse tensors as indices + values) and a
``manifest.json`` (per model: config, steps, wall and CPU time, machine, final losses, per-task
held-out losses, the evaluation curve; the command that regenerates the set).

Command line (what the background job runs; ``--threads 1`` and ``nice -n 19`` leave the CPU to others)::

    python -m course_lib.circuits.reference_training --set reference --threads 1 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from course_lib import cache, corpus, weight_sparsity
from course_lib.circuits import pruning
from course_lib.circuits.checkpoints import FORMAT, load_compact, save_compact
from course_lib.circuits.tasks import SUITE, TaskData, make_task_data, task_corpus
from course_lib.circuits.training import (
    EMBEDDING_PARAMETERS,
    CircuitTrainConfig,
    eval_loss,
    sparse_groups,
    train_step,
    val_windows,
)
from course_lib.circuits.transformer import SparseTransformer, SparseTransformerConfig

log = logging.getLogger(__name__)
STATE = "state.safetensors"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
VERSION = "reference-training-v1"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    name: str  # file-safe id, e.g. "dense-d64-16k-s0"
    group: str  # what the run is for: "dense", "sparse 0.1", "wide sparse 0.05", ...
    model: SparseTransformerConfig  # architecture
    train: CircuitTrainConfig  # steps, batch, lr, kept fraction, seed
    data: str = "full"  # corpus profile of the training/validation streams (corpus.data_streams)
    eval_every: int = 1000  # steps between evaluations (validation + held-out task losses)
    eval_windows: int = 128  # validation windows per evaluation
    task_prompts: int = 128  # held-out prompts per task per evaluation (seed 0, "test" split)
    task_mix: float = 0.0  # share of training tokens from task-template text (tasks.task_corpus; 0: corpus only)


# --------------------------------------------------------------------------- the sets

WORKSHOP_ARCH = SparseTransformerConfig(d_model=64, n_layers=2, d_mlp=256, n_ctx=64)


def _arch(d_model: int) -> SparseTransformerConfig:
    """The workshop architecture (2 layers, head size 16, MLP 4x) at width ``d_model``."""
    return dataclasses.replace(WORKSHOP_ARCH, d_model=d_model, d_mlp=4 * d_model)


def _spec(group: str, d_model: int, steps: int, frac: float, seed: int, batch: int = 16, data: str = "full",
          eval_every: int | None = None, task_mix: float = 0.0) -> RunSpec:
    kind = "dense" if frac >= 1 else f"sparse{frac:g}"
    name = f"{kind}-d{d_model}-{steps // 1000}k-s{seed}" if steps >= 1000 else f"{kind}-d{d_model}-{steps}-s{seed}"
    if task_mix:
        name += f"-mix{task_mix * 100:g}"
    t = CircuitTrainConfig(steps=steps, batch_size=batch, target_fraction=frac, seed=seed)
    return RunSpec(name, group, _arch(d_model), t, data, eval_every or max(1, min(1000, steps // 8)), task_mix=task_mix)


REFERENCE_TASK_MIX = 0.05  # share of task-template text in the reference set's training stream


def reference_set(seeds: tuple[int, ...] = (0, 1, 2), task_mix: float = REFERENCE_TASK_MIX) -> list[RunSpec]:
    """The reference set, most useful first (one seed of every config, then the other seeds).

    - the dense frontier: width 64 at 2k, 4k, 8k steps and width 32 at 1k and 4k (five points of
      pretraining loss, reaching up to the sparse models' losses);
    - weight-sparse at width 64, kept fractions 0.1, 0.2 and 0.4, 16k steps (the anneal to the target ends
      at 8k; the pilot's sparse 0.1 model lost 1.2 nats of validation loss over the anneal and was still
      recovering at its end, so sparse runs get twice the dense steps). 0.4 was added after seed 0 of the
      others: sparse 0.1 ended at validation loss 4.27 and 0.2 at 3.70, where the dense models solve at most
      1-2 tasks with a held-out-valid circuit; the dense curve has circuits for 4 tasks only below about
      3.4 (bench/RESULTS.md, the pilot of the reference set);
    - the paper's second claim: width 128 at kept fraction 0.04, which has the same number of nonzero
      weights (about 36.5k; the embeddings dominate) as width 64 at 0.1 (:func:`nonzero_count`), 16k steps.

    Batch 16 windows of 64 tokens from the ``full`` profile's stream (3.5M tokens of the standard library,
    so 16k steps x 1024 tokens is 4.6 passes) with ``task_mix`` of task-template text appended
    (:func:`mixed_stream`; held-out test prompts excluded): in the pilot, models trained on the corpus
    alone solved 2-3 of the 7 tasks (bench/RESULTS.md). Validation loss is on the corpus alone.
    Timings and the size of the export: bench/RESULTS.md.
    """
    configs = [
        ("dense", 64, 8000, 1.0), ("sparse 0.1", 64, 16000, 0.1), ("sparse 0.2", 64, 16000, 0.2),
        ("sparse 0.4", 64, 16000, 0.4),
        ("dense", 64, 2000, 1.0), ("dense", 64, 4000, 1.0), ("dense", 32, 4000, 1.0), ("dense", 32, 1000, 1.0),
        ("wide sparse 0.04", 128, 16000, 0.04),
    ]
    return ([_spec(g, d, s, f, seed, task_mix=task_mix) for seed in seeds for g, d, s, f in configs]
            + equal_data_set(seeds, task_mix) + sparser_set(seeds, task_mix))


EQUAL_DATA_WIDTHS = (16, 32, 48, 64)  # the dense width sweep trained as long as the sparse models
EQUAL_DATA_STEPS = 16000


def equal_data_set(seeds: tuple[int, ...] = (0, 1, 2), task_mix: float = REFERENCE_TASK_MIX) -> list[RunSpec]:
    """Dense models of widths 16-64 trained the sparse models' 16k steps on the same mixed stream.

    At equal validation loss a 16k-step sparse model has seen 2-16x more task text than a dense model stopped
    early (the task mix is a fixed share of every batch), so "matched loss" alone mixes capability with
    exposure. These runs see exactly the sparse models' data; their widths (head size 16, so multiples of 16)
    spread their losses over the sparse models' range. Part of :func:`reference_set` (appended last)."""
    return [_spec("dense, equal data", d, EQUAL_DATA_STEPS, 1.0, seed, task_mix=task_mix)
            for seed in seeds for d in EQUAL_DATA_WIDTHS]


SPARSER_STEPS = 16000
SPARSER_EMBED_FRACTION = 0.1


def sparser_set(seeds: tuple[int, ...] = (0, 1, 2), task_mix: float = REFERENCE_TASK_MIX) -> list[RunSpec]:
    """Sparser models, closer to the paper's regime: kept fraction 0.05 at width 96 and 0.02 at width 128.

    The same 16k steps and data as every 16k run of the set, but a geometric anneal that ends at a quarter of
    training (:func:`course_lib.weight_sparsity.kept_fraction_geometric`; 12k steps after it, against 8k for the
    linear-anneal models), and the embeddings (``W_E``, ``W_U``, ``b_U``) held at one density, 0.1, in both, so
    that the embeddings do not decide how many nonzero weights the blocks get. Part of :func:`reference_set`."""
    out = []
    for seed in seeds:
        for d, frac in ((96, 0.05), (128, 0.02)):
            spec = _spec(f"sparse {frac:g}, width {d}", d, SPARSER_STEPS, frac, seed, task_mix=task_mix)
            t = dataclasses.replace(spec.train, anneal_end=0.25, anneal_shape="geometric",
                                    embed_fraction=SPARSER_EMBED_FRACTION)
            out.append(dataclasses.replace(spec, name=spec.name.replace("-16k-", "-16k-geo-"), train=t))
    return out


def pilot_set() -> list[RunSpec]:
    """The pilot behind :func:`reference_set`'s sizes: one seed, evaluated often (bench/RESULTS.md)."""
    return [
        _spec("dense", 64, 8000, 1.0, 0, eval_every=500),
        _spec("sparse 0.1", 64, 8000, 0.1, 0, eval_every=500),
        _spec("dense", 32, 4000, 1.0, 0, eval_every=500),
        _spec("dense", 128, 4000, 1.0, 0, eval_every=500),
        _spec("sparse 0.2", 64, 8000, 0.2, 0, eval_every=500),
        _spec("dense", 64, 2000, 1.0, 0, eval_every=250, task_mix=0.02),
        _spec("sparse 0.1", 64, 4000, 0.1, 0, eval_every=250, task_mix=0.02),
    ]


def smoke_set() -> list[RunSpec]:
    """What notebook 02's smoke profile trains live (seconds): two dense lengths and one sparse model, width 32,
    on the smoke corpus, so that every step of the frontier analysis runs (with no claim about the result)."""
    return [_spec("dense" if frac >= 1 else f"sparse {frac:g}", 32, steps, frac, 0, batch=8, data="smoke",
                  eval_every=steps // 2, task_mix=REFERENCE_TASK_MIX)
            for steps, frac in ((30, 1.0), (60, 1.0), (60, 0.2))]


def tiny_set() -> list[RunSpec]:
    """Two small runs on the smoke corpus (tests, and a quick check of the command)."""
    arch = SparseTransformerConfig(d_model=32, n_layers=1, d_mlp=64, n_ctx=32)
    return [
        RunSpec("dense-tiny", "dense", arch, CircuitTrainConfig(steps=24, batch_size=4, seed=0), "smoke", 8, 8, 16),
        RunSpec("sparse-tiny", "sparse 0.2", arch,
                CircuitTrainConfig(steps=24, batch_size=4, target_fraction=0.2, seed=0), "smoke", 8, 8, 16),
    ]


SETS: dict[str, Callable[[], list[RunSpec]]] = {"reference": reference_set, "pilot": pilot_set, "tiny": tiny_set,
                                                "smoke": smoke_set, "equal-data": equal_data_set,
                                                "sparser": sparser_set}


def export_bytes(spec: RunSpec) -> int:
    """Size of the model's ``save_compact`` file, to within the header: 4 bytes per stored float, 8 per
    nonzero of a tensor stored as indices + values (at most half nonzero)."""
    torch.manual_seed(0)
    m = SparseTransformer(spec.model)
    sparse = set(m.sparsified_parameters())
    total = 0
    for name, p in m.named_parameters():
        f = _final_fraction(spec, name)
        k = weight_sparsity.keep_count(p.numel(), f) if name in sparse and f < 1 else p.numel()
        total += 8 * k if k <= p.numel() // 2 else 4 * p.numel()
    return total


def nonzero_count(spec: RunSpec) -> int:
    """Nonzero weights of the sparsified tensors at the end of training (``keep_count`` per tensor)."""
    torch.manual_seed(0)
    m = SparseTransformer(spec.model)
    return sum(weight_sparsity.keep_count(p.numel(), _final_fraction(spec, n)) if _final_fraction(spec, n) < 1
               else p.numel() for n, p in m.sparsified_parameters().items())


def _final_fraction(spec: RunSpec, name: str) -> float:
    """The kept fraction parameter ``name`` ends training at (``embed_fraction`` for the embeddings when set)."""
    t = spec.train
    return t.embed_fraction if t.embed_fraction is not None and name in EMBEDDING_PARAMETERS else t.target_fraction


# --------------------------------------------------------------------------- state and checkpoints


@dataclasses.dataclass
class RunState:
    """Everything a run needs to continue exactly where it stopped."""

    spec: RunSpec
    model: SparseTransformer
    opt: torch.optim.Adam
    gen: torch.Generator  # draws the batch offsets
    step: int  # optimizer steps done
    log: dict[str, list]  # "step", "loss", "kept_fraction" (train); "eval": list of dicts
    wall_s: float  # wall-clock seconds spent training so far (all sessions)
    cpu_s: float  # process CPU seconds spent training so far

    @property
    def done(self) -> bool:
        return self.step >= self.spec.train.steps


def spec_key(spec: RunSpec) -> dict:
    return {"version": VERSION, **cache.jsonable(dataclasses.asdict(spec))}


def _plain(value: object) -> object:
    """``value`` as the JSON a checkpoint stores (dataclasses as dicts, tuples as lists)."""
    return json.loads(json.dumps(cache.jsonable(dataclasses.asdict(value) if dataclasses.is_dataclass(value)
                                                else value)))


def _without_defaults(value: object, saved: object) -> tuple[object, object]:
    """``(value, saved)`` as plain JSON values, leaving out every dataclass field whose value is its
    default and which ``saved`` (the JSON of an older spec) lacks or holds at that default."""
    if dataclasses.is_dataclass(value) and isinstance(saved, dict):
        cur, old = {}, dict(saved)
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
            jv = _plain(v)
            if default is not dataclasses.MISSING and jv == _plain(default) \
                    and (f.name not in old or old[f.name] == jv):
                old.pop(f.name, None)
                continue
            cur[f.name], sub = _without_defaults(v, old.get(f.name))
            if f.name in old:
                old[f.name] = sub
        return cur, old
    return _plain(value), saved


def same_spec(saved: dict, spec: RunSpec) -> bool:
    """Whether ``saved`` (a checkpoint's spec) is ``spec``. Fields added to the configs since the checkpoint
    was written count as equal when ``spec`` has them at their defaults, so adding an option does not throw
    away runs in progress."""
    if saved.get("version") != VERSION:
        return False
    cur, old = _without_defaults(spec, {k: v for k, v in saved.items() if k != "version"})
    return cur == old


def new_state(spec: RunSpec) -> RunState:
    """Step 0: the model initialised with ``torch.manual_seed(seed)``, a fresh Adam and batch generator."""
    torch.manual_seed(spec.train.seed)
    model = SparseTransformer(spec.model)
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr, betas=spec.train.betas)
    gen = torch.Generator().manual_seed(spec.train.seed)
    return RunState(spec, model, opt, gen, 0, {"step": [], "loss": [], "kept_fraction": [], "eval": []}, 0.0, 0.0)


def save_state(st: RunState, path: str | Path) -> None:
    """Write the run's state to one safetensors file, atomically (tensors + JSON metadata; no pickle)."""
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in st.model.state_dict().items()}
    osd = st.opt.state_dict()
    for i, s in osd["state"].items():
        for k, v in s.items():
            tensors[f"opt.{i}.{k}"] = v.detach().contiguous().clone()
    tensors["rng.gen"] = st.gen.get_state()
    meta = {"spec": json.dumps(spec_key(st.spec)), "step": str(st.step), "log": json.dumps(st.log),
            "param_groups": json.dumps(osd["param_groups"]), "wall_s": repr(st.wall_s), "cpu_s": repr(st.cpu_s)}
    with cache.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_state(spec: RunSpec, path: str | Path) -> RunState:
    """The state saved by :func:`save_state`; ``ValueError`` if it was saved for another spec."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if not same_spec(json.loads(meta["spec"]), spec):
        raise ValueError(f"{path} holds a run of another spec; remove it to retrain")
    st = new_state(spec)
    st.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    st.opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    st.gen.set_state(tensors["rng.gen"])
    st.step, st.log = int(meta["step"]), json.loads(meta["log"])
    st.wall_s, st.cpu_s = float(meta["wall_s"]), float(meta["cpu_s"])
    return st


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class EvalData:
    """What an evaluation needs: validation windows and each task's held-out prompts."""

    val: torch.Tensor  # [n, n_ctx + 1]
    tasks: dict[str, TaskData]


def eval_data(spec: RunSpec, tokenizer, val_stream: torch.Tensor) -> EvalData:
    """Validation windows and the held-out prompts of every task of the suite that fits ``tokenizer``
    (the smoke corpus's BPE lacks some answers as single tokens; the workshop and full ones have all)."""
    tasks = {}
    for t in SUITE:
        try:
            tasks[t] = make_task_data(t, tokenizer, spec.task_prompts, 0, "test")
        except ValueError:
            continue
    return EvalData(val_windows(val_stream, spec.model.n_ctx, spec.eval_windows), tasks)


def evaluate(model: SparseTransformer, data: EvalData) -> dict:
    """``{"val_loss": float, "task_loss": {task: float}}`` (no RNG is used, so training is unaffected)."""
    model.eval()
    out = {"val_loss": eval_loss(model, data.val),
           "task_loss": {t: pruning.task_loss(model, d) for t, d in data.tasks.items()}}
    model.train()
    return out


def train_steps(st: RunState, stream: torch.Tensor, data: EvalData, until: int | None = None,
                checkpoint: Callable[[RunState], None] | None = None, checkpoint_s: float = 300.0,
                report: Callable[[RunState, float], None] | None = None,
                fraction_fn: Callable = weight_sparsity.kept_fraction,
                project_fn: Callable = weight_sparsity.project_topk) -> RunState:
    """Train ``st`` from ``st.step`` up to step ``until`` (default: the end), in place.

    ``checkpoint(st)`` is called every ``checkpoint_s`` seconds of wall time and at the end;
    ``report(st, seconds_per_step)`` after every evaluation. ``fraction_fn``/``project_fn``: the kept-fraction
    schedule and the top-k projection (notebook 02 passes its learners' versions).
    """
    t = st.spec.train
    until = t.steps if until is None else min(until, t.steps)
    sparse, embed = sparse_groups(st.model, t)
    st.model.train()
    every = max(1, t.steps // 200)
    last_ck = time.perf_counter()
    t_wall, t_cpu, s0 = time.perf_counter(), time.process_time(), st.step
    batches = corpus.random_batches(stream, st.spec.model.n_ctx, t.batch_size, st.gen)  # draws from the saved RNG
    while st.step < until:
        step = st.step
        lv, frac = train_step(st.model, st.opt, next(batches), step, t, sparse, fraction_fn, project_fn, embed)
        st.step += 1
        if step % every == 0 or st.step == t.steps:
            st.log["step"].append(step)
            st.log["loss"].append(lv)
            st.log["kept_fraction"].append(frac)
        if st.step % st.spec.eval_every == 0 or st.step == t.steps:
            now_w, now_c = time.perf_counter(), time.process_time()
            st.wall_s += now_w - t_wall
            st.cpu_s += now_c - t_cpu
            sps = (now_w - t_wall) / max(1, st.step - s0)
            t_wall, t_cpu, s0 = now_w, now_c, st.step
            st.log["eval"].append({"step": st.step, "wall_s": round(st.wall_s, 1), **evaluate(st.model, data)})
            t_wall += time.perf_counter() - now_w  # evaluation time is not training time
            if report:
                report(st, sps)
        if checkpoint and (time.perf_counter() - last_ck >= checkpoint_s or st.step == until):
            st.wall_s += time.perf_counter() - t_wall
            st.cpu_s += time.process_time() - t_cpu
            t_wall, t_cpu = time.perf_counter(), time.process_time()
            checkpoint(st)
            last_ck = time.perf_counter()
    st.wall_s += time.perf_counter() - t_wall
    st.cpu_s += time.process_time() - t_cpu
    st.model.eval()
    return st


def mixed_stream(stream: torch.Tensor, tokenizer, task_mix: float) -> torch.Tensor:
    """``stream`` followed by task-template text (:func:`course_lib.circuits.tasks.task_corpus`) making up
    ``task_mix`` of the tokens, so that uniformly drawn windows come from it with that probability.
    Validation stays on the corpus alone."""
    if task_mix <= 0:
        return stream
    n = round(task_mix / (1 - task_mix) * stream.numel())
    return torch.cat([stream, task_corpus(tokenizer, n)[:n]])


# --------------------------------------------------------------------------- the set


def training_root() -> Path:
    """``<cache>/reference-training`` (checkpoints, progress, the log)."""
    return cache.cache_dir() / "reference-training"


def machine() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def _fmt_h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if math.isfinite(seconds) else "?"


def train_set(specs: list[RunSpec], root: str | Path, checkpoint_s: float = 300.0, stop_after_s: float | None = None,
              streams: dict | None = None, fraction_fn: Callable = weight_sparsity.kept_fraction,
              project_fn: Callable = weight_sparsity.project_topk) -> list[RunState]:
    """Train every run of ``specs`` under ``root/<run>/``: skip the done, resume the partial, start the rest.

    Returns the states (done or not). ``stop_after_s`` stops (after a checkpoint) once this much wall time
    has passed, as an interruption would. ``streams`` caches ``corpus.data_streams`` per profile.
    ``fraction_fn``/``project_fn``: see :func:`train_steps`.
    """
    root = Path(root)
    streams = {} if streams is None else streams
    t_start = time.perf_counter()
    out, sps_by_group, stopped = [], {}, False
    for i, spec in enumerate(specs):
        folder = root / spec.name
        path = folder / STATE
        st = load_state(spec, path) if path.is_file() else new_state(spec)
        if st.done:
            log.info("[%d/%d] %s: done (%d steps, %.0f s)", i + 1, len(specs), spec.name, st.step, st.wall_s)
            out.append(st)
            continue
        if stopped:
            out.append(st)
            continue
        if spec.data not in streams:
            streams[spec.data] = corpus.data_streams(spec.data)
        tok, train_stream, val_stream = streams[spec.data]
        train_stream = mixed_stream(train_stream, tok, spec.task_mix)
        data = eval_data(spec, tok, val_stream)
        log.info("[%d/%d] %s: %s from step %d of %d", i + 1, len(specs), spec.name,
                 "resuming" if st.step else "starting", st.step, spec.train.steps)

        def report(s: RunState, sps: float, i: int = i) -> None:
            sps_by_group[(s.spec.model.d_model, s.spec.train.target_fraction < 1)] = sps
            e = s.log["eval"][-1]
            tasks = " ".join(f"{k}={v:.3f}" for k, v in e["task_loss"].items())
            left = (s.spec.train.steps - s.step) * sps
            later = sum(sp.train.steps * sps_by_group.get((sp.model.d_model, sp.train.target_fraction < 1), sps)
                        for sp in specs[i + 1:] if not (root / sp.name / "DONE").exists())
            log.info("%s step %d/%d loss %.3f val %.3f | %s | %.3f s/step | ETA model %s, set %s", s.spec.name,
                     s.step, s.spec.train.steps, s.log["loss"][-1], e["val_loss"], tasks, sps, _fmt_h(left),
                     _fmt_h(left + later))

        def checkpoint(s: RunState, folder: Path = folder) -> None:
            save_state(s, folder / STATE)
            if s.done:
                cache.atomic_write_text(folder / "DONE", json.dumps({"step": s.step, "wall_s": s.wall_s}))

        stopped = _train_until_time(st, train_stream, data, checkpoint, checkpoint_s, report, stop_after_s, t_start,
                                    fraction_fn, project_fn)
        out.append(st)
    return out


def _train_until_time(st, stream, data, checkpoint, checkpoint_s, report, stop_after_s, t_start,
                      fraction_fn, project_fn) -> bool:
    """Train in slices of ``eval_every`` steps (a checkpoint ends each), checking the wall-time budget
    between slices; ``True`` when the budget stopped it (at least one slice is always trained)."""
    while not st.done:
        nxt = min(st.spec.train.steps, (st.step // st.spec.eval_every + 1) * st.spec.eval_every)
        train_steps(st, stream, data, nxt, checkpoint, checkpoint_s, report, fraction_fn, project_fn)
        if stop_after_s is not None and time.perf_counter() - t_start >= stop_after_s:
            return not st.done
    return False


def export_set(states: list[RunState], out: str | Path, command: str, set_name: str, tokenizer=None) -> dict:
    """Write every finished run with ``save_compact`` and a ``manifest.json`` (and ``tokenizer.json`` when given:
    the BPE the models were trained with, so a machine with another standard library reads the same tokens);
    returns the manifest. Each model's training log is kept at about 100 points."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = []
    for st in states:
        if not st.done:
            continue
        fname = f"{st.spec.name}.safetensors"
        save_compact(st.model.state_dict(), out / fname)
        last = st.log["eval"][-1]
        params = st.model.sparsified_parameters().values()
        every = max(1, len(st.log["step"]) // 100)
        models.append({
            "name": st.spec.name, "group": st.spec.group, "file": fname, "model": dataclasses.asdict(st.spec.model),
            "train": dataclasses.asdict(st.spec.train), "data": st.spec.data, "task_mix": st.spec.task_mix,
            "steps": st.step, "wall_time_s": round(st.wall_s, 1), "cpu_time_s": round(st.cpu_s, 1),
            "final_train_loss": st.log["loss"][-1], "val_loss": last["val_loss"], "task_loss": last["task_loss"],
            "nonzero_fraction": weight_sparsity.nonzero_fraction(params),
            "nonzero_weights": int(sum(int((p != 0).sum()) for p in params)), "eval": st.log["eval"],
            "log": {k: st.log[k][::every] for k in ("step", "loss", "kept_fraction")},
        })
    manifest = {"format": FORMAT, "set": set_name, "command": command, "machine": machine(),
                "task_prompts": "seed 0, test split (course_lib.circuits.tasks.make_task_data)", "models": models}
    if tokenizer is not None:
        with cache.atomic_path(out / TOKENIZER) as tmp:
            tokenizer.save(str(tmp))
        manifest["tokenizer"] = TOKENIZER
    cache.atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def merge_into(states: list[RunState], folder: str | Path, command: str) -> dict:
    """Add the finished runs of ``states`` to the exported set in ``folder`` (its manifest gains their entries,
    each with the ``command`` and ``machine`` that made it; a run already there is replaced). The tokenizer must
    be the set's own. Returns the new manifest."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    part = export_set([st for st in states if st.done], folder / ".merge", command, manifest["set"])
    names = {e["name"] for e in part["models"]}
    kept = [e for e in manifest["models"] if e["name"] not in names]
    for e in part["models"]:
        os.replace(folder / ".merge" / e["file"], folder / e["file"])
        e["command"], e["machine"] = command, part["machine"]
    (folder / ".merge" / MANIFEST).unlink(missing_ok=True)
    (folder / ".merge").rmdir()
    manifest["models"] = kept + part["models"]
    cache.atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def full_split_losses(folder: str | Path, batch_size: int = 64) -> dict[str, float]:
    """Validation loss of every model of an exported set on the *whole* validation split of its corpus profile
    (every window of ``n_ctx + 1`` tokens), written into the manifest as ``val_loss_full``: the loss that matches
    dense and sparse models (the 128 windows logged during training are a noisy ~2% sample)."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    tok = load_tokenizer(folder, manifest["models"][0]["data"])
    out = {}
    streams: dict[str, torch.Tensor] = {}
    for entry, model in load_set(folder):
        if entry["data"] not in streams:
            cfg = corpus.config_for(entry["data"])
            streams[entry["data"]] = corpus.encode_texts(tok, corpus.load_texts(cfg, "val"))
        w = corpus.windows(streams[entry["data"]], model.cfg.n_ctx + 1)
        out[entry["name"]] = eval_loss(model, w, batch_size)
    for e in manifest["models"]:
        e["val_loss_full"] = out[e["name"]]
    manifest["val_loss_full"] = "every window of the validation split (full_split_losses)"
    cache.atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    return out


def run_status(spec: RunSpec, root: str | Path) -> dict:
    """``{"name", "step", "steps", "wall_s", "cpu_s", "eval": [...]}`` from the run's checkpoint (metadata only;
    step 0 and no evaluations when it has none)."""
    path = Path(root) / spec.name / STATE
    out = {"name": spec.name, "group": spec.group, "step": 0, "steps": spec.train.steps, "wall_s": 0.0,
           "cpu_s": 0.0, "eval": []}
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        out.update(step=int(meta["step"]), wall_s=float(meta["wall_s"]), cpu_s=float(meta["cpu_s"]),
                   eval=json.loads(meta["log"])["eval"])
    return out


def status_lines(specs: list[RunSpec], root: str | Path, every: int = 1) -> list[str]:
    """A plain-text table of every run's evaluations (step, val loss, held-out task losses, CPU s/step)."""
    lines = []
    for spec in specs:
        st = run_status(spec, root)
        lines.append(f"{st['name']} ({st['group']}): step {st['step']}/{st['steps']}, wall {st['wall_s']:.0f} s, "
                     f"CPU {st['cpu_s']:.0f} s ({st['cpu_s'] / max(st['step'], 1) * 1000:.0f} ms/step)")
        for e in st["eval"][every - 1::every]:
            tl = e["task_loss"]
            solved = sum(v <= 0.35 for v in tl.values())
            lines.append(f"  {e['step']:>6} val {e['val_loss']:.3f} solved(<=0.35) {solved}/{len(tl)} | "
                         + " ".join(f"{k} {v:.2f}" for k, v in tl.items()))
    return lines


class ReferenceSetError(RuntimeError):
    """A reference set that cannot be loaded (missing or damaged files), with what to do about it."""


def shipped_dir() -> Path:
    """Where the repository ships the reference set (``course_lib/circuits/reference/models``)."""
    return Path(__file__).parent / "reference" / "models"


def load_set(folder: str | Path, device: torch.device | str = "cpu") -> list[tuple[dict, SparseTransformer]]:
    """The models of an exported set, as ``(manifest entry, model in eval mode)``, in the set's order.

    :class:`ReferenceSetError` (naming the file) when the manifest or a model file is missing or damaged."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ReferenceSetError(f"no readable {MANIFEST} in {folder}: {e}") from e
    out = []
    for entry in manifest["models"]:
        try:
            model = SparseTransformer(SparseTransformerConfig(**entry["model"]))
            model.load_state_dict(load_compact(folder / entry["file"]))
        except Exception as e:  # a truncated or altered file: say which
            raise ReferenceSetError(f"{folder / entry['file']} is missing or damaged ({type(e).__name__}: {e})") from e
        out.append((entry, model.to(device).eval()))
    return out


def load_tokenizer(folder: str | Path, data: str = "full"):
    """The set's own BPE (``tokenizer.json`` in the export), else the corpus tokenizer of profile ``data``."""
    path = Path(folder) / TOKENIZER
    if path.is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    return corpus.train_tokenizer(corpus.config_for(data))


def set_tokenizer(set_name: str, source: str = "shipped") -> tuple[object, str]:
    """``(BPE, corpus profile)`` of a set before it is loaded or trained: the exported ``tokenizer.json`` for a
    shipped or given folder, the corpus tokenizer of the set's profile when ``source`` is ``"retrain"``."""
    if source == "retrain":
        data = SETS[set_name]()[0].data
        return corpus.train_tokenizer(corpus.config_for(data)), data
    folder = shipped_dir() if source == "shipped" else Path(source)
    try:
        data = json.loads((folder / MANIFEST).read_text())["models"][0]["data"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise ReferenceSetError(f"no readable {MANIFEST} in {folder} ({e}); restore it with `git checkout -- {folder}` "
                                "or retrain the set with REFERENCE_SET='retrain'") from e
    return load_tokenizer(folder, data), data


def obtain_set(set_name: str, source: str = "shipped", device: torch.device | str = "cpu",
               fraction_fn: Callable = weight_sparsity.kept_fraction,
               project_fn: Callable = weight_sparsity.project_topk) -> tuple[Path, list[tuple[dict, SparseTransformer]]]:
    """The folder and models of a set: ``source`` is ``"shipped"`` (:func:`shipped_dir`), ``"retrain"`` (train
    every run of ``SETS[set_name]`` under :func:`training_root` with ``fraction_fn``/``project_fn``, resuming
    what a previous call left, then export into ``<root>/<set>/export``) or the path of an exported set."""
    if source == "retrain":
        specs = SETS[set_name]()
        root = training_root() / set_name
        states = train_set(specs, root, fraction_fn=fraction_fn, project_fn=project_fn)
        folder = root / "export"
        tok = corpus.train_tokenizer(corpus.config_for(specs[0].data))
        export_set(states, folder, f"obtain_set({set_name!r}, 'retrain')", set_name, tok)
    else:
        folder = shipped_dir() if source == "shipped" else Path(source)
    try:
        return folder, load_set(folder, device)
    except ReferenceSetError as e:
        raise ReferenceSetError(f"{e}. Restore the shipped set with `git checkout -- {folder}` (or `git lfs pull`), "
                                "or retrain it (hours on a CPU) with REFERENCE_SET='retrain'") from e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="reference", choices=sorted(SETS))
    ap.add_argument("--out", default=None, help="export folder (default: <root>/<set>/export)")
    ap.add_argument("--root", default=None, help="checkpoint folder (default: <cache>/reference-training)")
    ap.add_argument("--only", nargs="+", default=None, help="train just these runs of the set (e.g. one per core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the timings assume 1)")
    ap.add_argument("--checkpoint-s", type=float, default=300.0, help="seconds between checkpoints")
    ap.add_argument("--status", action="store_true", help="print every run's evaluations so far and exit")
    ap.add_argument("--stop-after-s", type=float, default=None, help="stop (after a checkpoint) after this long")
    ap.add_argument("--merge-into", default=None, help="add the finished runs to this exported set's folder")
    ap.add_argument("--full-split-losses", default=None, metavar="FOLDER",
                    help="write every model's loss on the whole validation split into FOLDER's manifest, then exit")
    a = ap.parse_args(argv)
    if a.full_split_losses:
        torch.set_num_threads(a.threads)
        for name, v in full_split_losses(a.full_split_losses).items():
            log.info("%s: %.4f", name, v)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(a.threads)
    root = Path(a.root) if a.root else training_root()
    set_root = root / a.set
    specs = SETS[a.set]()
    if a.only:
        unknown = sorted(set(a.only) - {s.name for s in specs})
        if unknown:
            ap.error(f"--only: {unknown} not in set {a.set!r}; its runs: {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in a.only]
    if a.status:
        print("\n".join(status_lines(specs, set_root)))  # noqa: T201 (command-line output)
        return 0
    command = "python -m course_lib.circuits.reference_training " + " ".join(sys.argv[1:] if argv is None else argv)
    log.info("set %s: %d runs under %s, %d thread(s), pid %d", a.set, len(specs), set_root, a.threads, os.getpid())
    states = train_set(specs, set_root, a.checkpoint_s, a.stop_after_s)
    out = Path(a.out) if a.out else set_root / "export"
    if a.merge_into:
        m = merge_into(states, a.merge_into, command)
        log.info("merged %d finished runs into %s (%d models)", sum(s.done for s in states), a.merge_into,
                 len(m["models"]))
    elif a.only:
        log.info("--only: %d of %d runs done; export with the whole set", sum(s.done for s in states), len(states))
    elif all(s.done for s in states):
        tok = corpus.train_tokenizer(corpus.config_for(specs[0].data))
        m = export_set(states, out, command, a.set, tok)
        size = sum(f.stat().st_size for f in out.iterdir())
        log.info("exported %d models to %s (%.1f MB)", len(m["models"]), out, size / 1e6)
    else:
        log.info("stopped: %d of %d runs done", sum(s.done for s in states), len(states))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
