"""course_lib.sae.store: round trip, shuffling, bounded buffer."""

from __future__ import annotations

import torch

from course_lib import sae


def _store(tmp_path, n=5000, d=8, shard=512):
    acts = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, d)  # row i is all i
    return acts, sae.write_store(tmp_path / "store", acts, shard_tokens=shard)

def test_store_round_trip_one_epoch_each_row_once(tmp_path):
    acts, store = _store(tmp_path)
    assert len(store) == 5000 and len(store.shards) == 10
    assert torch.equal(store.head(700), acts[:700])
    seen = torch.cat(list(store.iter_batches(100, torch.Generator().manual_seed(0), buffer_tokens=1000)))
    assert seen.shape == (5000, 8)
    ids = seen[:, 0].long()
    assert torch.equal(ids.sort().values, torch.arange(5000))  # every row exactly once
    assert not torch.equal(ids, torch.arange(5000))  # shuffled
    # neighbouring batches mix rows from different shards
    first = ids[:100] // 512
    assert first.unique().numel() > 1

def test_store_buffer_is_bounded(tmp_path):
    _, store = _store(tmp_path, n=20_000, shard=500)
    it = store.iter_batches(64, torch.Generator().manual_seed(1), buffer_tokens=1000, epochs=None)
    for _ in range(1000):  # 64k rows: more than three epochs
        next(it)
    assert 0 < store.peak_buffer_rows <= 1000 + 500
