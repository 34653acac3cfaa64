"""Figures for notebook 03 (sparse autoencoders). Every function returns a matplotlib Figure."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from course_lib import hooks
from course_lib.sae.dashboards import Codes
from course_lib.sae.evaluation import log10_density, power_law_fit_ci

# --------------------------------------------------------------------------- figures


def _fig(figsize: tuple[float, float] = (6, 4)) -> tuple[Figure, Any]:
    return plt.subplots(figsize=figsize)


def _thousands(ax: Any) -> None:
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))


def plot_token_norms(norms: torch.Tensor, massive_factor: float = hooks.MASSIVE_FACTOR, title: str = "") -> Figure:
    """Histogram (log x) of residual norms ``[b, s]``: BOS (position 0) vs the rest, massive cut marked."""
    fig, ax = _fig()
    body = norms[:, 1:].flatten().float().numpy()
    bos = norms[:, 0].float().numpy()
    med = float(np.median(body))
    bins = np.logspace(np.log10(max(body.min(), 1e-3)), np.log10(max(bos.max(), body.max()) * 1.1), 60)
    ax.hist(body, bins=bins, label="tokens after BOS", color="tab:blue")
    ax.hist(bos, bins=bins, label="BOS (position 0)", color="tab:red")
    ax.axvline(massive_factor * med, color="k", ls="--", label=f"{massive_factor:g} x median: massive cut")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("residual-stream norm ||x||")
    ax.set_ylabel("tokens")
    ax.set_title(title or "Residual norms: BOS and massive tokens are left out")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_training(history: dict[str, Any], title: str = "") -> Figure:
    """NMSE (training batches) and dead fraction against training tokens."""
    fig, ax = _fig()
    ax.plot(history["tokens"], history["nmse"], color="tab:blue", label="NMSE (train batch)")
    _thousands(ax)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("NMSE")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(history["tokens"], history["dead_fraction"], color="tab:red", label="dead fraction")
    ax2.set_ylabel("dead fraction (window)")
    ax2.set_ylim(0, max(0.05, 1.1 * max(history["dead_fraction"], default=0.0)))
    ax.set_title(title or "Training the main TopK SAE")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    fig.tight_layout()
    return fig


FRONTIER_STYLES = {"TopK": ("o-", "tab:blue"), "ReLU + L1": ("s--", "tab:orange"),
                   "JumpReLU": ("^-.", "tab:green"), "BatchTopK": ("D:", "tab:purple")}


def plot_frontier(curves: dict[str, list[dict[str, Any]]], width: int,
                  still_learning: dict[str, float] | None = None) -> Figure:
    """NMSE against L0 (log-log), one curve per architecture ``{name: rows}`` at one width; each row has
    ``l0``, ``nmse`` and ``label`` (its knob, e.g. ``k=32``). ``still_learning`` (name -> the largest
    :func:`~course_lib.sae.evaluation.late_fall` of its SAEs) marks, in the legend, curves whose SAEs were
    still improving when training stopped."""
    fig, ax = _fig()
    for name, rows in curves.items():
        if not rows:
            continue
        style, color = FRONTIER_STYLES.get(name, (".-", None))
        rows = sorted(rows, key=lambda r: r["l0"])
        label = name
        if still_learning and name in still_learning and np.isfinite(still_learning[name]):
            label += f" (objective still fell {100 * still_learning[name]:.0f}%)"
        ax.plot([r["l0"] for r in rows], [r["nmse"] for r in rows], style, color=color, label=label)
        for r in rows:
            ax.annotate(r["label"], (r["l0"], r["nmse"]), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("NMSE (held-out)")
    ax.set_title(f"Sparsity-reconstruction frontier, {width} latents")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_nmse_vs_width(rows: list[dict[str, Any]], k: int, fixed_rows: list[dict[str, Any]] | None = None,
                       main: dict[str, Any] | None = None) -> tuple[Figure, float]:
    """NMSE against number of latents at fixed ``k`` with a power-law fit and its 95% interval on the
    exponent (:func:`~course_lib.sae.evaluation.power_law_fit_ci`); each point is labelled with its
    training tokens when rows carry ``n_tokens``. ``fixed_rows`` (optional): a second sweep trained for
    the same number of tokens at every width, drawn and fitted alike; ``main`` (optional, ``n_latents``,
    ``nmse``, ``n_tokens``): one more SAE drawn as a star, outside the fits. Returns ``(fig, exponent)``
    (the exponent of ``rows``' fit)."""
    fig, ax = _fig()
    allx = [r["n_latents"] for r in rows] + [r["n_latents"] for r in fixed_rows or []] + ([main["n_latents"]] if main else [])
    grid = np.logspace(np.log10(min(allx)), np.log10(max(allx)), 50)
    exponent = math.nan
    for i, (series, label) in enumerate(((rows, "tokens in proportion to width"), (fixed_rows, "same tokens at every width"))):
        if not series:
            continue
        n = np.array([r["n_latents"] for r in series], float)
        y = np.array([r["nmse"] for r in series], float)
        fit = power_law_fit_ci(n, y)
        a, b, (lo, hi) = fit["a"], fit["b"], fit["ci"]
        exponent = b if i == 0 else exponent
        line = ax.plot(n, y, "os"[i], label=label)[0]
        for r in series:
            if "n_tokens" in r:
                ax.annotate(f"{r['n_tokens'] / 1000:g}k tok", (r["n_latents"], r["nmse"]), textcoords="offset points",
                            xytext=(4, 4 if i == 0 else -10), fontsize=7, color=line.get_color())
        ci = "" if not np.isfinite(lo) else f", 95% CI [{lo:.2f}, {hi:.2f}]"
        ax.plot(grid, a * grid**b, "--", color=line.get_color(), label=f"fit {a:.2f} n^{b:.3f}{ci}")
    if main:
        ax.plot([main["n_latents"]], [main["nmse"]], "*", ms=14, color="black",
                label=f"main SAE ({main['n_tokens'] / 1000:.0f}k tok), not in the fits")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of latents n")
    ax.set_ylabel("NMSE (held-out)")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a short log axis overlap
    ax.set_title(f"Scaling the dictionary at fixed k={k}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, exponent


def plot_nmse_vs_k(rows: list[dict[str, Any]], width: int) -> Figure:
    """NMSE against k at a fixed width."""
    fig, ax = _fig()
    rows = sorted(rows, key=lambda r: r["k"])
    ax.plot([r["k"] for r in rows], [r["nmse"] for r in rows], "o-")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("k (active latents per token)")
    ax.set_ylabel("NMSE (held-out)")
    ax.set_title(f"NMSE against k, {width} latents")
    fig.tight_layout()
    return fig


def plot_dead_over_training(histories: dict[str, dict[str, Any]]) -> Figure:
    """Dead fraction (latents not fired within the window) against training tokens, one line per run."""
    fig, ax = _fig()
    for name, h in histories.items():
        ax.plot(h["tokens"], h["dead_fraction"], label=name)
    _thousands(ax)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("dead fraction")
    ax.set_title("Dead latents during training")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_density_histogram(density: np.ndarray, title: str = "") -> Figure:
    """Histogram of log10 feature density (dead latents counted in the title)."""
    fig, ax = _fig()
    ld = log10_density(density)
    n_dead = int((np.asarray(density) == 0).sum())
    ax.hist(ld, bins=40, color="tab:green")
    ax.set_xlabel("log10 feature density (share of tokens where the latent fires)")
    ax.set_ylabel("latents")
    ax.set_title(title or f"Feature density ({n_dead} of {len(density)} latents dead on held-out tokens)")
    fig.tight_layout()
    return fig


def activation_histogram(codes: Codes, latent: int, bins: int = 30) -> Figure:
    """Histogram of the latent's non-zero activations."""
    _, acts = codes.latent(latent)
    fig, ax = plt.subplots(figsize=(5, 2.6))
    if acts.numel():
        ax.hist(acts.numpy(), bins=bins, color="tab:orange")
    ax.set_title(f"latent {latent}: {acts.numel()} activations > 0 of {codes.vals.shape[0]} tokens")
    ax.set_xlabel("activation (normalised units)")
    ax.set_ylabel("tokens")
    fig.tight_layout()
    return fig


def _seed_dots(ax: Any, values: dict[str, list[float]], colors: list[str]) -> None:
    """One column per key: each seed a dot (small horizontal jitter), the mean a bar with a min-max whisker."""
    for i, v in enumerate(values.values()):
        v = np.asarray(v, float)
        jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(1)
        ax.scatter(i + jitter, v, s=18, color=colors[i], alpha=0.8, zorder=3)
        ax.errorbar(i, v.mean(), yerr=[[v.mean() - v.min()], [v.max() - v.mean()]], fmt="_", markersize=22,
                    color="k", capsize=4, zorder=4)
    ax.set_xticks(range(len(values)), list(values), rotation=20, ha="right")


def plot_fix_controls(dead: dict[str, list[float]], nmse: dict[str, list[float]], width: int, n_tokens: int) -> Figure:
    """Dead fraction and held-out NMSE of each fix config (keys as in :func:`course_lib.sae.controls.fix_controls`).

    Each seed is a dot; the black bar is the mean, its whiskers the seeds' range.
    """
    names = list(dead)
    colors = ["tab:green" if n == "all fixes" else "tab:red" if n == "no fixes" else "tab:blue" for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, values, label in ((axes[0], dead, "dead fraction (held-out: never fires)"),
                              (axes[1], nmse, "NMSE (held-out)")):
        _seed_dots(ax, values, colors)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    n_seeds = len(next(iter(dead.values())))
    fig.suptitle(f"Each fix removed alone: {width} latents, {n_tokens:,} training tokens, {n_seeds} seed(s) "
                 "(dots), mean and range (black)")
    fig.tight_layout()
    return fig


def plot_synthetic_recovery(rows: list[dict[str, Any]]) -> Figure:
    """Recovery of known features: decoder MCC and activation MCC per dataset kind and SAE (dots = seeds)."""
    datas = list(dict.fromkeys(r["data"] for r in rows))
    saes = list(dict.fromkeys(r["sae"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    width = 0.8 / len(saes)
    for ax, metric, title in ((axes[0], "decoder_mcc", "decoder MCC (matched cosine with true directions)"),
                              (axes[1], "activation_mcc", "activation MCC (matched correlation with true codes)")):
        for j, s in enumerate(saes):
            for i, d in enumerate(datas):
                v = np.array([r[metric] for r in rows if r["data"] == d and r["sae"] == s], float)
                x = i + (j - (len(saes) - 1) / 2) * width
                ax.bar(x, v.mean(), width * 0.9, color=f"C{j}", alpha=0.35, label=s if i == 0 else None)
                ax.scatter(np.full(len(v), x), v, s=14, color=f"C{j}", zorder=3)
        ax.set_xticks(range(len(datas)), datas)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("MCC (1 = every feature recovered)")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_absorption(rows: list[dict[str, Any]], hierarchical: str = "hierarchical", control: str = "independent") -> Figure:
    """Absorption and the child latents' lean toward the parent, against measured L0 (one point per SAE, seed mean).

    Left: share of parent-and-child samples where the parent's latent is off and the child's on, on the
    hierarchical data (solid) and on the control (dashed: same index groups, independent features).
    Right: cosine between each child's latent's decoder row and its parent's true direction.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    saes = list(dict.fromkeys(r["sae"] for r in rows))
    for ax, metric, ylabel in ((axes[0], "absorption", "absorption (parent latent off, child latent on)"),
                               (axes[1], "child_parent_cosine", "cos(child's latent, parent direction)")):
        for data, style in ((hierarchical, "-"), (control, "--")):
            for kind, marker in (("topk", "o"), ("relu", "s")):
                pts = []
                for s in saes:
                    sel = [r for r in rows if r["data"] == data and r["sae"] == s and r["kind"] == kind]
                    if sel:
                        y = np.array([r[metric] for r in sel], float)
                        pts.append((np.mean([r["l0"] for r in sel]), y.mean(), y.min(), y.max(), s))
                if not pts:
                    continue
                pts.sort()
                x, y, lo, hi = (np.array([p[i] for p in pts]) for i in range(4))
                color = "tab:purple" if data == hierarchical else "tab:gray"
                ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt=marker + style, color=color, capsize=3,
                            label=f"{'TopK' if kind == 'topk' else 'ReLU + L1'}, {data}"
                            + (" (control)" if data == control else ""))
                if data == hierarchical:
                    for p in pts:
                        ax.annotate(p[4], (p[0], p[1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("L0 (active latents per sample)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.suptitle("Feature absorption: a child latent takes over its parent's direction (seed mean, range)")
    fig.tight_layout()
    return fig
