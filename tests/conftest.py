"""Shared test setup: a fresh artifact cache per session, the converted SmolLM2 shared.

A stale artifact can never make a test pass: COURSE_LIB_CACHE points at a new temporary folder
for the whole session. The converted SmolLM2 (a slow, code-independent conversion keyed by its
own version string) stays in the user's model cache, shared between sessions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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
