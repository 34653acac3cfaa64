"""The run context shared by every notebook: profiles, parameter checks, seeds, device, dtype, figures.

Profiles
--------
``smoke`` (the tests: every code path, tiny sizes, < 90 s a notebook on 2 CPU cores),
``workshop`` (``make run`` and JupyterLab: the papers' effects visible, < 6 min a notebook),
``full`` (closest to the papers: hours on CPU, minutes on a GPU).

Figures: plot functions return a matplotlib Figure; :meth:`Run.show` saves it as
``OUT_DIR/figures/<name>.png`` and displays it once. The artifact cache and atomic writes live in
:mod:`course_lib.cache`; their names stay importable from here (``runtime.load_or_build``...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from course_lib.cache import (  # noqa: F401 - re-exported: runtime.load_or_build etc. keep working
    CACHE_ENV,
    MODEL_CACHE_ENV,
    STALE_TMP_S,
    CacheNotWritable,
    _new_temp_file,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    cache_dir,
    config_hash,
    jsonable,
    load_or_build,
    model_cache_dir,
    verify_artifact,
)

PROFILES: tuple[str, ...] = ("smoke", "workshop", "full")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES: tuple[str, ...] = ("auto", "float32", "bfloat16")
HEADLESS_ENV = "COURSE_LIB_HEADLESS"  # "1" when no front end is attached (the runner and the tests set it)
SEED_MAX = 2**32 - 1  # seeds are in [0, SEED_MAX] (numpy's range)
T = TypeVar("T")


class ParameterError(ValueError):
    """A notebook parameter is invalid. The message names the valid values."""


# --------------------------------------------------------------------------- parameters


def check_profile(profile: object) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise :class:`ParameterError`."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ParameterError(
            f"PROFILE={profile!r} is not a known profile; valid values: {', '.join(PROFILES)}"
        )
    return profile


def check_type(name: str, value: object, expected: type | tuple[type, ...]) -> Any:
    """Raise :class:`ParameterError` unless ``value`` is an instance of ``expected``.

    ``bool`` is refused where ``int`` is expected (``True`` is an ``int`` in Python).
    """
    types = expected if isinstance(expected, tuple) else (expected,)
    bad_bool = isinstance(value, bool) and bool not in types
    if bad_bool or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise ParameterError(f"{name}={value!r} has type {type(value).__name__}; expected {names}")
    return value


def check_choice(name: str, value: object, choices: tuple[Any, ...] | list[Any]) -> Any:
    """Raise :class:`ParameterError` unless ``value`` is one of ``choices`` (named in the message)."""
    if value not in choices:
        raise ParameterError(
            f"{name}={value!r} is not valid; valid values: {', '.join(map(repr, choices))}"
        )
    return value


def check_range(
    name: str, value: float, low: float | None = None, high: float | None = None
) -> float:
    """Raise :class:`ParameterError` unless ``low <= value <= high`` (bounds optional)."""
    check_type(name, value, (int, float))
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ParameterError(f"{name}={value!r} is out of range; valid values: [{lo}, {hi}]")
    return value


def by_profile(profile: str, *, smoke: T, workshop: T, full: T) -> T:
    """Pick the value for ``profile`` (validated)."""
    return {"smoke": smoke, "workshop": workshop, "full": full}[check_profile(profile)]


# --------------------------------------------------------------------------- seeds and device


def seed_everything(seed: int) -> torch.Generator:
    """Seed ``random``, numpy and torch (CPU and CUDA); return a torch generator seeded too.

    ``seed`` must be in ``[0, SEED_MAX]`` (:class:`ParameterError` otherwise).
    """
    check_range("SEED", check_type("SEED", seed, int), 0, SEED_MAX)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` gives CUDA when present, else CPU; an explicit device that is absent is an error."""
    check_choice("DEVICE", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("DEVICE='cuda' but no CUDA device is present; valid here: auto, cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ParameterError("DEVICE='mps' but MPS is not available; valid here: auto, cpu")
    return torch.device(device)


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively (so bf16 is faster than float32 there).

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the ``avx512_bf16`` or ``amx_bf16`` flag in
    ``/proc/cpuinfo`` (x86 Linux); without them torch emulates bf16 and it is several times *slower*
    than float32 (2.8x measured on a Cascade Lake Xeon). Anything else: False.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(dtype: str = "auto", device: str | torch.device = "cpu") -> str:
    """``"auto"`` -> ``"bfloat16"`` where :func:`native_bf16`, else ``"float32"``; others pass through."""
    check_choice("DTYPE", dtype, DTYPE_CHOICES)
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(device) else "float32"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads() -> int:
    """Use one torch thread per available core (never more); return the count.

    Called by :func:`start_run`. ``OMP_NUM_THREADS`` set by the user wins.
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = int(env) if env.isdigit() and int(env) > 0 else cpu_cores()
    n = min(n, cpu_cores())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the ``with`` block with ``n`` torch CPU threads (None: as is), then restore the count."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


_THREAD_CHOICE: dict[Any, int] = {}


def faster_thread_count(key: Any, probe: Callable[[], Any], reps: int = 3) -> int:
    """1 or the current torch thread count, whichever runs ``probe()`` faster here; measured once per ``key``.

    Small programs (the toy models, notebook 02's 64-wide transformers) spend more time synchronising
    threads than computing: on this course's 2-core AMD EPYC the circuit search ran 1.75x faster on one
    thread (bench/bench_threads.py). Larger ones (SmolLM2, SAE training) gain from every core. Rather than guess a size, time
    ``probe`` (one representative step, a few milliseconds) ``reps`` times each way, interleaved, and keep
    the faster (best of each). ``key`` names the workload shape (config, batch) so the choice is reused.
    """
    many = torch.get_num_threads()
    if many <= 1:
        return 1
    if key not in _THREAD_CHOICE:
        best = {1: math.inf, many: math.inf}
        probe()  # warm-up: allocations and lazy initialisation are not what we time
        for _ in range(reps):
            for n in best:
                with cpu_threads(n):
                    t0 = time.perf_counter()
                    probe()
                    best[n] = min(best[n], time.perf_counter() - t0)
        _THREAD_CHOICE[key] = 1 if best[1] <= best[many] else many
    return _THREAD_CHOICE[key]


_PENDING_CALLS: list[Callable[[], Any]] = []


def _pending_call(i: int) -> bytes:
    import pickle

    torch.set_num_threads(1)  # one thread per worker: the workers share the cores
    # plain pickle: tensors travel by value (torch's own reducers would pass shared-memory file descriptors)
    return pickle.dumps(_PENDING_CALLS[i]())


def parallel_calls(calls: list[Callable[[], Any]], workers: int | None = None, on_done: Callable[[int], None] | None = None
                   ) -> list[Any]:
    """``[c() for c in calls]``, spread over ``workers`` forked processes (default: one per usable core), one
    torch thread each. Results come back in order (pickled); ``on_done(i)`` is called in this process as call
    ``i`` finishes (progress). The calls are inherited through ``fork``, never pickled, so they may be closures
    over anything (models, a learner's functions); they must not print (a forked child has no notebook output).

    Serial, in this process, where ``fork`` is not the platform's safe default (only Linux here), with one
    worker or one call, or inside a worker. CPU only: CUDA cannot be forked, so callers on a GPU pass
    ``workers=1``. Small programs gain the most: notebook 02's circuit searches are one-thread workloads
    (:func:`faster_thread_count`), so two cores run two searches at once.
    """
    import multiprocessing as mp
    import pickle
    import sys
    from concurrent.futures import ProcessPoolExecutor, as_completed

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = min(workers or cores, len(calls))
    if n <= 1 or sys.platform != "linux" or _PENDING_CALLS or mp.parent_process() is not None:
        out = []
        for i, c in enumerate(calls):
            out.append(c())
            if on_done:
                on_done(i)
        return out
    _PENDING_CALLS[:] = calls
    try:
        with ProcessPoolExecutor(n, mp_context=mp.get_context("fork")) as ex:
            futures = {ex.submit(_pending_call, i): i for i in range(len(calls))}
            out: list[Any] = [None] * len(calls)
            for f in as_completed(futures):
                out[futures[f]] = pickle.loads(f.result())
                if on_done:
                    on_done(futures[f])
        return out
    finally:
        _PENDING_CALLS.clear()


@contextlib.contextmanager
def temporary_env(**values: str) -> Iterator[None]:
    """Set environment variables for the ``with`` block, then restore them (unset ones are removed)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def headless() -> bool:
    """True when no front end is attached (``$COURSE_LIB_HEADLESS`` = 1, set by the runner and tests).

    Widgets then render their initial state as static output instead of live controls.
    """
    return os.environ.get(HEADLESS_ENV, "") == "1"


# --------------------------------------------------------------------------- run context


@dataclasses.dataclass(frozen=True)
class Headline:
    """One headline claim a notebook declares in ``metrics.json`` (its ``headline`` list).

    The report renders these rows as they are and knows no lesson's metric keys: the lesson package that
    computed a number also says what it means, what the paper found and whether it passed the notebook's
    own checks. A claim whose ``gates_passed`` is False is listed with ``note`` (why) and without its value.
    """

    claim: str  # what is measured, in words
    paper: str  # the paper's value or finding
    value: str | None  # this run's value, formatted; None when this run did not measure it
    interval: str | None = None  # its uncertainty, e.g. "95% CI [1.69, 3.54]"; None when there is none
    gates_passed: bool = True  # False: the notebook's own gates reject the number
    note: str = ""  # what to keep in mind (the null beside it, why a gate failed)


@dataclasses.dataclass
class Run:
    """What a notebook's second cell creates: validated common parameters and output helpers.

    ``out_dir/figures/<name>.png`` holds figures, ``out_dir/metrics.json`` the headline numbers
    (plus profile, seed, device and wall time, filled in by :meth:`write_metrics`).
    """

    profile: str
    seed: int
    out_dir: Path
    device: torch.device
    generator: torch.Generator
    dtype: str = "float32"  # resolved model dtype ("auto" never survives start_run)
    threads: int = 1  # torch CPU threads
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def fig_dir(self) -> Path:
        return self.out_dir / "figures"

    def pick(self, *, smoke: T, workshop: T, full: T) -> T:
        """The value for this run's profile."""
        return by_profile(self.profile, smoke=smoke, workshop=workshop, full=full)

    def save_figure(self, fig: Any, name: str, dpi: int = 110, caption: str | None = None) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomically) and return the path.

        ``figures/index.json`` lists the figures in the order they were saved, each with a one-line
        caption (``caption``, else the figure's titles): the report shows them in that order.
        """
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        path = self.fig_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        index_path = self.fig_dir / "index.json"
        try:
            index = [e for e in json.loads(index_path.read_text()) if e.get("name") != name]
        except (OSError, ValueError):
            index = []
        index.append({"name": name, "file": path.name, "caption": caption or figure_caption(fig, name)})
        atomic_write_text(index_path, json.dumps(index, indent=1))
        return path

    def show(self, fig: Any, name: str, dpi: int = 110, caption: str | None = None) -> Path:
        """Save ``fig`` as ``figures/<name>.png``, display that PNG once, close the figure; return the path.

        The one display idiom of the notebooks: the saved file is what is shown, so the figure is
        rendered once (no second inline rendering by the backend).
        """
        import matplotlib.pyplot as plt
        from IPython.display import Image, display

        path = self.save_figure(fig, name, dpi=dpi, caption=caption)
        plt.close(fig)
        display(Image(filename=str(path)))
        return path

    def write_metrics(self, metrics: Mapping[str, Any], headline: Sequence[Headline] = ()) -> Path:
        """Write ``metrics.json`` with the run's profile, seed, device and wall time added, and the notebook's
        ``headline`` claims (:class:`Headline`) as a list under that key, for the report."""
        payload = {
            "profile": self.profile,
            "seed": self.seed,
            "device": str(self.device),
            "dtype": self.dtype,
            "native_bf16": native_bf16(self.device),
            "torch_threads": self.threads,
            "wall_time_s": round(time.perf_counter() - self.started, 2),
            **metrics,
            "headline": [dataclasses.asdict(h) for h in headline],
        }
        path = self.out_dir / "metrics.json"
        atomic_write_text(path, json.dumps(jsonable(payload), indent=2, sort_keys=False))
        return path


def figure_caption(fig: Any, fallback: str = "") -> str:
    """One line describing ``fig``: its suptitle, else its axes' titles joined, else ``fallback``."""
    sup = getattr(fig, "_suptitle", None)
    text = sup.get_text().strip() if sup is not None else ""
    if not text:
        titles = [ax.get_title().strip() for ax in getattr(fig, "axes", [])]
        text = " · ".join(dict.fromkeys(t for t in titles if t))
    text = " ".join(text.split())
    return (text[:220] + "...") if len(text) > 220 else (text or fallback.replace("_", " "))


def project_root() -> Path:
    """The course checkout (where ``notebooks/`` lives) for an editable install, else the cwd."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "notebooks").is_dir() and (here / "pyproject.toml").exists() else Path.cwd()


def start_run(
    profile: object, seed: object, out_dir: object, device: object = "auto", dtype: object = "auto"
) -> Run:
    """Validate the common notebook parameters, seed everything and create the output folder.

    ``dtype`` ("auto" | "float32" | "bfloat16") is resolved for the device (:func:`resolve_dtype`)
    and recorded in metrics.json; torch gets one thread per available core.

    A relative ``out_dir`` is taken relative to :func:`project_root`, so ``"outputs/00_x"`` lands
    in the same place whether the notebook runs in JupyterLab or under papermill.

    Raises :class:`ParameterError` (naming the valid values) before any compute, also when
    ``out_dir`` cannot be created or written.
    """
    check_profile(profile)
    check_type("SEED", seed, int)
    check_range("SEED", seed, 0, SEED_MAX)  # type: ignore[arg-type]
    check_type("OUT_DIR", out_dir, (str, Path))
    check_type("DEVICE", device, str)
    check_type("DTYPE", dtype, str)
    dev = resolve_device(device)  # type: ignore[arg-type]
    resolved = resolve_dtype(dtype, dev)  # type: ignore[arg-type]
    gen = seed_everything(seed)  # type: ignore[arg-type]
    out = Path(out_dir)  # type: ignore[arg-type]
    if not out.is_absolute():  # same place from JupyterLab (cwd notebooks/) and from papermill
        out = project_root() / out
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        _new_temp_file(out / "figures", ".write-test.", "").unlink()
    except OSError as e:
        raise ParameterError(f"OUT_DIR={out_dir!r}: cannot write to {out} ({e.strerror or e}); "
                             "valid values: a folder path you can write to") from None
    return Run(profile=profile, seed=seed, out_dir=out, device=dev, generator=gen,  # type: ignore[arg-type]
               dtype=resolved, threads=configure_threads())
