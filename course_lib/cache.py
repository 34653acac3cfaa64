"""The artifact cache and atomic writes (infrastructure shared by every lesson).

Artifacts (checkpoints, activation stores, tokenizers) live under :func:`cache_dir`, one folder
per artifact, named ``<kind>/<key>`` where ``key`` hashes the artifact's config *and* the version
string of the code that built it, so a code change never serves a stale artifact. Each folder
holds a ``manifest.json`` (written last) with the size and SHA-256 of every file; a folder whose
files do not match it (a truncated or corrupt write, a half-finished build) is deleted and rebuilt.

Files are written atomically (:func:`atomic_path`: a temporary file beside the target, renamed
onto it on success), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CACHE_ENV = "COURSE_LIB_CACHE"
MODEL_CACHE_ENV = "COURSE_LIB_MODEL_CACHE"


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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
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
    root.mkdir(parents=True, exist_ok=True)
    return root


def model_cache_dir() -> Path:
    """Where converted pretrained models live: ``$COURSE_LIB_MODEL_CACHE`` or ``cache_dir()/models``.

    Separate so that tests can use a fresh artifact cache yet share the (slow) model conversion.
    """
    env = os.environ.get(MODEL_CACHE_ENV)
    root = Path(env).expanduser() if env else cache_dir() / "models"
    root.mkdir(parents=True, exist_ok=True)
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
    deleted and rebuilt.
    """
    root = cache_dir() if root is None else root
    final = root / kind / config_hash(config, version)
    if final.exists():
        if verify_artifact(final):
            return final
        shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
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


def _as_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return config
