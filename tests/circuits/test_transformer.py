"""course_lib.circuits.transformer: hooks, causality, the sink, AbsTopK, bigram."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import circuits

TINY = circuits.SparseTransformerConfig(d_vocab=64, d_model=32, n_layers=2, d_head=16, d_mlp=48, n_ctx=16)

def test_hooks_cover_every_node_type_with_shapes():
    torch.manual_seed(0)
    model = circuits.SparseTransformer(TINY)
    tokens = torch.randint(0, TINY.d_vocab, (2, 7))
    _, cache = model.run_with_cache(tokens)
    for kind, hook, n in circuits.iter_node_hooks(TINY):
        assert hook in cache, hook
        assert cache[hook].reshape(2, 7, -1).shape[-1] == n, (kind, hook)
    assert cache["blocks.0.attn.hook_q"].shape == (2, 7, TINY.n_heads, 16)
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, TINY.n_heads, 7, 7)

def test_causal_and_sink():
    torch.manual_seed(0)
    model = circuits.SparseTransformer(TINY)
    a = torch.randint(0, 64, (1, 10))
    b = a.clone()
    b[0, 6:] = (b[0, 6:] + 5) % 64
    with torch.no_grad():
        la, lb = model(a), model(b)
    assert torch.allclose(la[0, :6], lb[0, :6], atol=1e-5)
    assert not torch.allclose(la[0, 6:], lb[0, 6:])
    # a huge sink logit sends all attention to the (zero-valued) sink slot
    with torch.no_grad():
        model.blocks[0].attn.sink.fill_(50.0)
    _, cache = model.run_with_cache(a)
    assert cache["blocks.0.attn.hook_pattern"].sum(-1).max() < 1e-6
    assert torch.allclose(cache["blocks.0.hook_attn_out"], model.blocks[0].attn.b_O.expand(1, 10, -1))

def test_abstopk_keeps_fraction():
    x = torch.randn(3, 5, 40)
    y = circuits.abstopk(x, 0.25)
    assert ((y != 0).sum(-1) == 10).all()
    kept = y != 0
    assert torch.equal(y[kept], x[kept])
    assert (x.abs()[~kept].reshape(3, 5, -1).max(-1).values <= y.abs().max(-1).values).all()
    cfg = dataclasses.replace(TINY, act_topk_fraction=0.25)
    model = circuits.SparseTransformer(cfg)
    _, cache = model.run_with_cache(torch.randint(0, 64, (2, 5)))
    assert ((cache["blocks.0.mlp.hook_post"] != 0).sum(-1) <= 12).all()

def test_unembed_columns_matches_forward_with_bigram():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, use_bigram=True, use_pos_emb=True)
    model = circuits.SparseTransformer(cfg)
    with torch.no_grad():
        model.W_bigram.normal_()
    tokens = torch.randint(0, 64, (4, 6))
    ids = torch.randint(0, 64, (4, 2))
    with torch.no_grad():
        full = model(tokens)[:, -1]
        final = model(tokens, return_type="final")[:, -1]
        part = model.unembed_columns(final, tokens[:, -1], ids)
    assert torch.allclose(part, full.gather(1, ids), atol=1e-5)

def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="multiple"):
        circuits.SparseTransformerConfig(d_model=40, d_head=16)


@pytest.mark.parametrize("act_topk", [None, 0.5])
def test_last_position_forward_equals_the_full_forward_there(act_topk):
    """``last=``: the final block computes only each row's last position; same numbers, also under hooks."""
    torch.manual_seed(0)
    model = circuits.SparseTransformer(dataclasses.replace(TINY, act_topk_fraction=act_topk)).eval()
    tokens = torch.randint(0, TINY.d_vocab, (5, 9))
    last = torch.tensor([8, 3, 0, 5, 8])
    full = model(tokens, return_type="final")[torch.arange(5), last]
    part = model(tokens, return_type="final", last=last)
    assert part.shape == (5, 1, TINY.d_model)
    torch.testing.assert_close(part[:, 0], full, atol=1e-5, rtol=1e-5)
    hook = ("blocks.1.mlp.hook_post", lambda a, hook: a * 0.5)
    with model.hooks(fwd_hooks=[hook]):
        full = model(tokens, return_type="final")[torch.arange(5), last]
        part = model(tokens, return_type="final", last=last)[:, 0]
    torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="return_type='final'"):
        model(tokens, last=last)
