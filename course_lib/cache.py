"""The artifact cache and atomic writes (infrastructure shared by every lesson).

Artifacts (checkpoints, activation stores, tokenizers) live under :func:`cache_dir`, one folder
per artifact, named ``<kind>/<key>`` where ``key`` hashes the artifact's config *and* the version
string of the code that built it, so a code change never serves a stale artifact. Each folder
holds a ``manifest.json`` (written last) with the size and SHA-256 of every file; a folder whose
files do not match it (a truncated or corrupt write, a half-finished build) is deleted and rebuilt.
A build runs in a hidden temporary folder ``<kind>/.<key>.tmp-<pid>-<host>.<random>``; one left by
a killed build (its process is dead, or it is older than :data:`STALE_TMP_S` when it comes from
another machine or an older version) is removed by the next build of that kind.

Files are written atomically (:func:`atomic_path`: a temporary file beside the target, renamed
onto it on success), so a reader never sees half a file. Files and folders are created with the
user's normal permissions (the umask decides), so an instructor can share ``outputs/`` or a warm cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CACHE_ENV = "COURSE_LIB_CACHE"
MODEL_CACHE_ENV = "COURSE_LIB_MODEL_CACHE"
STALE_TMP_S = 6 * 3600.0  # a build folder whose owner cannot be checked is stale after this long


class CacheNotWritable(PermissionError):
    """The artifact cache cannot be written; the message names the variables that move it."""


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


def current_umask() -> int:
    """The process's umask: read from ``/proc/self/status`` where Linux has it (no change to the process),
    else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give every file under ``folder`` mode ``0666 & ~umask`` and every folder (itself included)
    ``0777 & ~umask``, as a plain ``open``/``mkdir`` would: libraries that write through ``mkstemp``
    (0600) would otherwise leave a shared cache unreadable to the rest of a group."""
    mask = current_umask()
    for p in [folder, *folder.rglob("*")]:
        if p.is_symlink():
            continue
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


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
        follow_umask(tmp)
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


def code_id(fn: Callable[..., Any]) -> str | None:
    """A hash of a function's source code, for cache keys; None when its source cannot be read.

    A notebook cell's function has its source registered by IPython, so a learner's function has one:
    two functions with the same source (and the same globals) compute the same thing, and a learner who
    edits theirs gets a new key.
    """
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def tensor_digest(tensors: Iterable[Any]) -> str:
    """A hash of tensors' dtypes, shapes and values (in the given order), for cache keys."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]
