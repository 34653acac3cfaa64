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
