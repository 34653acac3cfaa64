"""Figures for the orientation notebook. Every function returns a matplotlib Figure (never shows it)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from course_lib.lens.predictions import Prediction


def predictions_bar(preds: Sequence[Prediction], prompt: str) -> Figure:
    """Horizontal bars of next-token probabilities, most likely on top."""
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(preds) + 1.2))
    labels = [repr(p.token) for p in preds][::-1]
    ax.barh(labels, [p.prob for p in preds][::-1], color="tab:blue", label="P(next token)")
    ax.set_xlabel("probability")
    ax.set_ylabel("next token")
    ax.set_title(f"Next-token prediction after {prompt!r}", fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def attention_heads(pattern: torch.Tensor, str_tokens: Sequence[str], layer: int, heads: Sequence[int]) -> Figure:
    """Attention patterns ``pattern [n_heads, query, key]`` of the chosen heads, one panel each."""
    n = len(heads)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.6), squeeze=False)
    labels = [repr(t)[1:-1] for t in str_tokens]
    im = None
    for ax, h in zip(axes[0], heads, strict=True):
        im = ax.imshow(pattern[h].float().cpu().numpy(), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"L{layer} head {h}", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("key (attended to)")
    axes[0][0].set_ylabel("query (attending)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="attention weight")
    fig.suptitle(f"Attention patterns, layer {layer}", fontsize=11)
    return fig


def residual_norm_by_layer(norms: torch.Tensor) -> Figure:
    """``norms [n_layers, batch, pos]``: BOS (position 0) against the median of the other positions."""
    layers = np.arange(norms.shape[0])
    bos = norms[:, :, 0].mean(1).numpy()
    rest = norms[:, :, 1:].flatten(1)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(layers, bos, "o-", color="tab:red", label="BOS token (position 0)")
    ax.plot(layers, rest.median(1).values.numpy(), "o-", color="tab:blue", label="other tokens: median")
    ax.fill_between(
        layers, rest.quantile(0.1, dim=1).numpy(), rest.quantile(0.9, dim=1).numpy(),
        color="tab:blue", alpha=0.2, label="other tokens: 10-90%",
    )
    ax.set_yscale("log")
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("L2 norm of the residual stream (log scale)")
    ax.set_title("Residual-stream norm by layer: the BOS outlier")
    ax.legend()
    fig.tight_layout()
    return fig


def ablation_bars(losses: dict[str, list[float]], layers: Sequence[int]) -> Figure:
    """Loss increase when each layer's attention or MLP output is zeroed."""
    clean = losses["clean"][0]
    comps = [c for c in losses if c != "clean"]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(layers) * len(comps) + 2), 4))
    width = 0.8 / len(comps)
    x = np.arange(len(layers))
    for i, comp in enumerate(comps):
        ax.bar(x + i * width, np.array(losses[comp]) - clean, width, label=f"zero {comp} output")
    ax.set_xticks(x + width * (len(comps) - 1) / 2, [str(layer) for layer in layers], fontsize=8)
    ax.set_yscale("symlog", linthresh=0.01)
    top = max(max(losses[c]) - clean for c in comps)
    ax.set_ylim(top=max(top, 0.01) * 3)
    ax.set_xlabel("layer")
    ax.set_ylabel("loss increase over clean (nats/token, symlog)")
    ax.set_title(f"Zero-ablation: what breaks the model? (clean loss {clean:.2f})")
    ax.legend()
    fig.tight_layout()
    return fig


def logit_lens_plot(final_prob: torch.Tensor, per_layer: Sequence[Sequence[Prediction]], answer: str) -> Figure:
    """Probability of the final answer at each layer, with each layer's top token written in."""
    fig, ax = plt.subplots(figsize=(8, 4))
    layers = np.arange(len(final_prob))
    ax.plot(layers, final_prob.numpy(), "o-", color="tab:green", label=f"P({answer!r}) read at that layer")
    for layer, preds in enumerate(per_layer):
        ax.annotate(repr(preds[0].token)[1:-1][:10], (layer, float(final_prob[layer])), fontsize=7,
                    rotation=60, xytext=(0, 6), textcoords="offset points")
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("layer (resid_post read through the final norm and unembedding)")
    ax.set_ylabel("probability")
    ax.set_title("Logit lens: when does the model settle on its answer? (labels: top token per layer)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
