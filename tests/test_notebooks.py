"""Every notebook runs end to end under papermill in the smoke profile, offline.

The kernel starts with tests/netguard on PYTHONPATH: every network connection fails and is logged,
and the test fails if anything tried. Each notebook gets its own empty artifact cache, so each one
proves it builds what it needs by itself (standalone, in any order). Notebooks must be stored without
outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GUARD = Path(__file__).resolve().parent / "netguard"
CELL_TIMEOUT_S = 600  # a smoke cell takes seconds; a stuck kernel must fail the test, not hang CI


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


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile_offline(nb_path, tmp_path, monkeypatch):
    import papermill

    log = tmp_path / "network.log"
    log.touch()
    monkeypatch.setenv("COURSE_NETGUARD_LOG", str(log))
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "cache"))  # nothing left by other notebooks
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(GUARD), os.environ.get("PYTHONPATH")])))
    out_dir = tmp_path / nb_path.stem
    papermill.execute_notebook(
        str(nb_path), str(tmp_path / nb_path.name), kernel_name="python3", cwd=str(nb_path.parent),
        parameters={"PROFILE": "smoke", "SEED": 0, "OUT_DIR": str(out_dir), "DEVICE": "cpu"},
        progress_bar=False, start_timeout=120, execution_timeout=CELL_TIMEOUT_S,
    )
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["profile"] == "smoke"
    assert list((out_dir / "figures").glob("*.png")), "the notebook saved no figure"
    assert log.read_text() == "", f"the notebook tried to use the network:\n{log.read_text()}"


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS[:1], ids=lambda p: p.stem)
def test_bad_profile_fails_in_the_validation_cell(nb_path, tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        papermill.execute_notebook(
            str(nb_path), str(tmp_path / "out.ipynb"), kernel_name="python3", cwd=str(nb_path.parent),
            parameters={"PROFILE": "quick", "OUT_DIR": str(tmp_path / "o")}, progress_bar=False,
        )
    assert err.value.ename == "ParameterError"
    assert "smoke, workshop, full" in err.value.evalue
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failing = [c for c in executed.cells if c.cell_type == "code" and any(o.get("ename") for o in c.outputs)]
    assert "start_run" in failing[0].source  # it failed in the validation cell, before any compute
