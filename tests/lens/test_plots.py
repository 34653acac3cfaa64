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
