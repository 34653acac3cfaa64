"""course_lib.cache: atomic writes, config-hash keys, verified artifacts rebuilt when corrupt."""

import os

import pytest

from course_lib import cache


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "f.txt"
    cache.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with cache.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_cache_key_depends_on_config_and_code_version():
    a = cache.config_hash({"n": 1}, "v1")
    assert a == cache.config_hash({"n": 1}, "v1")
    assert a != cache.config_hash({"n": 2}, "v1")
    assert a != cache.config_hash({"n": 1}, "v2")


def test_load_or_build_caches_and_rebuilds_corrupt(tmp_path):
    calls = []

    def build(folder):
        calls.append(1)
        (folder / "data.bin").write_bytes(os.urandom(1000))

    first = cache.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    again = cache.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert first == again and len(calls) == 1
    assert cache.verify_artifact(first)

    # Truncate the file: detected and rebuilt, not served.
    data = first / "data.bin"
    data.write_bytes(data.read_bytes()[:500])
    assert not cache.verify_artifact(first)
    rebuilt = cache.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert len(calls) == 2 and cache.verify_artifact(rebuilt) and (rebuilt / "data.bin").stat().st_size == 1000

    # Same size, flipped bytes: detected by the hash.
    raw = bytearray((rebuilt / "data.bin").read_bytes())
    raw[10] ^= 0xFF
    (rebuilt / "data.bin").write_bytes(bytes(raw))
    cache.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert len(calls) == 3

    # A new code version never serves the old artifact.
    cache.load_or_build("thing", {"a": 1}, "v2", build, root=tmp_path)
    assert len(calls) == 4


def test_failed_build_leaves_nothing(tmp_path):
    def build(folder):
        (folder / "x").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert not any((tmp_path / "thing").iterdir())


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(cache.MODEL_CACHE_ENV, raising=False)
    assert cache.model_cache_dir() == tmp_path / "c" / "models"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_the_cache_writes_follows_the_umask(tmp_path, umask):
    """A file written through mkstemp (0600, as safetensors' writer does) and one written plainly end with the
    same mode, the umask's: a cache shared by a group stays readable by it (022) and private under 077."""
    import tempfile

    def build(folder):
        fd, name = tempfile.mkstemp(dir=folder)  # 0600 whatever the umask
        os.close(fd)
        os.replace(name, folder / "model.safetensors")
        (folder / "config.json").write_text("{}")
        (folder / "sub").mkdir()
        (folder / "sub" / "tok.json").write_text("{}")

    old = os.umask(umask)
    try:
        out = cache.load_or_build("thing", {"n": 1}, "v1", build, root=tmp_path)
        cache.atomic_write_text(tmp_path / "run.json", "{}")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    for name, mode in modes.items():
        want = (0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask
        assert mode == want, f"{name}: {oct(mode)}, want {oct(want)} under umask {oct(umask)}"
    assert (out / "model.safetensors").exists() and cache.verify_artifact(out)
