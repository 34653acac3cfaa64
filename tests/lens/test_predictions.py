"""course_lib.lens.predictions agree with the model's own forward pass."""

from __future__ import annotations

import torch

from course_lib import lens


def test_lens_functions_agree_with_model(smollm2):
    preds = lens.top_next_tokens(smollm2, "The capital of France is", k=3)
    assert preds[0].token == " Paris" and preds[0].prob > preds[1].prob
    per_layer, final_prob = lens.logit_lens(smollm2, "The capital of France is")
    assert len(per_layer) == 30 and final_prob.shape == (30,)
    # the last layer of the logit lens is the model's own output
    assert per_layer[-1][0].token == " Paris"
    assert abs(float(final_prob[-1]) - preds[0].prob) < 1e-3

def test_residual_norms_and_ablation(smollm2):
    toks = smollm2.to_tokens("def add(a, b):\n    return a + b\n")
    norms = lens.residual_norms(smollm2, toks)
    assert norms.shape == (30, 1, toks.shape[1])
    assert (norms[15, 0, 0] > 10 * norms[15, 0, 1:].median())  # the BOS outlier
    out = lens.ablation_losses(smollm2, toks, layers=[0])
    assert out["mlp"][0] > out["clean"][0]  # zeroing the first MLP hurts
    logits = smollm2(toks)
    manual = torch.nn.functional.cross_entropy(logits[0, :-1].float(), toks[0, 1:])
    assert abs(float(lens.token_loss(logits, toks)) - float(manual)) < 1e-4
