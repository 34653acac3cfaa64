"""Figures for the orientation notebook. Every function returns a matplotlib Figure (never shows it)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from course_lib.lens.predictions import LensTrace, Prediction, ranked_costs, top_wordlike
from course_lib.lens.sink import SinkProfile, norm_jump, sink_onset, uniform_bos_share


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


def ablation_bars(losses: dict[str, list[float]], layers: Sequence[int], annotate: int = 3) -> Figure:
    """Loss increase when each layer's attention or MLP output is zeroed; the ``annotate`` costliest are labelled."""
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
    ax.set_ylim(top=max(top, 0.01) * (3 if annotate == 0 else 30))
    ax.set_xlabel("layer")
    ax.set_ylabel("loss increase over clean (nats/token, symlog)")
    ax.set_title(f"Zero-ablation: what breaks the model? (clean loss {clean:.2f})")
    for rank, (comp, layer, cost) in enumerate(ranked_costs(losses, layers)[:annotate], start=1):
        i = list(layers).index(layer) + comps.index(comp) * width
        ax.annotate(f"#{rank} {comp} {layer}", (i, cost), xytext=(i + 0.7, 0.95 - 0.08 * (rank - 1)),
                    textcoords=("data", "axes fraction"), ha="left", va="center", fontsize=9,
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.6})
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def logit_lens_plot(final_prob: torch.Tensor, per_layer: Sequence[Sequence[Prediction]], answer: str) -> Figure:
    """Probability of the final answer at each layer, with each layer's top token written in."""
    fig, ax = plt.subplots(figsize=(8, 4))
    layers = np.arange(len(final_prob))
    ax.plot(layers, final_prob.numpy(), "o-", color="tab:green", label=f"P({answer!r}) read at that layer")
    for layer, preds in enumerate(per_layer):
        ax.annotate(repr(preds[0].token)[1:-1][:10], (layer, float(final_prob[layer])), fontsize=9,
                    rotation=60, xytext=(0, 6), textcoords="offset points")
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("layer (resid_post read through the final norm and unembedding)")
    ax.set_ylabel("probability")
    ax.set_title("Logit lens (labels: top token per layer)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def _label(token: str, width: int = 12) -> str:
    return repr(token)[1:-1][:width]


def logit_lens_trace_plot(trace: LensTrace) -> Figure:
    """Rank (log scale, 1 on top) and probability (log scale) of the final answer at every layer.

    Above the panels, each layer's most likely token that has a letter or digit in it (among the trace's
    top-k; pure punctuation and whitespace are skipped, which can hide a punctuation top-1 token).
    """
    n = len(trace.top)
    layers = np.arange(n)
    fig, (ax_r, ax_p) = plt.subplots(2, 1, figsize=(11, 6.8), sharex=True, height_ratios=(1, 1))
    ax_r.plot(layers, trace.answer_rank.numpy(), "o-", color="tab:purple")
    ax_r.set_yscale("log")
    ax_r.invert_yaxis()
    ax_r.axhline(1, color="grey", lw=0.8, ls=":")
    ax_r.set_ylabel(f"rank of {trace.answer.token!r}\n(log scale, 1 = top)", fontsize=11)
    ax_p.plot(layers, trace.answer_prob.clamp_min(1e-12).numpy(), "o-", color="tab:green")
    ax_p.set_yscale("log")
    ax_p.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax_p.set_ylabel(f"P({trace.answer.token!r})\n(log scale, floor 1e-12)", fontsize=11)
    ax_p.set_xlabel("layer (resid_post at the last position, read through the final norm and unembedding)",
                    fontsize=11)
    ax_p.set_xticks(layers, [str(i) for i in layers], fontsize=9)
    for ax in (ax_r, ax_p):
        ax.tick_params(axis="y", labelsize=10)
        ax.grid(alpha=0.3)
    labels = []
    for preds in trace.top:
        word = top_wordlike(preds)
        labels.append(_label(word.token) if word else "")
    top_axis = ax_r.secondary_xaxis("top")
    top_axis.set_xticks(layers, labels, rotation=90, fontsize=10)
    for tick, preds in zip(top_axis.get_xticklabels(), trace.top, strict=True):
        if preds and preds[0].token_id == trace.answer.token_id:
            tick.set_color("tab:green")
            tick.set_fontweight("bold")
    ax_r.set_title("Logit lens: the answer's rank and probability by layer\n"
                   "(top: each layer's most likely token with a letter or digit; green = the final answer)",
                   fontsize=12)
    fig.tight_layout()
    return fig


def sink_vs_norm(profile: SinkProfile) -> Figure:
    """Per layer: the BOS norm ratio (log scale) above the attention share sent to BOS, on the same tokens."""
    ratio = profile.norm_ratio.numpy()
    share = profile.layer_bos_share.numpy()
    layers = np.arange(len(ratio))
    uniform = uniform_bos_share(profile.norms.shape[-1])
    onset, jump = sink_onset(profile), norm_jump(profile)
    fig, (ax_n, ax_a) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax_n.plot(layers, ratio, "o-", color="tab:red", label="BOS norm / median norm of other tokens")
    ax_n.set_yscale("log")
    ax_n.set_ylabel("norm ratio (log scale)", fontsize=11)
    ax_a.plot(layers, share, "o-", color="tab:blue", label="attention from later tokens to BOS (mean over heads)")
    ax_a.plot(layers, profile.bos_share.max(1).values.numpy(), "x", color="tab:blue", alpha=0.6,
              label="the layer's most BOS-bound head")
    ax_a.axhline(uniform, color="grey", ls=":", label=f"uniform attention ({uniform:.2f})")
    ax_a.set_ylim(0, 1.02)
    ax_a.set_ylabel("attention share to BOS", fontsize=11)
    ax_a.set_xlabel("layer", fontsize=11)
    ax_a.set_xticks(layers, [str(i) for i in layers], fontsize=9)
    for ax in (ax_n, ax_a):
        ax.axvline(jump, color="tab:red", ls="--", lw=1)
        if onset is not None:
            ax.axvline(onset, color="tab:blue", ls="--", lw=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="upper left" if ax is ax_a else "lower right")
    onset_txt = f"sink from layer {onset}" if onset is not None else "no sink layer"
    ax_n.set_title(f"The attention sink and the BOS norm outlier ({onset_txt}, blue; norm jump at layer {jump}, red)",
                   fontsize=11)
    fig.tight_layout()
    return fig


def steering_plot(probs: torch.Tensor, layers: Sequence[int], labels: Sequence[str], title: str) -> Figure:
    """``probs [len(layers), len(labels)]``: probability of each token after steering at each layer."""
    fig, ax = plt.subplots(figsize=(9, 4))
    for j, label in enumerate(labels):
        ax.plot(list(layers), probs[:, j].numpy(), "o-", label=f"P({label!r})")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer whose resid_post gets the steering vector", fontsize=11)
    ax.set_ylabel("probability at the last position", fontsize=11)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10)
    fig.tight_layout()
    return fig
