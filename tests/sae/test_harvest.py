"""course_lib.sae.harvest: SmolLM2's residual stream into a store (BOS and massive tokens left out)."""

from __future__ import annotations

import torch

from course_lib import sae


def test_harvest_smollm2(tmp_path, smollm2):
    cfg = sae.HarvestConfig(n_tokens=200, seq_len=24, batch_size=4, dtype="float32", store_dtype="float32",
                        shard_tokens=64)
    meta = sae.harvest.harvest(cfg, tmp_path, model=smollm2, progress=False)
    store = sae.ActivationStore(tmp_path)
    assert len(store) == 200 == meta["n_tokens"]
    assert meta["stopped_at_layer"] == cfg.layer + 1
    acts = torch.cat([a for a, _ in store.iter_shards()])
    where = torch.cat([w for _, w in store.iter_shards()])
    assert (where[:, 1] >= 1).all()  # BOS never stored
    # the stored vectors are the full model's residual stream at those positions
    tokens = store.tokens
    _, cache = smollm2.run_with_cache(tokens[:2], names_filter=cfg.hook_name)
    ref = cache[cfg.hook_name]
    sel = where[:, 0] < 2
    got = acts[sel]
    want = ref[where[sel, 0].long(), where[sel, 1].long()]
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-3)
    norms = acts.norm(dim=1)
    assert norms.max() <= cfg.massive_factor * norms.median() * 1.5
