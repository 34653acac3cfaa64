"""course_lib.autointerp.localmodel: the shared-prefix forward and batched generation equal the plain ones
(a tiny random Llama, no download)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from course_lib.autointerp import localmodel


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval()
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=1, decode=lambda ids, skip_special_tokens=True:
                          " ".join(str(int(i)) for i in ids))
    return localmodel.LocalLM(model=model, tokenizer=tok, name="tiny")


def test_shared_prefix_length():
    assert localmodel.shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert localmodel.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # one token left in each
    assert localmodel.shared_prefix_length([[1], [1, 2]]) == 0
    assert localmodel.shared_prefix_length([[4, 5], [6, 5]]) == 0


def test_shared_prefix_forward_equals_the_plain_forward(tiny, monkeypatch):
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(2, 64, (20,), generator=g).tolist()
    seqs = [prefix + torch.randint(2, 64, (n,), generator=g).tolist() for n in (5, 11, 1, 8)]
    h_shared, lengths = tiny.hidden(seqs)
    assert localmodel.shared_prefix_length(seqs) == 20 >= localmodel.MIN_SHARED_PREFIX
    monkeypatch.setattr(localmodel, "MIN_SHARED_PREFIX", 10**9)  # the plain padded forward
    h_plain, _ = tiny.hidden(seqs)
    assert h_shared.shape == h_plain.shape == (4, 31, 32)
    for i, n in enumerate(lengths.tolist()):  # padded positions may differ; real ones must not
        torch.testing.assert_close(h_shared[i, :n], h_plain[i, :n], atol=1e-5, rtol=1e-4)
    # candidate_probs reads the same positions either way
    pos = [[len(s) - 1] for s in seqs]
    monkeypatch.setattr(localmodel, "MIN_SHARED_PREFIX", 16)
    a = tiny.candidate_probs(seqs, pos, [3, 4, 5])
    monkeypatch.setattr(localmodel, "MIN_SHARED_PREFIX", 10**9)
    b = tiny.candidate_probs(seqs, pos, [3, 4, 5])
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_batched_generation_equals_one_at_a_time(tiny):
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(2, 64, (n,), generator=g).tolist() for n in (7, 3, 12)]
    alone = [tiny.generate(p, max_new_tokens=6) for p in prompts]
    together = tiny.generate_many(prompts, max_new_tokens=6)
    assert together == alone
    assert all(len(t.split()) == 6 for t in together)
