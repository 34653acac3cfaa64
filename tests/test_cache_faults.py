"""Cache and run-context hardening: killed builds leave no temp folder behind, a read-only cache
says how to move it, files get the user's normal permissions, bad OUT_DIR / SEED are named."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from course_lib import cache, runtime

ROOT = Path(__file__).resolve().parent.parent


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _build(folder: Path) -> None:
    (folder / "data.bin").write_bytes(b"x" * 1000)


def test_killed_build_leaves_no_temp_folder_after_rebuild(tmp_path):
    """A build killed with SIGKILL (as a kernel is) leaves a partial shard; the next build removes it."""
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from course_lib import runtime

        def build(folder):
            (folder / "shard_000.safetensors").write_bytes(b"partial" * 100)
            os.kill(os.getpid(), signal.SIGKILL)

        runtime.load_or_build("activations", {{"a": 1}}, "v1", build, root=Path({str(tmp_path)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode != 0, proc.stderr.decode()[-2000:]
    kind = tmp_path / "activations"
    left = _hidden(kind)
    assert len(left) == 1 and (kind / left[0] / "shard_000.safetensors").exists()  # the kill left a partial build

    final = runtime.load_or_build("activations", {"a": 1}, "v1", _build, root=tmp_path)
    assert runtime.verify_artifact(final)
    assert _hidden(kind) == []  # the partial shard went with its temp folder


def test_interrupted_build_leaves_nothing_and_rebuilds(tmp_path):
    def interrupted(folder):
        (folder / "shard_000.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runtime.load_or_build("activations", {"a": 2}, "v1", interrupted, root=tmp_path)
    assert _hidden(tmp_path / "activations") == []
    final = runtime.load_or_build("activations", {"a": 2}, "v1", _build, root=tmp_path)
    assert runtime.verify_artifact(final) and _hidden(tmp_path / "activations") == []


def test_live_builders_and_fresh_foreign_folders_are_kept(tmp_path):
    kind = tmp_path / "sae"
    kind.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = kind / f".{'a' * 16}.tmp-{sleeper.pid}-{cache._HOST}.0123abcd"  # a concurrent builder
        fresh_legacy = kind / f".{'b' * 16}.k3j_9x2q"  # older name form, just created: maybe in use
        old_legacy = kind / f".{'c' * 16}.zz81_q0p"  # older name form, untouched for a day
        foreign_old = kind / f".{'d' * 16}.tmp-1-ffffffff.0a0b0c0d"  # another machine, a day old
        for d in (live, fresh_legacy, old_legacy, foreign_old):
            d.mkdir()
            (d / "part.bin").write_bytes(b"p")
        day_ago = time.time() - 24 * 3600
        for d in (old_legacy, foreign_old):
            os.utime(d / "part.bin", (day_ago, day_ago))
            os.utime(d, (day_ago, day_ago))
        runtime.load_or_build("sae", {"a": 3}, "v1", _build, root=tmp_path)
        assert live.exists() and fresh_legacy.exists()
        assert not old_legacy.exists() and not foreign_old.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    runtime.load_or_build("sae", {"a": 4}, "v1", _build, root=tmp_path)
    assert not live.exists()  # its builder died: stale now


def _umask(mask: int):
    old = os.umask(mask)
    return old


def test_files_and_folders_respect_umask(tmp_path):
    old = _umask(0o022)
    try:
        final = runtime.load_or_build("thing", {"a": 1}, "v1", _build, root=tmp_path / "cache")
        run = runtime.start_run("smoke", 0, str(tmp_path / "out"), "cpu")
        metrics = run.write_metrics({"x": 1})
        plain = tmp_path / "plain.txt"
        runtime.atomic_write_text(plain, "hi")
    finally:
        os.umask(old)
    assert final.stat().st_mode & 0o777 == 0o755
    assert (final / "data.bin").stat().st_mode & 0o777 == 0o644
    assert (final / "manifest.json").stat().st_mode & 0o777 == 0o644
    assert metrics.stat().st_mode & 0o777 == 0o644
    assert plain.stat().st_mode & 0o777 == 0o644
    old = _umask(0o077)  # a private umask is respected too
    try:
        runtime.atomic_write_text(tmp_path / "private.txt", "hi")
    finally:
        os.umask(old)
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600


@pytest.fixture
def read_only_cache(tmp_path, monkeypatch):
    """An empty cache folder that cannot be written (chmod 555; for root, os.mkdir/os.open refuse too)."""
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    cache.chmod(0o555)
    if os.geteuid() == 0:  # root ignores the mode bits: refuse writes below the folder explicitly
        real_mkdir, real_open = os.mkdir, os.open

        def _below(path) -> bool:
            return str(Path(path).absolute()).startswith(str(cache) + os.sep)

        def mkdir(path, mode=0o777, *a, **kw):
            if _below(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_mkdir(path, mode, *a, **kw)

        def open_(path, flags, mode=0o777, *a, **kw):
            if flags & os.O_CREAT and _below(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, mode, *a, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", open_)
    monkeypatch.setenv(runtime.CACHE_ENV, str(cache))
    monkeypatch.delenv(runtime.MODEL_CACHE_ENV, raising=False)
    yield cache
    cache.chmod(0o755)


def test_read_only_cache_names_the_cache_variable(read_only_cache):
    calls = []
    with pytest.raises(PermissionError) as err:  # CacheNotWritable is a PermissionError
        runtime.load_or_build("thing", {"a": 1}, "v1", calls.append)
    assert isinstance(err.value, runtime.CacheNotWritable)
    assert "COURSE_LIB_CACHE" in str(err.value) and str(read_only_cache) in str(err.value)
    assert calls == []  # failed before building anything
    with pytest.raises(runtime.CacheNotWritable, match="COURSE_LIB_CACHE"):
        runtime.model_cache_dir()  # what the model-load cell hits first


def test_read_only_warm_cache_still_serves(tmp_path, monkeypatch):
    cache = tmp_path / "warm"
    monkeypatch.setenv(runtime.CACHE_ENV, str(cache))
    built = runtime.load_or_build("thing", {"a": 1}, "v1", _build)
    for p in [cache, *cache.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        assert runtime.load_or_build("thing", {"a": 1}, "v1", lambda d: pytest.fail("rebuilt")) == built
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_unwritable_out_dir_is_a_parameter_error_naming_out_dir(tmp_path):
    with pytest.raises(runtime.ParameterError, match="OUT_DIR='/proc/x'"):
        runtime.start_run("smoke", 0, "/proc/x", "cpu")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(runtime.ParameterError, match="OUT_DIR="):
        runtime.start_run("smoke", 0, str(blocker / "sub"), "cpu")


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_seed_range_bounds_accepted(seed, tmp_path):
    assert runtime.start_run("smoke", seed, str(tmp_path / "o"), "cpu").seed == seed


@pytest.mark.parametrize("seed", [-1, 2**32, 10**23])
def test_seed_out_of_range_names_the_range(seed, tmp_path):
    with pytest.raises(runtime.ParameterError, match=r"SEED=.*valid values: \[0, 4294967295\]"):
        runtime.start_run("smoke", seed, str(tmp_path / "o"), "cpu")
    assert not (tmp_path / "o").exists()
