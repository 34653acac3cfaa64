"""The learner notebooks (exercises/) run: with their stubs they stop at the first exercise with the
checker's message, and with USE_REFERENCE_SOLUTIONS=True injected they run end to end (smoke profile),
announcing the reference for every exercise. Same runner as `make run` (course_lib.cli.execute_notebook)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from course_lib import cli, exercises

ROOT = Path(__file__).resolve().parent.parent
LEARNER = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))


def _exercise_names(nb_path: Path) -> list[str]:
    cells = json.loads(nb_path.read_text())["cells"]
    text = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return [m.group(1) for t in text if "raise NotImplementedError(" in t
            for m in [re.search(r"^def (\w+)\(", t, re.M)] if m]


def _outputs(executed: Path) -> str:
    nb = json.loads(executed.read_text())
    return "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def test_learner_notebooks_exist_and_have_exercises():
    assert {p.stem[:2] for p in LEARNER} >= {"00", "01"}
    for p in LEARNER:
        assert len(_exercise_names(p)) >= 4, p.name


@pytest.mark.parametrize("nb_path", LEARNER, ids=lambda p: p.stem)
def test_learner_notebook_is_stored_like_the_source(nb_path):
    nb = json.loads(nb_path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "mechinterp-course"
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    assert sum("parameters" in c["metadata"].get("tags", []) for c in nb["cells"]) == 1
    assert any("widget" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert "# BEGIN SOLUTION" not in nb_path.read_text()


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", LEARNER, ids=lambda p: p.stem)
def test_learner_notebook_stops_at_the_first_stub_with_the_checkers_message(nb_path, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "cache"))
    res = cli.execute_notebook(nb_path, tmp_path / "out", "smoke", device="cpu", kernel=None, echo=None)
    assert not res.ok
    first = _exercise_names(nb_path)[0]
    assert "ExerciseError" in res.error and f"{first}: {exercises.NOT_ATTEMPTED}" in res.error, res.error
    assert "hint: " in res.error and "set USE_REFERENCE_SOLUTIONS to True" in res.error


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", LEARNER, ids=lambda p: p.stem)
def test_learner_notebook_runs_on_the_reference_when_asked(nb_path, tmp_path, monkeypatch):
    """Where Chromium is installed (always under CI), tests/test_lab_browser.py runs this same check in a real
    JupyterLab (fallback on, every exercise announcing the reference): this papermill run is the fallback."""
    if os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser"):
        pytest.skip("covered by tests/test_lab_browser.py (the same learner notebook, fallback on, in JupyterLab)")
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path / "cache"))
    res = cli.execute_notebook(nb_path, tmp_path / "out", "smoke", device="cpu", kernel=None, echo=None,
                               extra_parameters={"USE_REFERENCE_SOLUTIONS": True})
    assert res.ok, res.error
    printed = _outputs(tmp_path / "out" / nb_path.stem / f"{nb_path.stem}.ipynb")
    for name in _exercise_names(nb_path):
        assert f"using the reference solution for {name}\n" in printed
