"""course_lib.toy.plots: every figure function returns a Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from course_lib import toy


def test_plots_return_figures():
    g = torch.Generator().manual_seed(0)
    W2 = torch.randn(3, 2, 5, generator=g)
    p = torch.tensor([1.0, 0.3, 0.1])
    W = torch.randn(3, 4, 8, generator=g)
    figs = [
        toy.plots.feature_directions(W2, p, toy.importances(5, 0.9)),
        toy.plots.wtw_grid(W, p),
        toy.plots.dims_per_feature_plot(p, W),
        toy.plots.phase_diagram([0.0, 0.9], [0.5, 2.0], torch.tensor([0, 1, 2, 0])),
        toy.plots.neuron_feature_grid(W, ["a", "b", "c"], "title"),
        toy.plots.weight_sparse_comparison([
            {"kept_fraction": k, "features_represented": 3.0, "features_per_neuron": 1.0,
             "interference": 0.1, "dims_per_feature": 0.5, "loss": 0.1} for k in (1.0, 0.5, 0.5)]),
        toy.plots.widget_view(W[:1], "t"),
    ]
    for f in figs:
        assert isinstance(f, Figure) and f.axes
        plt.close(f)
    with pytest.raises(ValueError):
        toy.plots.feature_directions(W, p, toy.importances(8, 0.9))


def test_dims_per_feature_plot_draws_the_floor_m_over_n():
    g = torch.Generator().manual_seed(0)
    fig = toy.plots.dims_per_feature_plot(torch.tensor([1.0, 0.3, 0.1]), torch.randn(3, 4, 16, generator=g))
    ax = fig.axes[0]
    assert any(t.get_text() == "m/n" and t.get_position()[1] == pytest.approx(0.25) for t in ax.texts)
    assert any(list(line.get_ydata()) == [0.25, 0.25] and line.get_linestyle() == ":" for line in ax.lines)
    assert "floor m/n" in ax.get_title()
    plt.close(fig)
