"""course_lib.lens.steering: the hook, the differing position and the sweep on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from course_lib.lens import predictions, steering


def test_steering_hook_adds_at_one_position_and_leaves_input():
    resid = torch.zeros(2, 4, 3)
    out = steering.steering_hook(resid, None, torch.tensor([1.0, 2.0, 3.0]), 1)
    assert bool((resid == 0).all())
    assert torch.equal(out[:, 1], torch.tensor([[1.0, 2, 3]] * 2))
    assert float(out.abs().sum()) == pytest.approx(12.0)


def test_differing_position():
    a = torch.tensor([[1, 2, 3, 4]])
    assert steering.differing_position(a, torch.tensor([[1, 2, 9, 4]])) == 2
    with pytest.raises(ValueError, match="lengths"):
        steering.differing_position(a, torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="2 positions"):
        steering.differing_position(a, torch.tensor([[1, 7, 9, 4]]))


def test_steering_sweep_flips_paris_to_rome_early_not_late(smollm2):
    a, b = smollm2.to_tokens("The capital of France is"), smollm2.to_tokens("The capital of Italy is")
    pos = steering.differing_position(a, b)
    vectors = steering.resid_at(smollm2, b, pos) - steering.resid_at(smollm2, a, pos)
    assert vectors.shape == (30, smollm2.cfg.d_model)
    ids = [predictions.top_next_tokens(smollm2, "The capital of Italy is", 1)[0].token_id,
           predictions.top_next_tokens(smollm2, "The capital of France is", 1)[0].token_id]
    probs = steering.steering_sweep(smollm2, a, vectors, pos, ids, [0, 29])
    assert probs.shape == (2, 2)
    assert probs[0, 0] > probs[0, 1]  # steered at layer 0: Rome wins
    assert probs[1, 1] > probs[1, 0]  # at the last layer the country position no longer matters: Paris
    zero = steering.steering_sweep(smollm2, a, torch.zeros_like(vectors), pos, ids, [5])
    clean = smollm2(a)[0, -1].float().softmax(-1)[ids]
    assert torch.allclose(zero[0], clean, atol=1e-4)
