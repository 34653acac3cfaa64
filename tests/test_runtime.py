import json
import os

import pytest
import torch

from course_lib import runtime


@pytest.mark.parametrize("bad", ["fast", "", None, 3, "Smoke"])
def test_unknown_profile_names_valid_values(bad):
    with pytest.raises(runtime.ParameterError) as err:
        runtime.check_profile(bad)
    for name in runtime.PROFILES:
        assert name in str(err.value)


def test_start_run_validates_before_compute(tmp_path):
    with pytest.raises(runtime.ParameterError, match="smoke, workshop, full"):
        runtime.start_run("nope", 0, str(tmp_path / "a"), "auto")
    with pytest.raises(runtime.ParameterError, match="expected int"):
        runtime.start_run("smoke", "0", str(tmp_path / "b"), "auto")
    with pytest.raises(runtime.ParameterError, match="expected int"):
        runtime.start_run("smoke", True, str(tmp_path / "b"), "auto")
    with pytest.raises(runtime.ParameterError, match="auto"):
        runtime.start_run("smoke", 0, str(tmp_path / "c"), "tpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_check_range_and_choice():
    assert runtime.check_range("K", 3, 1, 10) == 3
    with pytest.raises(runtime.ParameterError, match=r"\[1, 10\]"):
        runtime.check_range("K", 0, 1, 10)
    with pytest.raises(runtime.ParameterError, match="'a', 'b'"):
        runtime.check_choice("X", "c", ("a", "b"))


def test_by_profile_and_device():
    assert runtime.by_profile("smoke", smoke=1, workshop=2, full=3) == 1
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device("auto").type in {"cpu", "cuda"}


def test_seed_is_reproducible():
    runtime.seed_everything(3)
    a = torch.rand(4)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_run_writes_metrics_and_figures(tmp_path):
    import matplotlib.pyplot as plt

    run = runtime.start_run("smoke", 1, str(tmp_path / "out"), "cpu")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = run.save_figure(fig, "line")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
    m = json.loads(run.write_metrics({"x": torch.tensor(1.5), "nan": float("nan")}).read_text())
    assert m["profile"] == "smoke" and m["seed"] == 1 and m["x"] == 1.5 and m["nan"] is None
    assert m["wall_time_s"] >= 0


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "f.txt"
    runtime.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with runtime.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_cache_key_depends_on_config_and_code_version():
    a = runtime.config_hash({"n": 1}, "v1")
    assert a == runtime.config_hash({"n": 1}, "v1")
    assert a != runtime.config_hash({"n": 2}, "v1")
    assert a != runtime.config_hash({"n": 1}, "v2")


def test_load_or_build_caches_and_rebuilds_corrupt(tmp_path):
    calls = []

    def build(folder):
        calls.append(1)
        (folder / "data.bin").write_bytes(os.urandom(1000))

    first = runtime.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    again = runtime.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert first == again and len(calls) == 1
    assert runtime.verify_artifact(first)

    # Truncate the file: detected and rebuilt, not served.
    data = first / "data.bin"
    data.write_bytes(data.read_bytes()[:500])
    assert not runtime.verify_artifact(first)
    rebuilt = runtime.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert len(calls) == 2 and runtime.verify_artifact(rebuilt) and (rebuilt / "data.bin").stat().st_size == 1000

    # Same size, flipped bytes: detected by the hash.
    raw = bytearray((rebuilt / "data.bin").read_bytes())
    raw[10] ^= 0xFF
    (rebuilt / "data.bin").write_bytes(bytes(raw))
    runtime.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert len(calls) == 3

    # A new code version never serves the old artifact.
    runtime.load_or_build("thing", {"a": 1}, "v2", build, root=tmp_path)
    assert len(calls) == 4


def test_failed_build_leaves_nothing(tmp_path):
    def build(folder):
        (folder / "x").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        runtime.load_or_build("thing", {"a": 1}, "v1", build, root=tmp_path)
    assert not any((tmp_path / "thing").iterdir())


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(runtime.MODEL_CACHE_ENV, raising=False)
    assert runtime.model_cache_dir() == tmp_path / "c" / "models"
