"""course_lib.workshop: generated learner notebooks, reset with a backup, and the cache archive round trip."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from course_lib import cache, exercises, workshop

SOURCE = {"cells": [{"cell_type": "code", "execution_count": None, "id": "a", "metadata": {}, "outputs": [],
                     "source": "def f():\n    # BEGIN SOLUTION hint: return one\n    return 1\n    # END SOLUTION"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    nbs, exs = tmp_path / "notebooks", tmp_path / "exercises"
    nbs.mkdir()
    (nbs / "01_demo.ipynb").write_text(json.dumps(SOURCE))
    (nbs / "02_plain.ipynb").write_text(json.dumps({**SOURCE, "cells": []}))
    return nbs, exs


def test_generate_all_drift_and_reset(tmp_path):
    nbs, exs = _dirs(tmp_path)
    assert workshop.drift(nbs, exs) == ["01_demo.ipynb is missing"]
    assert [p.name for p in workshop.generate_all(nbs, exs)] == ["01_demo.ipynb"]  # no exercises: no copy
    assert workshop.drift(nbs, exs) == []
    learner = exs / "01_demo.ipynb"
    assert "NotImplementedError('hint: return one')" in learner.read_text()
    learner.write_text("my edits")
    assert workshop.drift(nbs, exs) == ["01_demo.ipynb differs from the generated version"]
    path, backup = workshop.reset("01", nbs, exs, tmp_path / "backups")
    assert path == learner and backup is not None and backup.read_text() == "my edits"
    assert learner.read_text() == exercises.dumps(exercises.generate(SOURCE))
    with pytest.raises(SystemExit, match="valid: 01, 02"):
        workshop.reset("07", nbs, exs, tmp_path / "backups")


def test_pack_and_unpack_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "teacher"))
    monkeypatch.delenv("COURSE_LIB_MODEL_CACHE", raising=False)
    root = cache.cache_dir()
    (root / "sae" / "abc").mkdir(parents=True)
    (root / "sae" / "abc" / "weights.safetensors").write_bytes(b"\x00\x01" * 100)
    (root / "models" / "smollm2").mkdir(parents=True)
    (root / "models" / "smollm2" / "model.safetensors").write_bytes(b"m" * 10)
    (root / "sae" / ".abc.tmp-1-host.x").mkdir()  # an unfinished build: left out
    (root / "sae" / ".abc.tmp-1-host.x" / "partial").write_text("x")
    archive = tmp_path / "share" / "cache.tar.gz"
    names = workshop.pack_cache(archive)
    assert sorted(names) == ["cache/sae/abc/weights.safetensors", "models/smollm2/model.safetensors"]

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "learner"))
    assert workshop.unpack_cache(archive) == 2
    learner = tmp_path / "learner"
    assert (learner / "sae" / "abc" / "weights.safetensors").read_bytes() == b"\x00\x01" * 100
    assert (learner / "models" / "smollm2" / "model.safetensors").read_bytes() == b"m" * 10


def test_unpack_refuses_entries_outside_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "p"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="cache/../../escaped")
    with pytest.raises(ValueError, match="unexpected entry"):
        workshop.unpack_cache(evil)
    assert not (tmp_path / "escaped").exists()


def test_command_line_check_reports_the_repository_state(capsys):
    assert workshop.main(["exercises", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_makefile_workshop_targets_set_themselves_up():
    text = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    for target in ("exercises", "reset", "pack-cache", "unpack-cache"):
        assert f"\n{target}: $(STAMP)\n" in text, f"`make {target}` must depend on $(STAMP) (setup)"
        assert f"course_lib.workshop {target}" in text
