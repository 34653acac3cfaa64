"""course_lib.circuits.checkpoints: compact storage is exact and small (regeneration: test_reference_training)."""

from __future__ import annotations

import torch

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
