"""Every notebook runs end to end in the smoke profile, offline, under the same runner as `make run`.

The kernel starts with tests/netguard on PYTHONPATH: every network connection fails and is logged,
and the test fails if anything tried. Each notebook gets its own empty artifact cache, so each one
proves it builds what it needs by itself (standalone, in any order). Every cell tagged ``widget`` is
executed WIDGET_REPEATS times in a row (the hang test: none may stall). Notebooks must be stored
without outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from conftest import SMOKE_OUTPUTS as REPORT_DIR

from course_lib import cli

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GUARD = Path(__file__).resolve().parent / "netguard"
WIDGET_REPEATS = 20


def test_there_are_notebooks():
    assert any(nb.stem.startswith("00_") for nb in NOTEBOOKS)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_without_outputs(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, "clear outputs first"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for name in ("PROFILE", "SEED", "OUT_DIR", "DEVICE"):
        assert f"{name} =" in params[0].source
    assert nb.metadata["kernelspec"]["name"] == "mechinterp-course"
    assert any("widget" in c.metadata.get("tags", []) for c in nb.cells), "every notebook has a tagged widget cell"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter_line(nb_path):
    from papermill.translators import PythonTranslator

    params = next(c for c in nbformat.read(nb_path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    inferred = {p.name for p in PythonTranslator.inspect(params)}
    assigned = {line.split("=")[0].strip() for line in params.source.splitlines()
                if "=" in line and not line.lstrip().startswith("#")}
    assert assigned <= inferred, f"papermill cannot parse: {assigned - inferred}"


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile_offline(nb_path, tmp_path, monkeypatch):
    log = tmp_path / "network.log"
    log.touch()
    monkeypatch.setenv("COURSE_NETGUARD_LOG", str(log))
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "cache"))  # nothing left by other notebooks
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(GUARD), os.environ.get("PYTHONPATH")])))
    res = cli.execute_notebook(nb_path, REPORT_DIR, "smoke", device="cpu", kernel=None, echo=None,
                               repeat_tag=("widget", WIDGET_REPEATS))
    assert res.ok, res.error
    out_dir = REPORT_DIR / nb_path.stem
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["profile"] == "smoke"
    assert metrics["dtype"] in ("float32", "bfloat16")
    assert list((out_dir / "figures").glob("*.png")), "the notebook saved no figure"
    assert log.read_text() == "", f"the notebook tried to use the network:\n{log.read_text()}"
    executed = nbformat.read(out_dir / f"{nb_path.stem}.ipynb", as_version=4)
    widget_cells = [c for c in executed.cells if "widget" in c.metadata.get("tags", [])]
    assert len(widget_cells) >= WIDGET_REPEATS
    for c in widget_cells:  # headless: a static view, never a live widget view
        assert c.outputs, "a widget cell showed nothing"
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.outputs)
    html_page = (out_dir / f"{nb_path.stem}.html").read_text()
    assert cli.external_references(html_page) == []


def _run_until_start_run(nb_path: Path, params: dict) -> BaseException | None:
    """Execute the notebook's code cells in this process, papermill-style (the parameters cell, then the
    injected values), up to and including the cell that calls ``runtime.start_run``; return what it raised.

    The validation cells are plain Python, so a kernel per bad value (20 kernel starts, each importing torch)
    would test the same code more slowly; the smoke test above runs every notebook in a real kernel."""
    cells = [c for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code"]
    i = next(j for j, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    ns: dict = {"__name__": "__main__"}
    exec(compile(cells[i].source, "parameters", "exec"), ns)
    exec("\n".join(f"{k} = {v!r}" for k, v in params.items()), ns)
    for j, c in enumerate(cells[i + 1:], start=i + 1):
        src = c.source
        try:
            exec(compile(src, f"cell {j}", "exec"), ns)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            e.cell_source = src
            return e
        if "runtime.start_run(" in src:
            return None  # validated and passed: nothing raised
    return None


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
@pytest.mark.parametrize("bad", [
    {"PROFILE": "quick"}, {"DEVICE": "tpu"}, {"DEVICE": "cuda"}, {"OUT_DIR": "/proc/no/such/dir"},
], ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()))
def test_bad_input_fails_in_the_validation_cell(nb_path, bad, tmp_path, monkeypatch):
    import torch

    from course_lib import runtime

    if bad.get("DEVICE") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    params = {"PROFILE": "smoke", "SEED": 0, "DEVICE": "cpu", "OUT_DIR": str(tmp_path / "o"), **bad}
    err = _run_until_start_run(nb_path, params)
    assert isinstance(err, runtime.ParameterError), f"expected a ParameterError, got {err!r}"
    msg = str(err)
    name, value = next(iter(bad.items()))
    assert name in msg
    if name in ("PROFILE", "DEVICE"):
        assert "valid" in msg
    if name == "PROFILE":
        assert "smoke, workshop, full" in msg
    assert "runtime.start_run(" in err.cell_source  # it failed in the validation cell, before any compute
    assert not (tmp_path / "o").exists() or name == "OUT_DIR"  # nothing written
