"""Tests for course_lib.sparse_transformer (tiny configs, fixed seeds)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import sparse_transformer as st
from course_lib import weight_sparsity

TINY = st.SparseTransformerConfig(d_vocab=64, d_model=32, n_layers=2, d_head=16, d_mlp=48, n_ctx=16)


def _stream(n: int = 4000, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # a learnable stream: token t+1 = (token t * 3 + 1) mod vocab, with some noise
    x = torch.empty(n, dtype=torch.long)
    x[0] = 1
    noise = torch.randint(0, vocab, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.2
    for i in range(1, n):
        x[i] = noise[i] if flip[i] else (x[i - 1] * 3 + 1) % vocab
    return x


def test_hooks_cover_every_node_type_with_shapes():
    torch.manual_seed(0)
    model = st.SparseTransformer(TINY)
    tokens = torch.randint(0, TINY.d_vocab, (2, 7))
    _, cache = model.run_with_cache(tokens)
    for kind, hook, n in st.iter_node_hooks(TINY):
        assert hook in cache, hook
        assert cache[hook].reshape(2, 7, -1).shape[-1] == n, (kind, hook)
    assert cache["blocks.0.attn.hook_q"].shape == (2, 7, TINY.n_heads, 16)
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, TINY.n_heads, 7, 7)


def test_causal_and_sink():
    torch.manual_seed(0)
    model = st.SparseTransformer(TINY)
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
    y = st.abstopk(x, 0.25)
    assert ((y != 0).sum(-1) == 10).all()
    kept = y != 0
    assert torch.equal(y[kept], x[kept])
    assert (x.abs()[~kept].reshape(3, 5, -1).max(-1).values <= y.abs().max(-1).values).all()
    cfg = dataclasses.replace(TINY, act_topk_fraction=0.25)
    model = st.SparseTransformer(cfg)
    _, cache = model.run_with_cache(torch.randint(0, 64, (2, 5)))
    assert ((cache["blocks.0.mlp.hook_post"] != 0).sum(-1) <= 12).all()


def test_unembed_columns_matches_forward_with_bigram():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, use_bigram=True, use_pos_emb=True)
    model = st.SparseTransformer(cfg)
    with torch.no_grad():
        model.W_bigram.normal_()
    tokens = torch.randint(0, 64, (4, 6))
    ids = torch.randint(0, 64, (4, 2))
    with torch.no_grad():
        full = model(tokens)[:, -1]
        final = model(tokens, return_type="final")[:, -1]
        part = model.unembed_columns(final, tokens[:, -1], ids)
    assert torch.allclose(part, full.gather(1, ids), atol=1e-5)


def test_projection_keeps_exactly_k_per_tensor_and_anneal_hits_target():
    torch.manual_seed(0)
    model = st.SparseTransformer(TINY)
    tcfg = st.TrainConfig(steps=12, batch_size=8, target_fraction=0.1, anneal_start=0.1, anneal_end=0.6)
    log = st.train(model, _stream(), tcfg, progress=False)
    params = model.sparsified_parameters()
    assert "W_E" in params and "blocks.0.mlp.b_in" in params and "blocks.0.attn.W_Q" in params
    assert not any("ln" in n or "sink" in n for n in params)
    for name, p in params.items():
        k = weight_sparsity.keep_count(p.numel(), 0.1)
        assert int((p != 0).sum()) == k, name
    sched = weight_sparsity.SparsitySchedule(0.1, 0.1, 0.6)
    assert sched.fraction_at(0, 30) == 1.0
    assert sched.fraction_at(7, 12) == pytest.approx(0.1)  # t = 8/12 > 0.6
    assert sched.fraction_at(6, 12) > 0.1  # t = 7/12 < 0.6: still annealing
    assert log["kept_fraction"][-1] == pytest.approx(0.1)
    assert log["kept_fraction"][0] == 1.0
    # half-way through the anneal the kept fraction is half-way between 1 and the target
    assert sched.fraction_at(13, 40) == pytest.approx(0.55, abs=1e-6)  # t = 14/40 = 0.35
    # norms and the sink stay dense
    assert (model.blocks[0].ln1.w != 0).all()


def test_checkpoint_nonzero_fraction_matches_target_and_cache_reloads(session_cache):
    stream = _stream()
    tcfg = st.TrainConfig(steps=20, batch_size=8, target_fraction=0.05, anneal_end=0.5)
    tm = st.load_or_train("s", TINY, tcfg, stream[:3000], stream[3000:], "synthetic", progress=False)
    measured = st.checkpoint_nonzero_fraction(tm.folder)
    expected = sum(weight_sparsity.keep_count(p.numel(), 0.05) for p in tm.model.sparsified_parameters().values())
    expected /= sum(p.numel() for p in tm.model.sparsified_parameters().values())
    assert measured == pytest.approx(expected, rel=1e-9)
    assert measured == pytest.approx(0.05, abs=0.01)
    assert tm.nonzero_fraction == pytest.approx(measured)
    assert str(tm.folder).startswith(str(session_cache))
    again = st.load_or_train("s", TINY, tcfg, stream[:3000], stream[3000:], "synthetic", progress=False)
    assert again.folder == tm.folder
    for a, b in zip(tm.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    dense = st.load_or_train("d", TINY, dataclasses.replace(tcfg, target_fraction=1.0), stream[:3000],
                             stream[3000:], "synthetic", progress=False)
    assert st.checkpoint_nonzero_fraction(dense.folder) > 0.99
    # training learned something: below the uniform-guess loss ln(64)
    assert dense.val_loss < torch.log(torch.tensor(64.0)).item()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="multiple"):
        st.SparseTransformerConfig(d_model=40, d_head=16)
