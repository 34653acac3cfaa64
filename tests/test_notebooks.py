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

from course_lib import cli, report

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GUARD = Path(__file__).resolve().parent / "netguard"
WIDGET_REPEATS = 20


def test_notebooks_are_numbered_from_00_without_gaps_and_each_opens_with_a_title():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]
    assert len(NOTEBOOKS) >= 5
    for nb in NOTEBOOKS:
        first = nbformat.read(nb, as_version=4).cells[0]
        assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), nb.stem


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
    ids = [c.get("id") for c in json.loads(nb_path.read_text())["cells"]]  # raw: nbformat would fill them in
    assert None not in ids and len(set(ids)) == len(ids), "every cell needs its own id (nbformat 4.5)"


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
    assert report.external_references(html_page) == []
