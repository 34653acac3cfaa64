"""course_lib.circuits.checkpoints: compact storage, manifest, deterministic regeneration."""

from __future__ import annotations

import json

import torch

from course_lib import circuits
from course_lib.circuits import checkpoints


def test_compact_round_trip_is_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    sparse = torch.randn(40, 30, generator=g)
    sparse[torch.rand(40, 30, generator=g) > 0.05] = 0.0
    state = {"sparse": sparse, "dense": torch.randn(7, 3, generator=g), "zeros": torch.zeros(5),
             "scalar": torch.tensor(2.5), "ints": torch.tensor([0, 0, 3, 0]), "half": torch.randn(6).half()}
    path = tmp_path / "m.safetensors"
    checkpoints.save_compact(state, path)
    back = checkpoints.load_compact(path)
    assert set(back) == set(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k
    # the sparse tensor is stored as indices + values: much smaller than dense
    dense_path = tmp_path / "d.safetensors"
    from safetensors.torch import save_file
    save_file({"sparse": sparse}, str(dense_path))
    only = tmp_path / "s.safetensors"
    checkpoints.save_compact({"sparse": sparse}, only)
    assert only.stat().st_size < 0.25 * dense_path.stat().st_size


def test_reference_set_is_deterministic_and_loads(tmp_path):
    mcfg = circuits.SparseTransformerConfig(d_vocab=64, d_model=16, n_layers=1, d_mlp=32, n_ctx=8)
    tcfg = circuits.CircuitTrainConfig(steps=6, batch_size=2, eval_windows=2)
    g = torch.Generator().manual_seed(0)
    train_stream, val_stream = torch.randint(0, 64, (500,), generator=g), torch.randint(0, 64, (200,), generator=g)
    a = checkpoints.build_reference_set(tmp_path / "a", mcfg, tcfg, [0.2], train_stream, val_stream, "cmd a",
                                        data_key={"tokens": 500})
    checkpoints.build_reference_set(tmp_path / "b", mcfg, tcfg, [0.2], train_stream, val_stream, "cmd b")
    for m in a["models"]:
        sa = checkpoints.load_compact(tmp_path / "a" / m["file"])
        sb = checkpoints.load_compact(tmp_path / "b" / m["file"])
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["command"] == "cmd a" and man["model"]["d_model"] == 16 and "cpu_count" in man["machine"]
    assert [m["name"] for m in man["models"]] == ["dense", "sparse 0.2"]
    for m in man["models"]:
        assert m["steps"] == 6 and m["wall_time_s"] >= 0 and m["val_loss"] > 0 and m["final_train_loss"] > 0
    assert man["models"][1]["nonzero_fraction"] < 0.3
    models = checkpoints.load_reference_set(tmp_path / "a", mcfg)
    assert [m.name for m in models] == ["dense", "sparse 0.2"]
    assert models[1].val_loss == man["models"][1]["val_loss"]
    assert checkpoints.load_reference_set(tmp_path / "missing", mcfg) is None
    assert checkpoints.load_reference_set(tmp_path / "a", mcfg, data_key={"tokens": 500}) is not None
    assert checkpoints.load_reference_set(tmp_path / "a", mcfg, data_key={"tokens": 501}) is None  # other corpus
    other = circuits.SparseTransformerConfig(d_vocab=64, d_model=32, n_layers=1, d_mlp=32, n_ctx=8)
    assert checkpoints.load_reference_set(tmp_path / "a", other) is None
