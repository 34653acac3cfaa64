"""course_lib.sae.evaluation's convergence check (late_fall, training_objective) and the multi-architecture
frontier figure."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course_lib import sae  # noqa: E402


def test_late_fall_is_zero_on_a_plateau_and_measures_a_falling_curve():
    assert sae.evaluation.late_fall([0.5] * 20) == 0.0
    v = np.linspace(2.0, 1.0, 100)  # 2.0 at the start, 1.0 at the end
    early, late = v[30:50].mean(), v[60:80].mean()
    assert sae.evaluation.late_fall(v) == pytest.approx((early - late) / late)
    assert sae.evaluation.late_fall(v) > 0.1
    assert sae.evaluation.late_fall(v[::-1]) < 0  # rising: negative
    assert math.isnan(sae.evaluation.late_fall([]))


def test_training_objective_adds_each_kinds_penalty():
    hist = {"nmse": [0.5, 0.4], "penalty": [10.0, 20.0]}
    cfg = lambda kind, **kw: sae.SAEConfig(d_in=4, n_latents=8, k=2, kind=kind, **kw)  # noqa: E731
    assert np.allclose(sae.evaluation.training_objective(hist, cfg("topk")), [0.5, 0.4])
    assert np.allclose(sae.evaluation.training_objective(hist, cfg("batchtopk")), [0.5, 0.4])
    assert np.allclose(sae.evaluation.training_objective(hist, cfg("relu", l1_coef=0.01)), [0.6, 0.6])
    assert np.allclose(sae.evaluation.training_objective(hist, cfg("jumprelu", l0_coef=0.001)), [0.51, 0.42])


def test_frontier_figure_draws_one_curve_per_architecture_and_flags_unconverged_ones():
    curves = {"TopK": [{"l0": 8, "nmse": 0.4, "label": "k=8"}, {"l0": 32, "nmse": 0.25, "label": "k=32"}],
              "ReLU + L1": [{"l0": 100, "nmse": 0.9, "label": "l1=0.01"}],
              "JumpReLU": [{"l0": 40, "nmse": 0.3, "label": "l0=0.001"}],
              "BatchTopK": [{"l0": 32, "nmse": 0.24, "label": "k=32"}]}
    fig = sae.plots.plot_frontier(curves, 1152, still_learning={"ReLU + L1": 0.12, "TopK": 0.004})
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert len(labels) == 4
    assert "ReLU + L1 (objective still fell 12%)" in labels
    assert "TopK (objective still fell 0%)" in labels
    assert [t.get_text() for t in ax.texts].count("k=32") == 2


def test_nmse_at_l0_interpolates_in_log_log_and_never_extrapolates():
    rows = [{"l0": 8, "nmse": 0.4}, {"l0": 32, "nmse": 0.1}]  # a power law NMSE = 3.2 / L0
    assert sae.evaluation.nmse_at_l0(rows, 16) == pytest.approx(0.2)
    assert sae.evaluation.nmse_at_l0(rows, 8) == pytest.approx(0.4)
    assert math.isnan(sae.evaluation.nmse_at_l0(rows, 64))
    assert math.isnan(sae.evaluation.nmse_at_l0([], 10))


def test_power_law_ci_is_exact_on_a_power_law_and_covers_the_truth_under_noise():
    n = np.array([256, 512, 1024, 2048, 4096], float)
    exact = sae.evaluation.power_law_fit_ci(n, 3.0 * n**-0.25)
    assert exact["b"] == pytest.approx(-0.25) and exact["a"] == pytest.approx(3.0)
    assert exact["ci"][1] - exact["ci"][0] == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):  # a 95% interval covers the true exponent about 95% of the time
        fit = sae.evaluation.power_law_fit_ci(n, 3.0 * n**-0.25 * np.exp(rng.normal(0, 0.05, n.size)))
        covered += fit["ci"][0] <= -0.25 <= fit["ci"][1]
    assert 180 <= covered <= 200, covered
    assert math.isnan(sae.evaluation.power_law_fit_ci([1, 2], [1, 2])["ci"][0])


def test_width_figure_labels_tokens_and_reports_the_exponent_interval():
    rows = [{"n_latents": n, "nmse": 3.0 * n**-0.2 * f, "n_tokens": 50 * n}
            for n, f in ((256, 1.01), (512, 0.99), (1024, 1.02), (2048, 0.98), (4096, 1.0))]
    fig, b = sae.plots.plot_nmse_vs_width(rows, 32)
    ax = fig.axes[0]
    assert b == pytest.approx(sae.evaluation.power_law_fit_ci([r["n_latents"] for r in rows],
                                                              [r["nmse"] for r in rows])["b"])
    assert any("95% CI [" in ln.get_label() for ln in ax.get_lines())
    assert "12.8k tok" in [t.get_text() for t in ax.texts]
