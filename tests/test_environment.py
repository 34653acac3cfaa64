"""environment.yml (conda) and pyproject.toml (pip) must describe the same environment."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in py["dependencies"] + py["optional-dependencies"]["dev"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip_reqs = [line.strip()[2:] for line in lines[start + 1 :] if line.strip().startswith("- ")]
    assert {_norm(r) for r in pip_reqs} == wanted
    assert any(line.strip() == "- python=3.11" for line in lines)


def test_required_packages_are_declared():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_norm(r)[0] for r in py["dependencies"]}
    for required in ["jupyterlab", "torch", "transformer-lens", "ipywidgets", "matplotlib", "papermill"]:
        assert required in names
    assert ("torch", "==2.13.0") in {_norm(r) for r in py["dependencies"]}


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_saelens_venv_pins_the_course_torch():
    """The SAELens venv (`make test`, bench) installs the course's torch build and a SAELens 6."""
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = dict(_norm(r) for r in py["dependencies"])["torch"]
    script = (ROOT / "bench" / "saelens_venv.sh").read_text()
    assert f"TORCH=torch{torch_pin}\n" in script
    assert re.search(r"^SAELENS=sae-lens==6\.\d+\.\d+$", script, re.M)


def test_llamacpp_venv_builds_a_portable_wheel_once_per_cpu_level():
    """The llama.cpp server venv (tests/autointerp/test_server_real.py): a pinned version, compiled without
    -march=native for a named CPU level, kept in a folder keyed by that level, never in pip's cache (whose
    key ignores the CPU)."""
    script = (ROOT / "bench" / "llamacpp_venv.sh").read_text()
    assert re.search(r"^VERSION=0\.3\.\d+$", script, re.M)
    assert "-DGGML_NATIVE=OFF" in script and "--no-cache-dir" in script and "$LEVEL" in script
    assert "LLAVA_BUILD=OFF" in script
