import json
import time

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


def test_run_show_saves_the_png_and_displays_it_once(tmp_path, monkeypatch):
    import IPython.display
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    run = runtime.start_run("smoke", 0, tmp_path / "out", "cpu")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = run.show(fig, "line")
    assert path == tmp_path / "out" / "figures" / "line.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.Image)
    assert not plt.fignum_exists(fig.number)  # closed: the backend does not render it a second time


def test_cache_names_stay_importable_from_runtime():
    from course_lib import cache

    for name in ("load_or_build", "atomic_path", "atomic_write_text", "atomic_write_bytes", "cache_dir",
                 "model_cache_dir", "config_hash", "verify_artifact", "jsonable"):
        assert getattr(runtime, name) is getattr(cache, name), name


def test_cpu_threads_restores_the_count_even_on_error():
    old = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with runtime.cpu_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == old


@pytest.mark.parametrize("slow_on_many", [True, False])
def test_faster_thread_count_keeps_the_faster_and_measures_once_per_key(slow_on_many):
    calls = []

    def probe():  # sleeps 30 ms under the count that should lose
        calls.append(torch.get_num_threads())
        many = torch.get_num_threads() > 1
        time.sleep(0.03 if many == slow_on_many else 0.0)

    with runtime.cpu_threads(2):
        key = ("test", slow_on_many)
        runtime._THREAD_CHOICE.pop(key, None)
        got = runtime.faster_thread_count(key, probe)
        assert got == (1 if slow_on_many else 2)
        assert set(calls) == {1, 2}
        n = len(calls)
        assert runtime.faster_thread_count(key, probe) == got and len(calls) == n  # cached: no new probe
        assert torch.get_num_threads() == 2


def test_parallel_calls_run_closures_in_order_and_equal_serial():
    import sys

    import torch

    from course_lib import runtime

    weights = torch.arange(6.0)
    calls = [lambda k=k: (k, float((weights * k).sum()), torch.full((3,), float(k))) for k in range(5)]  # closures
    done = []
    out = runtime.parallel_calls(calls, workers=2, on_done=done.append)
    serial = runtime.parallel_calls(calls, workers=1)
    assert [o[0] for o in out] == list(range(5)) and sorted(done) == list(range(5))
    for a, b in zip(out, serial):
        assert a[1] == b[1] and torch.equal(a[2], b[2])
    if sys.platform == "linux":  # the calls really ran in other processes there
        import os

        pids = runtime.parallel_calls([os.getpid] * 4, workers=2)
        assert os.getpid() not in pids
    assert runtime.parallel_calls([], workers=2) == []
