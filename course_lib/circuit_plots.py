"""Figures for notebook 02: weight-sparse transformers and their circuits.

Every plot function returns a matplotlib ``Figure`` and never calls ``show()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from course_lib import circuits
from course_lib.sparse_transformer import SparseTransformer, TrainedModel

KIND_COLUMN = {"attn_in": 0, "q": 1, "k": 1, "v": 1, "attn_out": 2, "mlp_in": 3, "neuron": 4, "mlp_out": 5}
KIND_COLOR = {
    "attn_in": "tab:blue", "q": "tab:orange", "k": "tab:olive", "v": "tab:green", "attn_out": "tab:red",
    "mlp_in": "tab:cyan", "neuron": "tab:purple", "mlp_out": "tab:pink", "final_in": "tab:gray",
}


def _model_colors(names: Sequence[str]) -> dict[str, str]:
    palette = ["black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    return {n: ("gray" if "random" in n else palette[i % len(palette)]) for i, n in enumerate(names)}


def plot_training(models: Sequence[TrainedModel]) -> Figure:
    """Training loss and kept fraction against step for every trained model."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = _model_colors([m.name for m in models])
    for m in models:
        if not m.log:
            continue
        a.plot(m.log["step"], m.log["loss"], label=m.name, color=colors[m.name], lw=1)
        b.plot(m.log["step"], m.log["kept_fraction"], label=m.name, color=colors[m.name])
    a.set(title="Training loss", xlabel="optimizer step", ylabel="next-token cross-entropy")
    b.set(title="Kept fraction of every weight tensor (annealed)", xlabel="optimizer step",
          ylabel="kept fraction", ylim=(0, 1.05))
    a.legend()
    b.legend()
    fig.tight_layout()
    return fig


def plot_loss_vs_nodes(results: Mapping[str, Mapping[str, circuits.Circuit]], target: float) -> Figure:
    """One panel per task: train task loss against kept nodes (learned order), a line per model."""
    tasks = list(next(iter(results.values())).keys())
    colors = _model_colors(list(results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for name, per_task in results.items():
            c = per_task[task]
            k = np.maximum(np.array(c.curve_k), 1)
            ax.plot(k, c.curve_loss, marker=".", label=name, color=colors[name],
                    ls="--" if "random" in name else "-")
            if c.n_nodes is not None:
                ax.plot([max(c.n_nodes, 1)], [c.train_loss], marker="*", ms=12, color=colors[name])
        ax.axhline(target, color="k", lw=0.8, ls=":", label=f"target {target}")
        ax.axhline(np.log(2), color="gray", lw=0.8, ls="-.", label="chance (ln 2)")
        ax.set(xscale="log", title=task, xlabel="kept nodes", ylabel="task loss (train prompts)")
        ax.set_ylim(0, max(1.5, ax.get_ylim()[1] if ax.get_ylim()[1] < 5 else 1.5))
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Task loss vs circuit size (star: smallest circuit reaching the target)")
    fig.tight_layout()
    return fig


def plot_edges(edges: Mapping[str, Mapping[str, int | None]], ratios: Mapping[str, Mapping[str, float | None]]) -> Figure:
    """Grouped bars: circuit edges per task and model (log scale); dense/sparse ratios written above."""
    models = list(edges)
    tasks = list(next(iter(edges.values())))
    colors = _model_colors(models)
    fig, ax = plt.subplots(figsize=(2.4 * len(tasks) + 2, 4.2))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        vals = [edges[m][t] for t in tasks]
        xs = np.arange(len(tasks)) + i * width
        ax.bar(xs, [v if v else 0 for v in vals], width, label=m, color=colors[m])
        for x, v in zip(xs, vals):
            if v is None:
                ax.text(x, 1.2, "not\nreached", ha="center", va="bottom", fontsize=6, rotation=90)
    for j, t in enumerate(tasks):
        txt = "\n".join(f"{k}: {r:.1f}x" for k, r in ratios.get(t, {}).items() if r is not None)
        if txt:
            top = max([edges[m][t] or 1 for m in models])
            ax.text(j + 0.4 - width / 2, top * 1.3, "dense/sparse\n" + txt, ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set(yscale="log", ylabel="circuit edges (nonzero weights between kept nodes)",
           title="Circuit size per task: dense vs weight-sparse")
    ax.set_ylim(1, ax.get_ylim()[1] * 8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_val_loss_vs_sparsity(models: Sequence[TrainedModel]) -> Figure:
    """Validation loss against the measured fraction of nonzero weights (the capability cost)."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    trained = [m for m in models if m.log]
    xs = [m.nonzero_fraction for m in trained]
    ys = [m.val_loss for m in trained]
    ax.plot(xs, ys, marker="o", color="tab:blue")
    for m in trained:
        ax.annotate(m.name, (m.nonzero_fraction, m.val_loss), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xscale="log", xlabel="measured fraction of nonzero weights", ylabel="validation loss (nats/token)",
           title="Capability cost of weight sparsity")
    ax.invert_xaxis()
    fig.tight_layout()
    return fig


def plot_control(results: Mapping[str, Mapping[str, circuits.Circuit]], target: float) -> Figure:
    """Best pruned task loss (held-out prompts) per task and model, incl. the random-init control."""
    models = list(results)
    tasks = list(next(iter(results.values())))
    colors = _model_colors(models)
    fig, ax = plt.subplots(figsize=(2.2 * len(tasks) + 2, 3.8))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        ax.bar(np.arange(len(tasks)) + i * width, [results[m][t].test_loss for t in tasks], width,
               label=m, color=colors[m])
    ax.axhline(target, color="k", ls=":", lw=0.8, label=f"target {target}")
    ax.axhline(np.log(2), color="gray", ls="-.", lw=0.8, label="chance")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set(ylabel="circuit task loss on held-out prompts", title="Pruned circuits on held-out prompts (control: random init)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- wiring diagram


def _node_key(hook: str, c: int) -> tuple[str, int]:
    return hook, c


def node_label(site: circuits.NodeSite, c: int, d_head: int) -> str:
    if site.kind in ("q", "k", "v"):
        return f"L{site.layer} {site.kind} h{c // d_head}.{c % d_head}"
    if site.kind == "final_in":
        return f"unembed read {c}"
    return f"L{site.layer} {site.kind} {c}"


def plot_wiring(
    model: SparseTransformer, circuit: circuits.Circuit, top_tokens: Mapping[tuple[str, int], list[str]] | None = None,
    max_nodes: int = 60, title: str | None = None,
) -> Figure:
    """Wiring diagram: kept nodes in columns (layer x node kind), lines for nonzero weights between them.

    Each node is labelled with its site and channel and, if given, the corpus tokens that activate it most.
    Line width and opacity follow |weight|; residual-stream edges (write -> later read) are dotted.
    """
    sites = circuits.node_sites(model)
    site_of = {s.hook: s for s in sites}
    kept = [(h, int(c)) for h, m in circuit.kept.items() for c in torch.nonzero(m).flatten().tolist()]
    kept = sorted(kept, key=lambda hc: circuit.order.index(hc) if hc in circuit.order else 0)[:max_nodes]
    keptset = set(kept)
    cols_per_layer = 6
    pos: dict[tuple[str, int], tuple[float, float]] = {}
    by_col: dict[float, list[tuple[str, int]]] = {}
    for h, c in kept:
        s = site_of[h]
        col = s.layer * cols_per_layer + (KIND_COLUMN.get(s.kind, 0) if s.kind != "final_in" else 0)
        by_col.setdefault(col, []).append((h, c))
    for col, nodes in by_col.items():
        nodes.sort(key=lambda hc: (list(site_of).index(hc[0]), hc[1]))
        for i, n in enumerate(nodes):
            pos[n] = (col, -(i - (len(nodes) - 1) / 2))
    height = max([len(v) for v in by_col.values()] + [4])
    fig, ax = plt.subplots(figsize=(min(20, max(10, 1.9 * len(by_col) + 2)), max(4, 0.5 * height + 1.5)))
    # weight edges
    for layer, block in enumerate(model.blocks):
        p = f"blocks.{layer}"
        pairs = [
            (f"{p}.hook_attn_in", f"{p}.attn.hook_q", block.attn.W_Q),
            (f"{p}.hook_attn_in", f"{p}.attn.hook_k", block.attn.W_K),
            (f"{p}.hook_attn_in", f"{p}.attn.hook_v", block.attn.W_V),
            (f"{p}.attn.hook_v", f"{p}.hook_attn_out", block.attn.W_O),
            (f"{p}.hook_mlp_in", f"{p}.mlp.hook_post", block.mlp.W_in),
            (f"{p}.mlp.hook_post", f"{p}.hook_mlp_out", block.mlp.W_out),
        ]
        for src, dst, W in pairs:
            Wd = W.detach().cpu()
            wmax = float(Wd.abs().max()) or 1.0
            for (h1, c1) in [n for n in kept if n[0] == src]:
                for (h2, c2) in [n for n in kept if n[0] == dst]:
                    w = float(Wd[c1, c2])
                    if w != 0:
                        x1, y1 = pos[(h1, c1)]
                        x2, y2 = pos[(h2, c2)]
                        ax.plot([x1, x2], [y1, y2], color="tab:red" if w > 0 else "tab:blue",
                                alpha=min(1, 0.15 + abs(w) / wmax), lw=0.5 + 2 * abs(w) / wmax, zorder=1)
    order_hooks = list(site_of)
    for (h1, c1) in kept:
        k1 = site_of[h1].kind
        if k1 not in ("attn_out", "mlp_out"):
            continue
        for (h2, c2) in kept:
            if c2 == c1 and site_of[h2].kind in ("attn_in", "mlp_in", "final_in") and \
                    order_hooks.index(h2) > order_hooks.index(h1) and (h2, c2) in keptset:
                x1, y1 = pos[(h1, c1)]
                x2, y2 = pos[(h2, c2)]
                ax.plot([x1, x2], [y1, y2], color="gray", ls=":", lw=0.8, zorder=1)
    for (h, c), (x, y) in pos.items():
        s = site_of[h]
        ax.scatter([x], [y], s=60, color=KIND_COLOR[s.kind], zorder=3, edgecolor="k", lw=0.5)
        label = node_label(s, c, model.cfg.d_head)
        if top_tokens and (h, c) in top_tokens:
            label += "\n" + " ".join(repr(t)[1:-1] for t in top_tokens[(h, c)][:3])
        ax.text(x + 0.12, y, label, fontsize=6.5, va="center", zorder=4)
    for kind, color in KIND_COLOR.items():
        ax.scatter([], [], color=color, label=kind, edgecolor="k", lw=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, title="node kind")
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    ax.set_xlabel("layer 0 (attention -> MLP) -> layer 1 ... -> unembedding;  red/blue: +/- weight, dotted: residual")
    n_all = sum(int(m.sum()) for m in circuit.kept.values())
    extra = "" if len(kept) == n_all else f" (the {len(kept)} highest-ranked of {n_all})"
    size = (f"{circuit.edges} edges" if circuit.n_nodes is not None
            else f"target not reached; best {len(kept)}-node set shown, task loss {circuit.train_loss:.2f}")
    ax.set_title(title or f"Circuit for {circuit.task} in {circuit.model_name}: {n_all} nodes{extra}, {size}")
    fig.tight_layout()
    return fig
