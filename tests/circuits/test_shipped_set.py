"""The reference set shipped for notebook 02: complete, within budget, loadable, as its manifest says."""

from __future__ import annotations

import json

from course_lib import weight_sparsity
from course_lib.circuits import reference_training as rt
from course_lib.circuits import training


def test_shipped_set_is_the_reference_set_within_40_mb():
    folder = rt.shipped_dir()
    manifest = json.loads((folder / rt.MANIFEST).read_text())
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 40e6
    assert [e["name"] for e in manifest["models"]] == [s.name for s in rt.reference_set()]
    assert manifest["command"].startswith("python -m course_lib.circuits.reference_training --set reference")
    assert manifest["machine"]["cpu_count"] and manifest["tokenizer"] == rt.TOKENIZER
    for e in manifest["models"]:
        assert e["steps"] == e["train"]["steps"] and e["wall_time_s"] > 0 and e["cpu_time_s"] > 0
        assert 2.0 < e["val_loss"] < 6.0 and set(e["task_loss"]) and e["log"]["kept_fraction"]


def test_shipped_models_load_with_their_recorded_sparsity_and_tokenizer():
    tok, data = rt.set_tokenizer("reference", "shipped")
    assert data == "full" and tok.get_vocab_size() == 2048
    loaded = rt.load_set(rt.shipped_dir())
    assert len(loaded) == len(rt.reference_set()) == 45
    for entry, model in loaded:
        params = model.sparsified_parameters()
        nz = weight_sparsity.nonzero_fraction(params.values())
        assert abs(nz - entry["nonzero_fraction"]) < 1e-9
        embed = entry["train"].get("embed_fraction")  # the sparser models keep their embeddings at one density
        blocks = [p for n, p in params.items() if embed is None or n not in training.EMBEDDING_PARAMETERS]
        assert weight_sparsity.nonzero_fraction(blocks) <= entry["train"]["target_fraction"] + 1e-3
        if embed is not None:
            emb = [p for n, p in params.items() if n in training.EMBEDDING_PARAMETERS]
            assert weight_sparsity.nonzero_fraction(emb) <= embed + 1e-3
