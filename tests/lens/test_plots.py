"""course_lib.lens.plots: each plot returns a figure with the data it was given (no show())."""

from __future__ import annotations

import matplotlib
import torch

from course_lib.lens import plots
from course_lib.lens.predictions import Prediction


def test_plots_return_figures_with_their_data():
    preds = [Prediction(" Paris", 1, 0.6), Prediction(" the", 2, 0.1)]
    fig = plots.predictions_bar(preds, "The capital of France is")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert sorted(round(p.get_width(), 3) for p in fig.axes[0].patches) == [0.1, 0.6]
    fig = plots.residual_norm_by_layer(torch.tensor([[[100.0, 1.0, 2.0]], [[200.0, 2.0, 3.0]]]))  # [layer, batch, pos]
    assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
    fig = plots.attention_heads(torch.rand(4, 3, 3), ["<s>", "a", "b"], layer=0, heads=[0, 1])
    assert len([ax for ax in fig.axes if ax.images]) == 2


def test_new_plots_carry_their_data():
    from course_lib.lens.predictions import LensTrace
    from course_lib.lens.sink import SinkProfile

    top = [[Prediction(",", 1, 0.5), Prediction(" the", 2, 0.2)], [Prediction(" Paris", 3, 0.9)]]
    trace = LensTrace(Prediction(" Paris", 3, 0.9), top, torch.tensor([1e-4, 0.9]), torch.tensor([120, 1]))
    fig = plots.logit_lens_trace_plot(trace)
    ax_rank = fig.axes[0]
    assert list(ax_rank.lines[0].get_ydata()) == [120, 1] and ax_rank.get_yscale() == "log"
    labels = [t.get_text() for t in ax_rank.child_axes[0].get_xticklabels()]  # the top axis: word-like tokens only
    assert labels == [" the", " Paris"]
    norms = torch.ones(3, 1, 5)
    norms[:, 0, 0] = torch.tensor([2.0, 100.0, 90.0])
    prof = SinkProfile(torch.tensor([[0.1, 0.2], [0.5, 0.7], [0.6, 0.8]]), torch.zeros(3, 2), norms)
    fig = plots.sink_vs_norm(prof)
    assert list(fig.axes[0].lines[0].get_ydata()) == [2.0, 100.0, 90.0]
    assert [round(float(y), 3) for y in fig.axes[1].lines[0].get_ydata()] == [0.15, 0.6, 0.7]
    fig = plots.steering_plot(torch.tensor([[0.5, 0.1], [0.1, 0.7]]), [0, 5], [" Rome", " Paris"], "t")
    assert [list(line.get_ydata()) for line in fig.axes[0].lines[:2]] == [[0.5, 0.1], [0.1, 0.7]]
    losses = {"clean": [1.0], "attn": [1.5, 1.1], "mlp": [4.0, 2.0]}
    fig = plots.ablation_bars(losses, [0, 1])
    assert [t.get_text() for t in fig.axes[0].texts] == ["#1 mlp 0", "#2 mlp 1", "#3 attn 0"]
