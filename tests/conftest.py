"""Shared test setup: a fresh artifact cache per session, the converted SmolLM2 shared.

A stale artifact can never make a test pass: COURSE_LIB_CACHE points at a new temporary folder
for the whole session. The converted SmolLM2 (a slow, code-independent conversion keyed by its
own version string) stays in the user's model cache, shared between sessions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Spinning OpenMP threads make torch up to 10x slower when other jobs share the cores (as `make test`
# does for its notebook kernels, via the Makefile); set before any test imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
# Where the notebook tests write their smoke outputs (the runner's layout), read by the report test.
SMOKE_OUTPUTS = Path(os.environ.get("COURSE_TEST_OUTPUTS", ROOT / "outputs" / "_smoke_tests"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="course-lib-test-cache-"))
if "COURSE_LIB_MODEL_CACHE" not in os.environ:
    import platformdirs

    os.environ["COURSE_LIB_MODEL_CACHE"] = str(Path(platformdirs.user_cache_dir("mechinterp-course")) / "models")
os.environ["COURSE_LIB_CACHE"] = str(_SESSION_CACHE)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def session_cache() -> Path:
    return _SESSION_CACHE


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct as a TransformerBridge (float32, CPU), loaded once per session."""
    from course_lib import lm

    return lm.load_lm("smollm2", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def smoke_outputs() -> Path:
    return SMOKE_OUTPUTS


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium (Playwright cannot download its own browsers here).

    Missing: the test is skipped with the install command, except under CI (``CI=true``), where it
    fails: `.ci/run` installs the browser.
    """
    path = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        msg = "Chromium not found: install it with `sudo apt-get install -y chromium` (Debian/Ubuntu)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " - CI must run the browser tests")
        pytest.skip(msg)
    return path


@pytest.fixture(autouse=True)
def _autograd_on():
    """Each test starts with autograd on: something an earlier test loads turns it off globally (seen on main:
    tests/toy's backward() calls failed after tests/sae and tests/test_*.py), and a test must not depend on order."""
    import torch

    torch.set_grad_enabled(True)
    yield
