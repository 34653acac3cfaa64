"""Run-time plumbing shared by every notebook: profiles, parameter checks, seeds, device, cache.

Profiles
--------
``smoke`` (the tests: every code path, tiny sizes, < 90 s a notebook on 2 CPU cores),
``workshop`` (``make run`` and JupyterLab: the papers' effects visible, < 6 min a notebook),
``full`` (closest to the papers: hours on CPU, minutes on a GPU).

Cache
-----
Artifacts (checkpoints, activation stores, tokenizers) live under :func:`cache_dir`, one folder
per artifact, named ``<kind>/<key>`` where ``key`` hashes the artifact's config *and* the version
string of the code that built it, so a code change never serves a stale artifact. Each folder
holds a ``manifest.json`` (written last) with the size and SHA-256 of every file; a folder whose
files do not match it (a truncated or corrupt write, a half-finished build) is deleted and rebuilt.
A build runs in a hidden temporary folder ``<kind>/.<key>.tmp-<pid>-<host>.<random>``; one left by
a killed build (its process is dead, or it is older than :data:`STALE_TMP_S` when it comes from
another machine or an older version) is removed by the next build of that kind.

Files and folders are created with the user's normal permissions (the umask decides), so an
instructor can share ``outputs/`` or a warm cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

PROFILES: tuple[str, ...] = ("smoke", "workshop", "full")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES: tuple[str, ...] = ("auto", "float32", "bfloat16")
CACHE_ENV = "COURSE_LIB_CACHE"
HEADLESS_ENV = "COURSE_LIB_HEADLESS"  # "1" when no front end is attached (the runner and the tests set it)
MODEL_CACHE_ENV = "COURSE_LIB_MODEL_CACHE"
SEED_MAX = 2**32 - 1  # seeds are in [0, SEED_MAX] (numpy's range)
STALE_TMP_S = 6 * 3600.0  # a build folder whose owner cannot be checked is stale after this long

T = TypeVar("T")


class ParameterError(ValueError):
    """A notebook parameter is invalid. The message names the valid values."""


class CacheNotWritable(PermissionError):
    """The artifact cache cannot be written; the message names the variables that move it."""


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


def headless() -> bool:
    """True when no front end is attached (``$COURSE_LIB_HEADLESS`` = 1, set by the runner and tests).

    Widgets then render their initial state as static output instead of live controls.
    """
    return os.environ.get(HEADLESS_ENV, "") == "1"


# --------------------------------------------------------------------------- run context


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

    def save_figure(self, fig: Any, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomically) and return the path."""
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        path = self.fig_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        return path

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` with the run's profile, seed, device and wall time added."""
        payload = {
            "profile": self.profile,
            "seed": self.seed,
            "device": str(self.device),
            "dtype": self.dtype,
            "native_bf16": native_bf16(self.device),
            "torch_threads": self.threads,
            "wall_time_s": round(time.perf_counter() - self.started, 2),
            **metrics,
        }
        path = self.out_dir / "metrics.json"
        atomic_write_text(path, json.dumps(jsonable(payload), indent=2, sort_keys=False))
        return path


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


def jsonable(obj: Any) -> Any:
    """``obj`` with tensors/numpy values turned into JSON types and non-finite floats into ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, (np.generic, np.ndarray)):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------- atomic writes


def _new_temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """Create a new empty file ``folder/<prefix><random><suffix>`` and return its path.

    Unlike ``tempfile.mkstemp`` (always 0600), the mode is the user's default (0666 minus umask).
    """
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _new_temp_dir(folder: Path, prefix: str) -> Path:
    """Create a new empty folder ``folder/<prefix><random>`` with the user's default mode (0777 minus umask)."""
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(name, 0o777)
            return name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Root of the artifact cache: ``$COURSE_LIB_CACHE`` or the user's cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("mechinterp-course"))
    _make_cache_folder(root)
    return root


def _not_writable(folder: Path, err: OSError) -> CacheNotWritable:
    return CacheNotWritable(
        f"cannot write to the cache folder {folder} ({err.strerror or err}). Point the environment "
        f"variable {CACHE_ENV} (artifacts) or {MODEL_CACHE_ENV} (converted models) at a folder you "
        "can write to, e.g. export COURSE_LIB_CACHE=$HOME/.cache/mechinterp-course")


def _make_cache_folder(folder: Path) -> None:
    """``mkdir -p folder``, or :class:`CacheNotWritable` naming the cache variables."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _not_writable(folder, e) from None


def model_cache_dir() -> Path:
    """Where converted pretrained models live: ``$COURSE_LIB_MODEL_CACHE`` or ``cache_dir()/models``.

    Separate so that tests can use a fresh artifact cache yet share the (slow) model conversion.
    """
    env = os.environ.get(MODEL_CACHE_ENV)
    root = Path(env).expanduser() if env else cache_dir() / "models"
    _make_cache_folder(root)
    return root


def config_hash(config: Any, version: str) -> str:
    """A 16-hex-digit key for ``(config, version)``; ``config`` may be a dataclass or a mapping."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    blob = json.dumps({"config": jsonable(config), "version": version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_artifact(folder: Path) -> bool:
    """True if ``folder/manifest.json`` exists and every file it lists has its size and hash."""
    manifest = folder / "manifest.json"
    try:
        entries = json.loads(manifest.read_text())["files"]
        for name, meta in entries.items():
            f = folder / name
            if f.stat().st_size != meta["size"] or _sha256(f) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_or_build(
    kind: str,
    config: Any,
    version: str,
    build: Callable[[Path], None],
    root: Path | None = None,
) -> Path:
    """Return the verified cache folder for ``(kind, config, version)``, building it if needed.

    ``build(tmp_folder)`` writes the artifact's files into an empty temporary folder; this function
    then writes the manifest and renames the folder into place, so readers only ever see complete
    artifacts. A folder that fails :func:`verify_artifact` (corrupt, truncated, half-built) is
    deleted and rebuilt. Before building, stale temporary folders of this kind (left by killed
    builds: see :func:`remove_stale_builds`) are removed. An unwritable cache raises
    :class:`CacheNotWritable` (naming ``COURSE_LIB_CACHE``) before ``build`` runs.
    """
    root = cache_dir() if root is None else root
    final = root / kind / config_hash(config, version)
    if final.exists():
        if verify_artifact(final):
            return final
        shutil.rmtree(final, ignore_errors=True)
    _make_cache_folder(final.parent)
    remove_stale_builds(final.parent)
    try:
        tmp = _new_temp_dir(final.parent, f".{final.name}.tmp-{os.getpid()}-{_HOST}.")
    except OSError as e:
        raise _not_writable(final.parent, e) from None
    try:
        build(tmp)
        files = {
            p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        meta = {"kind": kind, "version": version, "config": jsonable(_as_dict(config)), "files": files}
        (tmp / "manifest.json").write_text(json.dumps(meta, indent=2, default=str))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep theirs if it verifies
            if not verify_artifact(final):
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TMP_NAME = re.compile(r"^\.[0-9a-f]{16}\.(?:tmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.)?[A-Za-z0-9_]+$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists (another user's), or cannot tell: assume alive
    return True


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for p in folder.rglob("*"):
        try:
            times.append(p.lstat().st_mtime)
        except OSError:
            pass
    return max(times)


def remove_stale_builds(kind_folder: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Delete the temporary build folders in ``kind_folder`` that no live build uses; return them.

    A folder named ``.<key>.tmp-<pid>-<host>.<random>`` from this machine is stale when process
    ``pid`` is dead. One from another machine (a shared cache) or in the older ``.<key>.<random>``
    form is stale when nothing in it changed for ``max_age_s`` seconds. A live builder's folder is
    never touched; errors (a concurrent cleaner, a read-only cache) are ignored.
    """
    removed = []
    try:
        entries = list(kind_folder.iterdir())
    except OSError:
        return removed
    for tmp in entries:
        m = _TMP_NAME.match(tmp.name)
        if not m or not tmp.is_dir() or tmp.is_symlink():
            continue
        try:
            if m["pid"] is not None and m["host"] == _HOST:
                stale = int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
            else:
                stale = time.time() - _newest_mtime(tmp) > max_age_s
        except OSError:
            continue
        if stale:
            shutil.rmtree(tmp, ignore_errors=True)
            if not tmp.exists():
                removed.append(tmp)
    return removed


def _as_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return config
