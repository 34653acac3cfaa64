"""course_lib.lens.notebook: the Markdown readings follow the numbers they are given."""

from __future__ import annotations

import torch

from course_lib.lens import notebook
from course_lib.lens.predictions import LensTrace, Prediction, ranked_costs
from course_lib.lens.sink import SinkProfile


def _profile(share, ratio, n_pos=11):
    n = len(share)
    norms = torch.ones(n, 1, n_pos)
    norms[:, 0, 0] = torch.tensor(ratio, dtype=torch.float)
    return SinkProfile(torch.tensor(share)[:, None].repeat(1, 2), torch.zeros(n, 2), norms)


def test_sink_reading_before_and_after():
    before = notebook.sink_reading(_profile([0.01, 0.65, 0.7, 0.02, 0.8], [2, 5, 4, 200, 150]))
    assert "jumps at layer 3" in before and "layers 1-2" in before and "not how the sink is first built" in before
    after = notebook.sink_reading(_profile([0.01, 0.02, 0.03, 0.9], [2, 200, 150, 100]))
    assert "not how" not in after and "layer 3" in after
    none = notebook.sink_reading(_profile([0.01, 0.02], [2, 200]))
    assert "cannot say" in none


def test_ranked_costs_and_ablation_reading():
    losses = {"clean": [2.0], "attn": [3.0, 2.1], "mlp": [9.0, 4.0]}
    assert ranked_costs(losses, [0, 1])[:2] == [("mlp", 0, 7.0), ("mlp", 1, 2.0)]
    text = notebook.ablation_reading(losses, [0, 1], {("mlp", 1): 2.05, ("attn", 0): 2.9}, jump=1)
    assert "| 1 | mlp 0 | +7.00 |" in text and "| 2 | mlp 1 | +2.00 | +0.05 |" in text
    assert "BOS position alone" in text and "BOS norm jumps" in text
    assert "attn 0 (+1.00) still costs +0.90" in text


def test_heads_lens_and_steering_readings():
    text = notebook.heads_reading(1, [0.3, 0.01, 0.2], [0, 2], torch.tensor([0.6, 0.1, 0.1]),
                                  torch.tensor([0.0, 0.5, 0.2]), n_pos=128)
    assert text.index("head 0") < text.index("head 2") and "Head 0 puts" in text
    rank = torch.tensor([500, 90, 3, 1, 1])
    trace = LensTrace(Prediction(" Paris", 7, 0.8), [[Prediction(" a", 1, 0.1)]] * 5,
                      torch.tensor([1e-6, 1e-3, 0.2, 0.4, 0.8]), rank)
    lens_text = notebook.lens_reading(trace)
    assert "top 100 at layer 1" in lens_text and "top token at layer 3" in lens_text and "0.5 at layer 4" in lens_text
    probs = torch.tensor([[0.5, 0.01], [0.4, 0.02], [0.01, 0.8]])
    steer = notebook.steering_reading(probs, [0, 10, 20], [" Rome", " Paris"], position=4)
    assert "2 of 3 layers, up to layer 10" in steer and "From layer 20 on" in steer
