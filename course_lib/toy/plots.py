"""Figures for the toy models of superposition (notebook 01). Every function returns a Figure.

Inputs are plain tensors from :mod:`course_lib.toy.model` (moved to CPU here), so the figures
work the same for models trained on CUDA. Shapes: ``W`` is [I, H, F] (instances, hidden, features).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from course_lib.toy import metrics

STICKY_FRACTIONS: tuple[tuple[float, str], ...] = (
    (1.0, "1"), (3 / 4, "3/4"), (2 / 3, "2/3"), (1 / 2, "1/2"), (2 / 5, "2/5"), (3 / 8, "3/8"),
)


def _np(t: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=float)


def feature_directions(
    W: torch.Tensor, feature_probability: torch.Tensor, importance: torch.Tensor, threshold: float = 0.5
) -> Figure:
    """5 -> 2 style: each instance's feature directions ``W_f`` in the 2-D hidden space.

    Colour = importance (dark = most important). A grey polygon joins the represented features in
    angular order: at high sparsity it is the regular pentagon.
    """
    W, p, imp = _np(W), _np(feature_probability), _np(importance)
    n_inst, H, F = W.shape
    if H != 2:
        raise ValueError("feature_directions needs d_hidden = 2")
    ncols = min(n_inst, 5)
    nrows = int(np.ceil(n_inst / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols, 2.9 * nrows + 0.4), squeeze=False)
    cmap = plt.get_cmap("viridis")
    lim = max(1.3, float(np.abs(W).max()) * 1.15)
    dpf = _np(metrics.dimensions_per_feature(torch.as_tensor(W)))
    for i, ax in enumerate(axes.flat):
        if i >= n_inst:
            ax.axis("off")
            continue
        imp_rows = imp.reshape(-1, F)
        imp_i = imp_rows[min(i, len(imp_rows) - 1)]
        rel = (imp_i - imp_i.min()) / max(np.ptp(imp_i), 1e-9)
        norms = np.linalg.norm(W[i], axis=0)
        rep = np.where(norms > threshold)[0]
        if len(rep) >= 3:
            ang = np.arctan2(W[i, 1, rep], W[i, 0, rep])
            order = rep[np.argsort(ang)]
            poly = np.concatenate([order, order[:1]])
            ax.plot(W[i, 0, poly], W[i, 1, poly], color="0.75", lw=1, zorder=1)
        for f in range(F):
            c = cmap(0.85 * (1 - rel[f]))
            ax.plot([0, W[i, 0, f]], [0, W[i, 1, f]], color=c, lw=2, zorder=2)
            ax.scatter(W[i, 0, f], W[i, 1, f], color=c, s=22, zorder=3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.9", lw=0.8, zorder=0)
        ax.axvline(0, color="0.9", lw=0.8, zorder=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"S = {1 - p[i]:.3f}\n{len(rep)} feats, D* = {dpf[i]:.2f}", fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=cmap.reversed(), norm=plt.Normalize(0, 0.85))
    cbar = fig.colorbar(sm, ax=axes, shrink=0.6, pad=0.02)
    cbar.set_ticks([0, 0.85])
    cbar.set_ticklabels(["least", "most"])
    cbar.set_label("feature importance")
    fig.suptitle("5 features in 2 hidden dimensions: feature directions W_f as sparsity S grows "
                 "(hidden dim 1 on x, dim 2 on y)", fontsize=11)
    return fig


def wtw_grid(W: torch.Tensor, feature_probability: torch.Tensor, threshold: float = 0.5) -> Figure:
    """20 -> 5 style: per instance, ``W^T W`` (top) and per-feature norm bars coloured by superposition."""
    Wt = torch.as_tensor(_np(W))
    p = _np(feature_probability)
    n_inst, H, F = Wt.shape
    wtw = _np(torch.bmm(Wt.transpose(1, 2), Wt))
    norms = _np(metrics.feature_norms(Wt))
    sup = _np(metrics.superposition(Wt)).clip(0, 1)
    rep = _np(metrics.features_represented(Wt, threshold))
    fig, axes = plt.subplots(2, n_inst, figsize=(2.3 * n_inst + 1.2, 6.4),
                             gridspec_kw={"height_ratios": [1, 1.1]}, squeeze=False)
    cmap_sup = plt.get_cmap("plasma")
    vmax = max(1.0, float(np.abs(wtw).max()))
    for i in range(n_inst):
        ax = axes[0, i]
        im = ax.imshow(wtw[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"S = {1 - p[i]:.3f}\n{int(rep[i])} features represented", fontsize=9)
        ax.set_xticks([0, F - 1])
        ax.set_yticks([0, F - 1])
        if i == 0:
            ax.set_ylabel("feature")
        ax.set_xlabel("feature", fontsize=8)
        ax = axes[1, i]
        ax.barh(np.arange(F), norms[i], color=cmap_sup(sup[i]), edgecolor="0.4", lw=0.3)
        ax.axvline(threshold, color="0.5", ls=":", lw=0.8)
        ax.set_ylim(F - 0.5, -0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, max(1.3, float(norms.max()) * 1.05))
        ax.set_xlabel("||W_f||", fontsize=8)
        if i == 0:
            ax.set_ylabel("feature (0 = most important)")
        else:
            ax.set_yticklabels([])
    fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8, pad=0.01, label="W^T W entry")
    sm = plt.cm.ScalarMappable(cmap=cmap_sup, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes[1, :].tolist(), shrink=0.8, pad=0.01,
                 label="superposition sum_g≠f (Ŵ_f·W_g)²")
    fig.suptitle(f"{F} features in {H} dimensions: W^T W (top) and feature norms coloured by "
                 "superposition (bottom)", fontsize=11)
    return fig


def dims_per_feature_plot(
    feature_probability: torch.Tensor, W: torch.Tensor, threshold: float = 0.5, seed: int = 0,
    feature_dimensionality: Callable[[torch.Tensor], torch.Tensor] = metrics.feature_dimensionality,
) -> Figure:
    """Dimensions per feature against ``1/(1-S)`` with the paper's sticky fractions and the floor ``m/n``
    (the clipped ``D*`` when every feature has norm 1 or more), plus each feature's ``D_f``.

    ``feature_dimensionality`` computes ``D_f`` (notebook 01 passes the learner's function).
    """
    Wt = torch.as_tensor(_np(W))
    p = _np(feature_probability)
    x = 1 / p
    dpf = _np(metrics.dimensions_per_feature(Wt))
    raw = _np(metrics.dimensions_per_feature(Wt, clip=False))
    Df = _np(feature_dimensionality(Wt))
    norms = _np(metrics.feature_norms(Wt))
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for val, label in STICKY_FRACTIONS:
        ax.axhline(val, color="0.8", ls="--", lw=0.8, zorder=0)
        va = {"2/5": "bottom", "3/8": "top"}.get(label, "center")
        ax.text(x.max() * 1.25, val, label, va=va, fontsize=9, color="0.35")
    for i in range(len(p)):
        keep = norms[i] > threshold
        jitter = np.exp(rng.normal(0, 0.03, keep.sum()))
        ax.scatter(x[i] * jitter, Df[i, keep], s=6, alpha=0.35, color="tab:orange",
                   label="feature dimensionality D_f (each represented feature)" if i == 0 else None)
    n_inst, H, F = Wt.shape
    ax.axhline(H / F, color="0.45", ls=":", lw=1, zorder=0)
    ax.text(x.max() * 1.25, H / F, "m/n", va="bottom", fontsize=9, color="0.35")
    ax.plot(x, dpf, "o-", color="k", lw=2, ms=5, label="dimensions per feature D* = m / Σ min(‖W_f‖², 1)")
    ax.plot(x, raw, "s:", color="tab:blue", lw=1, ms=3, label="paper's m / ‖W‖_F² (unclipped)")
    ax.set_xscale("log")
    ax.set_xlim(x.min() * 0.85, x.max() * 1.6)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("1 / (1 - S)   (expected inputs per active feature; log scale)")
    ax.set_ylabel("dimensions per feature")
    ax.set_title(f"{F} features -> {H} dimensions: dimensions per feature against sparsity\n"
                 "(grey dashed: the paper's sticky fractions; dotted: the floor m/n)", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def phase_diagram(
    sparsities: Sequence[float], relative_importances: Sequence[float], phase: torch.Tensor
) -> Figure:
    """2 features -> 1 hidden: regime per (sparsity, relative importance of feature 2)."""
    S = np.asarray(list(sparsities), dtype=float)
    r = np.asarray(list(relative_importances), dtype=float)
    grid = _np(phase).reshape(len(S), len(r)).T  # rows: importance, columns: sparsity
    density = 1 - S
    colors = ["#7aa6d6", "#e07b6a", "#f3e3a1"]
    fig, ax = plt.subplots(figsize=(7, 5.2))

    def edges(v: np.ndarray) -> np.ndarray:
        lv = np.log10(v)
        mid = (lv[1:] + lv[:-1]) / 2
        return 10 ** np.concatenate([[lv[0] - (mid[0] - lv[0])], mid, [lv[-1] + (lv[-1] - mid[-1])]])

    ax.pcolormesh(edges(density), edges(r), grid, cmap=ListedColormap(colors), vmin=-0.5, vmax=2.5,
                  edgecolors="w", linewidth=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("feature density 1 - S   (sparser to the right)")
    ax.set_ylabel("relative importance of feature 2")
    ax.set_title("Phase diagram, 2 features -> 1 dimension")
    handles = [Patch(color=c, label=n) for c, n in zip(colors, metrics.PHASE_NAMES)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8.5)
    fig.tight_layout()
    return fig


def neuron_feature_grid(
    W: torch.Tensor, titles: Sequence[str], suptitle: str, threshold: float = 0.5, share: float = 0.1,
    sort_neurons: bool = True, ylabel: str = "neuron (* = polysemantic)",
) -> Figure:
    """Neuron-by-feature weight heatmaps ``W[n, f]``; neurons carrying 2+ features are marked with '*'.

    With ``sort_neurons`` rows are ordered by the feature each neuron carries most, so pairs of
    neurons on the same feature with opposite signs (antipodal pairs) sit next to each other.
    """
    Wt = torch.as_tensor(_np(W))
    n_inst, H, F = Wt.shape
    member = _np(metrics.neuron_feature_membership(Wt, threshold, share))
    fig, axes = plt.subplots(1, n_inst, figsize=(max(3.2, 0.2 * F + 1.3) * n_inst + 0.8, 0.28 * H + 2.4),
                             squeeze=False, layout="constrained")
    vmax = float(np.abs(_np(Wt)).max())
    for i, ax in enumerate(axes[0]):
        Wi = _np(Wt[i])
        order = np.arange(H)
        if sort_neurons:
            top = np.abs(Wi).argmax(1)
            sign = np.sign(Wi[np.arange(H), top])
            order = np.lexsort((-sign, top))
        im = ax.imshow(Wi[order], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        counts = member[i][order].sum(1)
        ax.set_yticks(np.arange(H))
        ax.set_yticklabels([f"{n}{' *' if c >= 2 else ''}" for n, c in zip(order, counts)], fontsize=7)
        ax.set_xlabel("feature")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if i == 0:
            ax.set_ylabel(ylabel)
        poly = int((counts >= 2).sum())
        ax.set_title(f"{titles[i]}\n{poly}/{int((counts > 0).sum())} active neurons polysemantic", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label="weight W[neuron, feature]")
    fig.suptitle(suptitle, fontsize=11)
    return fig


def weight_sparse_comparison(rows: Sequence[dict[str, float]]) -> Figure:
    """Metrics against the kept weight fraction: one panel per metric, a dot per instance, mean line.

    ``rows`` are per-instance dicts with ``kept_fraction`` and the :func:`course_lib.toy.metrics.summarize` keys.
    """
    keys = [("features_represented", "features represented"), ("features_per_neuron", "features per neuron"),
            ("interference", "interference (mean superposition)"), ("dims_per_feature", "dimensions per feature"),
            ("loss", "loss")]
    kept = np.array([r["kept_fraction"] for r in rows])
    levels = np.unique(kept)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.4))
    rng = np.random.default_rng(0)
    for ax, (k, label) in zip(axes, keys):
        vals = np.array([r[k] for r in rows])
        ax.scatter(kept * np.exp(rng.normal(0, 0.04, len(kept))), vals, s=10, alpha=0.4, color="tab:blue")
        ax.plot(levels, [vals[kept == lv].mean() for lv in levels], "o-", color="k", lw=1.5, ms=4)
        ax.set_xscale("log")
        ax.set_xticks(levels)
        ax.set_xticklabels([f"{lv:g}" for lv in levels], fontsize=7, rotation=45)
        ax.minorticks_off()
        ax.set_xlabel("kept weight fraction (1 = dense)")
        ax.set_title(label, fontsize=10)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    fig.suptitle("Dense vs weight-sparse toy models (dots: instances, line: mean); sparser weights to the right",
                 fontsize=11)
    fig.tight_layout()
    return fig


def widget_view(W: torch.Tensor, title: str, threshold: float = 0.5) -> Figure:
    """One instance: ``W^T W``, feature norms coloured by superposition, and ``W`` (neuron x feature)."""
    Wt = torch.as_tensor(_np(W))[:1]
    _, H, F = Wt.shape
    wtw = _np(torch.bmm(Wt.transpose(1, 2), Wt))[0]
    norms = _np(metrics.feature_norms(Wt))[0]
    sup = _np(metrics.superposition(Wt))[0].clip(0, 1)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 0.7, 1.3]})
    vmax = max(1.0, float(np.abs(wtw).max()))
    im0 = axes[0].imshow(wtw, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    axes[0].set_title("W^T W")
    axes[0].set_xlabel("feature")
    axes[0].set_ylabel("feature")
    fig.colorbar(im0, ax=axes[0], shrink=0.8)
    axes[1].barh(np.arange(F), norms, color=plt.get_cmap("plasma")(sup), edgecolor="0.4", lw=0.3)
    axes[1].axvline(threshold, color="0.5", ls=":", lw=0.8)
    axes[1].set_ylim(F - 0.5, -0.5)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].xaxis.set_major_locator(MaxNLocator(nbins=4))
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xlabel("||W_f|| (colour: superposition)")
    axes[1].set_title("feature norms")
    Wn = _np(Wt[0])
    wmax = max(float(np.abs(Wn).max()), 1e-6)
    im2 = axes[2].imshow(Wn, cmap="RdBu_r", vmin=-wmax, vmax=wmax, aspect="auto")
    axes[2].set_xlabel("feature")
    axes[2].set_ylabel("hidden dimension")
    axes[2].set_title(f"W ({int((Wn != 0).sum())}/{Wn.size} nonzero)")
    fig.colorbar(im2, ax=axes[2], shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
