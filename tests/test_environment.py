"""The environments: environment.yml, the locks and pyproject.toml agree; the venv scripts install the locks."""

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _lockfile():
    spec = importlib.util.spec_from_file_location("lockfile", ROOT / "requirements" / "lockfile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_environment_yml_installs_the_lock_and_the_course_torch():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = dict(_norm(r) for r in py["dependencies"])["torch"]
    lines = [line.strip() for line in (ROOT / "environment.yml").read_text().splitlines()]
    start = lines.index("- pip:")
    pip_reqs = [line[2:] for line in lines[start + 1:] if line.startswith("- ")]
    assert pip_reqs == [f"torch{torch_pin}", "-r requirements/course.txt"]
    assert "- python=3.11" in lines


def test_every_lock_matches_its_inputs_and_pins_what_they_ask_for():
    """Each lock is unedited and made from the current inputs, and its pins satisfy the loose specs."""
    from packaging.requirements import Requirement

    lf = _lockfile()
    for name in lf.LOCKS:
        assert lf.check(name) is None, lf.check(name)
    pins = lf.pins("course")
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in py["dependencies"] + py["optional-dependencies"]["dev"]:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        if name == "torch":
            assert name not in pins  # installed first, on its own
            continue
        assert name in pins, f"{name} is not in requirements/course.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"
    assert "sae-lens" in lf.pins("saelens") and "torch" not in lf.pins("saelens")
    assert "uvicorn" in lf.pins("llamacpp") and "llama-cpp-python" not in lf.pins("llamacpp")


def test_a_stale_or_edited_lock_fails_with_the_command_that_regenerates_it(tmp_path, monkeypatch):
    lf = _lockfile()
    (tmp_path / "x.in").write_text("numpy==2.0\n")
    monkeypatch.setattr(lf, "HERE", tmp_path)
    monkeypatch.setattr(lf, "ROOT", tmp_path)
    monkeypatch.setattr(lf, "LOCKS", {"x": (tmp_path / "x.in", ("torch",))})
    assert "missing" in lf.check("x")
    body = "numpy==2.0\n    # via -r x.in\n"
    lock = tmp_path / "x.txt"
    lock.write_text(f"# inputs-sha256: {lf.inputs_digest('x')}\n# body-sha256: {lf._body_digest(body)}\n\n{body}")
    assert lf.check("x") is None
    (tmp_path / "x.in").write_text("numpy==2.1\n")  # the specs changed, the lock did not
    assert "does not match x.in" in lf.check("x") and "make lock" in lf.check("x")
    (tmp_path / "x.in").write_text("numpy==2.0\n")
    lock.write_text(lock.read_text().replace("numpy==2.0", "numpy==2.2"))  # edited by hand
    assert "edited by hand" in lf.check("x") and "make lock" in lf.check("x")
    rc = subprocess.run([sys.executable, str(ROOT / "requirements" / "lockfile.py"), "check", "nope"],
                        capture_output=True, text=True)
    assert rc.returncode == 2 and "course" in rc.stderr


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


def test_makefile_installs_the_torch_pyproject_pins():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = dict(_norm(r) for r in py["dependencies"])["torch"]
    assert re.search(rf"^TORCH_PIN := torch{re.escape(torch_pin)}$", (ROOT / "Makefile").read_text(), re.M)


def _path_without_compilers(tmp_path):
    """A PATH folder with the few tools the venv scripts use, and no C/C++ compiler."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["bash", "sed", "grep", "cut", "uname", "cat", "rm", "mkdir", "ls", "date", "env", "dirname", "mv",
                 "touch", "mktemp", "python3"]:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_a_compiler_the_llamacpp_build_is_skipped_outside_ci_and_fails_under_it(tmp_path, ci):
    env = {"PATH": _path_without_compilers(tmp_path), "HOME": str(tmp_path), "CI": ci,
           "LLAMACPP_WHEELS": str(tmp_path / "no-wheels")}
    venv = tmp_path / "venv"
    out = subprocess.run(["bash", str(ROOT / "bench" / "llamacpp_venv.sh"), str(venv)], env=env,
                         capture_output=True, text=True, cwd=ROOT)
    text = out.stdout + out.stderr
    assert "no C++ compiler" in text and "apt-get install -y g++" in text, text
    assert text.count("\n") == 1, text  # one line, no CMake output
    assert out.returncode == (1 if ci else 0)
    assert not venv.exists()  # nothing built, no stamp: the next make test tries again
