"""course_lib.sae.plots: the figures return the numbers they were given; the width plot returns its fitted slope."""

from __future__ import annotations

import math

import matplotlib
import numpy as np

from course_lib.sae import plots


def test_width_plot_fits_the_power_law_it_is_given():
    rows = [{"n_latents": n, "nmse": 2.0 * n ** -0.5, "n_tokens": 10 * n} for n in (256, 512, 1024, 2048)]
    fig, exponent = plots.plot_nmse_vs_width(rows, k=32)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert math.isclose(exponent, -0.5, abs_tol=1e-6)


def test_density_histogram_and_training_plot_are_figures():
    fig = plots.plot_density_histogram(np.array([1e-4, 1e-3, 1e-2, 0.0]), title="densities")
    assert isinstance(fig, matplotlib.figure.Figure)
    hist = {"step": [0, 1, 2], "nmse": [1.0, 0.5, 0.3], "l0": [32, 32, 32], "dead_fraction": [0.0, 0.1, 0.1],
            "tokens": [0, 10, 20]}
    try:
        fig = plots.plot_training(hist, title="t")
    except KeyError as e:  # the history's keys are the training loop's; name what is missing
        raise AssertionError(f"plot_training needs {e}") from None
    assert isinstance(fig, matplotlib.figure.Figure)
