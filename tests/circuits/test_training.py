"""course_lib.circuits.training: top-k projection during training, the cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import circuits, weight_sparsity

TINY = circuits.SparseTransformerConfig(d_vocab=64, d_model=32, n_layers=2, d_head=16, d_mlp=48, n_ctx=16)

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

def test_projection_keeps_exactly_k_per_tensor_and_anneal_hits_target():
    torch.manual_seed(0)
    model = circuits.SparseTransformer(TINY)
    tcfg = circuits.CircuitTrainConfig(steps=12, batch_size=8, target_fraction=0.1, anneal_start=0.1, anneal_end=0.6)
    log = circuits.train(model, _stream(), tcfg, progress=False)
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
    tcfg = circuits.CircuitTrainConfig(steps=20, batch_size=8, target_fraction=0.05, anneal_end=0.5)
    tm = circuits.load_or_train("s", TINY, tcfg, stream[:3000], stream[3000:], "synthetic", progress=False)
    measured = circuits.checkpoint_nonzero_fraction(tm.folder)
    expected = sum(weight_sparsity.keep_count(p.numel(), 0.05) for p in tm.model.sparsified_parameters().values())
    expected /= sum(p.numel() for p in tm.model.sparsified_parameters().values())
    assert measured == pytest.approx(expected, rel=1e-9)
    assert measured == pytest.approx(0.05, abs=0.01)
    assert tm.nonzero_fraction == pytest.approx(measured)
    assert str(tm.folder).startswith(str(session_cache))
    again = circuits.load_or_train("s", TINY, tcfg, stream[:3000], stream[3000:], "synthetic", progress=False)
    assert again.folder == tm.folder
    for a, b in zip(tm.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    dense = circuits.load_or_train("d", TINY, dataclasses.replace(tcfg, target_fraction=1.0), stream[:3000],
                             stream[3000:], "synthetic", progress=False)
    assert circuits.checkpoint_nonzero_fraction(dense.folder) > 0.99
    # training learned something: below the uniform-guess loss ln(64)
    assert dense.val_loss < torch.log(torch.tensor(64.0)).item()


def test_train_runs_the_given_schedule_and_projection_and_matches_the_library():
    calls = {"fraction": 0, "project": 0}

    def fraction(*args):
        calls["fraction"] += 1
        return weight_sparsity.kept_fraction(*args)

    def project(w, f):
        calls["project"] += 1
        return weight_sparsity.project_topk(w, f)

    tcfg = circuits.CircuitTrainConfig(steps=6, batch_size=4, target_fraction=0.2, anneal_start=0.1, anneal_end=0.6)
    torch.manual_seed(0)
    a = circuits.SparseTransformer(TINY)
    torch.manual_seed(0)
    b = circuits.SparseTransformer(TINY)
    log_a = circuits.train(a, _stream(), tcfg, progress=False)
    log_b = circuits.train(b, _stream(), tcfg, progress=False, fraction_fn=fraction, project_fn=project)
    assert calls == {"fraction": 6, "project": 6 * len(b.sparsified_parameters())}  # t = 1/6 > 0.1: every step
    assert log_a == log_b
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_embed_fraction_keeps_the_embeddings_at_their_own_density():
    from course_lib.circuits.training import EMBEDDING_PARAMETERS, CircuitTrainConfig, sparse_groups, train
    from course_lib.circuits.transformer import SparseTransformer, SparseTransformerConfig

    torch.manual_seed(0)
    m = SparseTransformer(SparseTransformerConfig(d_model=32, n_layers=1, d_mlp=64, n_ctx=16, d_vocab=64))
    tcfg = CircuitTrainConfig(steps=4, batch_size=2, target_fraction=0.05, embed_fraction=0.5, anneal_start=0.0,
                              anneal_end=0.25, anneal_shape="geometric")
    blocks, embeds = sparse_groups(m, tcfg)
    assert len(embeds) == 3 and len(blocks) + len(embeds) == len(m.sparsified_parameters())
    stream = torch.randint(0, 64, (500,))
    train(m, stream, tcfg, progress=False)
    for n, p in m.sparsified_parameters().items():
        kept = float((p != 0).float().mean())
        if n in EMBEDDING_PARAMETERS:
            assert 0.45 <= kept <= 0.56, n
        elif p.numel() >= 100:
            assert kept <= 0.06, n
    with pytest.raises(ValueError, match="anneal_shape"):
        CircuitTrainConfig(anneal_shape="cosine")
    with pytest.raises(ValueError, match="embed_fraction"):
        CircuitTrainConfig(embed_fraction=0.0)
