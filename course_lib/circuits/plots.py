"""Figures for notebook 02: weight-sparse transformers and their circuits.

Every plot function returns a matplotlib ``Figure`` and never calls ``show()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import torch
from matplotlib.figure import Figure

from course_lib.circuits import pruning
from course_lib.circuits.transformer import SparseTransformer

KIND_COLUMN = {"attn_in": 0, "q": 1, "k": 1, "v": 1, "attn_out": 2, "mlp_in": 3, "neuron": 4, "mlp_out": 5}
KIND_COLOR = {
    "attn_in": "tab:blue", "q": "tab:orange", "k": "tab:olive", "v": "tab:green", "attn_out": "tab:red",
    "mlp_in": "tab:cyan", "neuron": "tab:purple", "mlp_out": "tab:pink", "final_in": "tab:gray",
}


def _model_colors(names: Sequence[str]) -> dict[str, str]:
    palette = ["black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    return {n: ("gray" if "random" in n else palette[i % len(palette)]) for i, n in enumerate(names)}


def plot_loss_vs_nodes(results: Mapping[str, Mapping[str, pruning.Circuit]], target: float) -> Figure:
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
        ax.set(xscale="log", title=task, xlabel="kept nodes", ylabel="task loss (fit prompts)")
        ax.set_ylim(0, max(1.5, ax.get_ylim()[1] if ax.get_ylim()[1] < 5 else 1.5))
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Task loss vs circuit size (star: smallest circuit reaching the target)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- wiring diagram


def _node_key(hook: str, c: int) -> tuple[str, int]:
    return hook, c


ROLE = {
    "attn_in": "attn read", "q": "query", "k": "key", "v": "value", "attn_out": "attn write", "mlp_in": "MLP read",
    "neuron": "MLP neuron", "mlp_out": "MLP write", "final_in": "unembed read",
}


def node_label(site: pruning.NodeSite, c: int, d_head: int) -> str:
    """A node's role: ``L0 query h1.3`` (layer, role, head.channel), ``L1 MLP neuron 17``, ``unembed read 5``."""
    if site.kind in ("q", "k", "v"):
        return f"L{site.layer} {ROLE[site.kind]} h{c // d_head}.{c % d_head}"
    if site.kind == "final_in":
        return f"unembed read {c}"
    return f"L{site.layer} {ROLE[site.kind]} {c}"


Node = tuple[str, int]


@torch.no_grad()
def wiring_edges(
    model: SparseTransformer, nodes: Sequence[Node], answer_ids: Sequence[int], edge_threshold: float = 0.0,
) -> list[tuple[Node, Node, float, str]]:
    """Edges between ``nodes`` and the answer logits ``("answer", token id)``: ``(src, dst, weight, style)``.

    Styles: ``"w"`` a weight with ``|w| >= edge_threshold`` (W_Q/W_K/W_V, W_O, W_in, W_out, W_U),
    ``"resid"`` a write channel to a later read of the same channel (weight 1), ``"attn"`` a kept
    query/key channel to the kept value channels of its head (it sets where they read from).
    """
    sites = {s.hook: s for s in pruning.node_sites(model)}
    order = {h: i for i, h in enumerate(sites)}
    by_hook: dict[str, list[int]] = {}
    for h, c in nodes:
        by_hook.setdefault(h, []).append(c)
    out: list[tuple[Node, Node, float, str]] = []

    def weights(src: str, dst: str, W: torch.Tensor) -> None:
        for c1 in by_hook.get(src, []):
            for c2 in by_hook.get(dst, []):
                w = float(W[c1, c2])
                if w != 0 and abs(w) >= edge_threshold:
                    out.append(((src, c1), (dst, c2), w, "w"))

    dh = model.cfg.d_head
    for layer, block in enumerate(model.blocks):
        p = f"blocks.{layer}"
        weights(f"{p}.hook_attn_in", f"{p}.attn.hook_q", block.attn.W_Q)
        weights(f"{p}.hook_attn_in", f"{p}.attn.hook_k", block.attn.W_K)
        weights(f"{p}.hook_attn_in", f"{p}.attn.hook_v", block.attn.W_V)
        weights(f"{p}.attn.hook_v", f"{p}.hook_attn_out", block.attn.W_O)
        weights(f"{p}.hook_mlp_in", f"{p}.mlp.hook_post", block.mlp.W_in)
        weights(f"{p}.mlp.hook_post", f"{p}.hook_mlp_out", block.mlp.W_out)
        for kind in ("q", "k"):
            for c1 in by_hook.get(f"{p}.attn.hook_{kind}", []):
                for c2 in by_hook.get(f"{p}.attn.hook_v", []):
                    if c1 // dh == c2 // dh:
                        out.append(((f"{p}.attn.hook_{kind}", c1), (f"{p}.attn.hook_v", c2), 1.0, "attn"))
    for h1, cs in by_hook.items():
        if sites[h1].kind not in ("attn_out", "mlp_out"):
            continue
        for h2, cs2 in by_hook.items():
            if sites[h2].kind in ("attn_in", "mlp_in", "final_in") and order[h2] > order[h1]:
                out += [((h1, c), (h2, c), 1.0, "resid") for c in cs if c in cs2]
    for c in by_hook.get("hook_final_in", []):
        for a in answer_ids:
            w = float(model.W_U[c, a])
            if w != 0 and abs(w) >= edge_threshold:
                out.append((("hook_final_in", c), ("answer", int(a)), w, "w"))
    return out


def connected_to_answers(edges: Sequence[tuple[Node, Node, float, str]]) -> set[Node]:
    """Nodes with a directed path to an ``("answer", id)`` node (the answers included)."""
    into: dict[Node, list[Node]] = {}
    for a, b, _, _ in edges:
        into.setdefault(b, []).append(a)
    seen = {b for _, b, _, _ in edges if b[0] == "answer"}
    stack = list(seen)
    while stack:
        for a in into.get(stack.pop(), []):
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen


def connected_core(model: SparseTransformer, circuit: pruning.Circuit, data, edge_threshold: float = 0.0
                   ) -> list[Node]:
    """The kept nodes of ``circuit`` with a path to the logits of ``data``'s two answers through weights with
    ``|w| >= edge_threshold`` (0: any nonzero weight), best-ranked first (:func:`wiring_edges`,
    :func:`connected_to_answers`)."""
    answers = sorted({int(a) for a in torch.unique(data.answer_ids).tolist()})
    conn = connected_to_answers(wiring_edges(model, circuit.kept_nodes, answers, edge_threshold))
    return [n for n in circuit.kept_nodes if n in conn]


def plot_wiring(
    model: SparseTransformer, circuit: pruning.Circuit, notes: Mapping[Node, str] | None = None,
    max_nodes: int = 40, title: str | None = None, edge_threshold: float = 0.0, data=None, tokenizer=None,
) -> Figure:
    """Wiring diagram of a circuit: nodes connected through to the answer logits, in columns by layer and kind.

    Drawn: the ``max_nodes`` highest-ranked kept nodes that have a path to the answer logits (the two answers
    of ``data``, else every token that a kept unembedding read channel writes above the threshold). Lines:
    weights with ``|w| >= edge_threshold`` (red +, blue -, width by |w|), dotted residual links, dashed grey
    query/key -> value links of one head. Each node is labelled with its role and, if given, a second line of
    ``notes`` (the notebook writes the evidence: :func:`course_lib.circuits.pruning.node_evidence`). Labels do not overlap (the figure grows with the number of nodes).
    """
    sites = pruning.node_sites(model)
    site_of = {s.hook: s for s in sites}
    kept = circuit.kept_nodes[:max_nodes]
    if data is not None:
        answers = sorted({int(a) for a in torch.unique(data.answer_ids).tolist()})
    else:
        answers = sorted({int(a) for c in [c for h, c in kept if h == "hook_final_in"]
                          for a in torch.nonzero(model.W_U[c].abs() >= max(edge_threshold, 1e-12)).flatten().tolist()})[:4]
    edges = wiring_edges(model, kept, answers, edge_threshold)
    conn = connected_to_answers(edges)
    drawn = [n for n in kept if n in conn] + [("answer", a) for a in answers if ("answer", a) in conn]
    edges = [e for e in edges if e[0] in conn and e[1] in conn]

    def col_key(n: Node) -> tuple[int, int]:
        if n[0] == "answer":
            return (model.cfg.n_layers + 1, 0)
        s = site_of[n[0]]
        return (s.layer, KIND_COLUMN.get(s.kind, 0))

    cols = sorted({col_key(n) for n in drawn})
    col_index = {k: i for i, k in enumerate(cols)}
    by_col: dict[int, list[Node]] = {}
    for n in drawn:
        by_col.setdefault(col_index[col_key(n)], []).append(n)
    pos: dict[Node, tuple[float, float]] = {}
    for col, ns in by_col.items():
        ns.sort(key=lambda n: (n[0], n[1]))
        for i, n in enumerate(ns):
            pos[n] = (float(col), -(i - (len(ns) - 1) / 2))
    height = max([len(v) for v in by_col.values()] + [3])
    fig, ax = plt.subplots(figsize=(max(8.0, 2.7 * len(cols) + 1.5), max(3.5, 0.55 * height + 1.6)))
    wmax = max([abs(w) for _, _, w, st in edges if st == "w"] + [1e-12])
    for a, b, w, st in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        if st == "w":
            ax.plot([x1, x2], [y1, y2], color="tab:red" if w > 0 else "tab:blue",
                    alpha=min(1.0, 0.25 + abs(w) / wmax), lw=0.5 + 2.5 * abs(w) / wmax, zorder=1)
        else:
            ax.plot([x1, x2], [y1, y2], color="gray", ls=":" if st == "resid" else "--", lw=0.8, zorder=1)
    for n, (x, y) in pos.items():
        if n[0] == "answer":
            ax.scatter([x], [y], s=90, marker="s", color="gold", zorder=3, edgecolor="k", lw=0.5)
            tok = tokenizer.decode([n[1]]) if tokenizer is not None else str(n[1])
            ax.text(x + 0.08, y, f"logit of {pruning.readable_token(tok)!r}" if tokenizer else f"logit of token {tok}",
                    fontsize=7, va="center", zorder=4)
            continue
        s = site_of[n[0]]
        ax.scatter([x], [y], s=60, color=KIND_COLOR[s.kind], zorder=3, edgecolor="k", lw=0.5)
        label = node_label(s, n[1], model.cfg.d_head)
        if notes and n in notes:
            label += "\n" + notes[n]
        ax.text(x + 0.08, y, label, fontsize=7, va="center", zorder=4,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    for kind, color in KIND_COLOR.items():
        ax.scatter([], [], color=color, label=ROLE[kind], edgecolor="k", lw=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, title="node role")
    ax.set_xlim(-0.3, len(cols) - 0.2)
    ax.set_ylim(-(height - 1) / 2 - 0.7, (height - 1) / 2 + 0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    ax.set_xlabel(f"layer 0 -> ... -> answer logits;  lines: |weight| >= {edge_threshold:g} (red +, blue -), "
                  "dotted: residual stream, dashed: query/key -> value of one head")
    n_all = sum(int(m.sum()) for m in circuit.kept.values())
    n_drawn = len([n for n in drawn if n[0] != "answer"])
    extra = "" if n_drawn == n_all else f"; {n_drawn} of {n_all} drawn (those connected to the answers)"
    size = (f"{circuit.n_nodes} nodes, {circuit.edges} edges, held-out loss {circuit.test_loss:.2f}" if circuit.valid
            else f"no held-out-valid circuit; best {n_all}-node set, held-out loss {circuit.test_loss:.2f}")
    ax.set_title(title or f"{circuit.task} in {circuit.model_name}: {size}{extra}", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the reference set

_GROUP_PALETTE = ["tab:green", "tab:orange", "tab:red", "tab:purple", "tab:blue", "tab:brown", "tab:olive"]


def group_colors(groups: Sequence[str]) -> dict[str, str]:
    """One color per group: dense groups black and grey, the others from a fixed palette in order of appearance."""
    dense = [g for g in dict.fromkeys(groups) if g.startswith("dense")]
    sparse = [g for g in dict.fromkeys(groups) if not g.startswith("dense")]
    return {**{g: ("black", "dimgray", "silver")[i % 3] for i, g in enumerate(dense)},
            **{g: _GROUP_PALETTE[i % len(_GROUP_PALETTE)] for i, g in enumerate(sparse)}}


def plot_reference_training(entries: Sequence[Mapping]) -> Figure:
    """The reference set's training, from its manifest: validation loss at each evaluation (left) and the
    kept fraction (right) against step, one line per model, colored by group."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = group_colors([e["group"] for e in entries])
    seen = set()
    for e in entries:
        label = None if e["group"] in seen else e["group"]
        seen.add(e["group"])
        ev = e["eval"]
        a.plot([x["step"] for x in ev], [x["val_loss"] for x in ev], color=colors[e["group"]], lw=1, alpha=0.8,
               label=label)
        if e.get("log"):
            b.plot(e["log"]["step"], e["log"]["kept_fraction"], color=colors[e["group"]], lw=1, label=label)
    a.set(xscale="log", xlabel="optimizer step", ylabel="validation loss (nats/token)",
          title="Validation loss during training (every seed)")
    b.set(xlabel="optimizer step", ylabel="kept fraction", ylim=(0, 1.05),
          title="Kept fraction of every weight tensor (annealed)")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_solved(full_loss: Mapping[str, Mapping[str, float]], target: float) -> Figure:
    """Models (rows) x tasks (columns): the unpruned model's held-out task loss, annotated; a cell is
    outlined when it is at most ``target`` (the task is solved). Chance is ln 2 = 0.693."""
    models = list(full_loss)
    tasks = list(next(iter(full_loss.values())))
    vals = np.array([[full_loss[m][t] for t in tasks] for m in models])
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 3, 0.28 * len(models) + 1.4))
    im = ax.imshow(np.minimum(vals, 1.0), cmap="viridis_r", vmin=0, vmax=1.0, aspect="auto")
    for i in range(len(models)):
        for j in range(len(tasks)):
            ok = vals[i, j] <= target
            ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if vals[i, j] < 0.6 else "white", fontweight="bold" if ok else "normal")
            if ok:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=7)
    ax.set_title(f"Held-out task loss of each full model (red box: solved, at most {target}; chance 0.693)",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, label="task loss (clipped at 1)")
    fig.tight_layout()
    return fig


def plot_frontier_tasks(models: Sequence, analysis: Mapping) -> Figure:
    """The frontier task by task (:func:`course_lib.circuits.frontier.analyse`).

    One panel per task with a circuit: circuit edges (log) against validation loss. Dense models are light
    grey, marked by width; each width's point (mean loss of its seeds, geometric-mean edges) is black; the black
    step line is the dense frontier over the widths (fewest edges of any width at least as capable, so it only
    falls to the right). Sparse models are colored by group; a hollow marker
    shows the frontier at a sparse model's loss and the dotted line between them is its edge ratio."""
    tasks = [t for t in analysis["tasks"] if any((m.edges.get(t) or 0) > 0 for m in models)]
    colors = group_colors([m.group for m in models])
    n = max(1, len(tasks))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.5 * cols, 3.0 * rows), squeeze=False)
    flat = axes.flatten()
    dense = [m for m in models if m.dense]
    widths = sorted({m.width for m in dense})
    markers = dict(zip(widths, "v^so<>Dp"))
    lo = min(m.val_loss for m in models) - 0.05
    hi = max(m.val_loss for m in models) + 0.05
    for ax, t in zip(flat, tasks):
        for m in dense:
            if m.edges.get(t):
                ax.scatter([m.val_loss], [m.edges[t]], s=10, color="silver", marker=markers[m.width], zorder=2)
        pts = [(p[0], p[2], p[3]) for p in analysis["dense"].get(t, [])]  # one point per width, by loss
        for loss, e, w in pts:
            ax.scatter([loss], [e], s=30, color="black", marker=markers.get(w, "o"), zorder=3)
        if pts:
            xs, ys, best = [], [], None
            for loss, e, _ in pts:
                best = e if best is None else min(best, e)
                xs.append(loss)
                ys.append(best)
            ax.step(xs + [hi], ys + [ys[-1]], where="post", color="black", lw=1.2, zorder=1)
        for m in models:
            if m.dense or not m.edges.get(t):
                continue
            ax.scatter([m.val_loss], [m.edges[t]], s=26, color=colors[m.group], zorder=3)
            r = analysis["pairs"].get(f"{m.name}|{t}")
            if r:
                ax.plot([m.val_loss] * 2, [m.edges[t], r["dense_edges"]], ls=":", color=colors[m.group], lw=1)
                ax.scatter([m.val_loss], [r["dense_edges"]], s=26, facecolors="none", edgecolors=colors[m.group])
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("validation loss (lower: more capable)", fontsize=8)
        ax.set_ylabel("circuit edges", fontsize=8)
        ax.tick_params(labelsize=7)
    for a in flat[len(tasks):]:
        a.axis("off")
    handles = [plt.Line2D([], [], color="black", label="dense frontier (fewest edges at loss <= L)")]
    handles += [plt.Line2D([], [], ls="", marker=mk, color="black", label=f"dense width {w} (grey: its seeds)")
                for w, mk in markers.items()]
    handles += [plt.Line2D([], [], ls="", marker="o", color=c, label=g) for g, c in colors.items() if not g.startswith("dense")]
    handles += [plt.Line2D([], [], ls="", marker="o", mfc="none", color="gray", label="frontier at the same loss")]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7.5, frameon=False)
    fig.suptitle("Capability vs circuit size, task by task (held-out-valid circuits only)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(handles) + 3) // 4), 1, 0.96))
    return fig


RATIO_STYLE = {"edge": ("edge ratio", "tab:red", "o"), "null": ("density null", "gray", "x"),
               "node": ("node ratio", "tab:blue", "s"), "excess": ("edge ratio / density null", "tab:green", "D")}


def plot_ratios_by_fraction(analysis: Mapping, paper: float = 16.0) -> Figure:
    """The headline figure: per sparse group, against ``1/f`` (log), the geometric-mean edge ratio, its density
    null, the node ratio and the edge ratio divided by the null, each with its bootstrap interval. The dotted
    diagonal is ``1/f``: what weight density alone gives a circuit on the same nodes. 1x is no difference."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    groups = [(g, s) for g, s in analysis["groups"].items() if s.get("fraction") and s["edge"]["value"]]
    offsets = {"edge": 0.97, "null": 1.0, "node": 1.03, "excess": 1.06}
    for key, (label, color, marker) in RATIO_STYLE.items():
        for i, (_, s) in enumerate(groups):
            v = s[key]
            x = offsets[key] / s["fraction"] * (1 + 0.02 * (i % 2))
            err = None if v["lo"] is None else [[v["value"] - v["lo"]], [v["hi"] - v["value"]]]
            ax.errorbar([x], [v["value"]], yerr=err, color=color, marker=marker, ms=6, capsize=3, ls="",
                        label=label if i == 0 else None)
    if groups:
        xs = sorted(1 / s["fraction"] for _, s in groups)
        grid = np.geomspace(xs[0] * 0.8, xs[-1] * 1.25, 20)
        ax.plot(grid, grid, ls=":", color="gray", lw=1, label="1/f (density alone, same nodes)")
        for i, (g, s) in enumerate(sorted(groups, key=lambda gs: gs[1]["fraction"])):
            ax.annotate(g, (1 / s["fraction"], s["edge"]["value"]), fontsize=7,
                        xytext=(5, 8 if i % 2 == 0 else -12), textcoords="offset points", color="tab:red")
    ax.axhline(1, color="black", lw=0.8)
    ax.axhline(paper, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if groups:
        ticks = sorted({round(1 / s["fraction"], 6) for _, s in groups})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7.5)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.text(ax.get_xlim()[1], paper, f"paper ~{paper:g}x (edges, ~1/1000 of weights kept) ", fontsize=7, va="bottom",
            ha="right", color="dimgray")
    ax.set_xlabel("1 / f  (f: kept fraction of the block weights)", fontsize=9)
    ax.set_ylabel("dense / sparse at matched loss", fontsize=9)
    ax.set_title("Circuit size ratios per kept fraction, against the density null (95% bootstrap CIs)", fontsize=9)
    ax.legend(fontsize=7.5, loc="upper left", frameon=False)
    fig.tight_layout()
    return fig


def plot_mask_noise(noise: Mapping[str, Mapping[str, Sequence[int | None]]]) -> Figure:
    """The search's noise floor: for each (model, task) pair searched with several mask seeds, the circuit's
    edges (left) and nodes (right) per seed, pairs sorted by their median edges; a missing point is a seed
    whose node set was not held-out-valid."""
    keys = sorted(noise, key=lambda k: np.median([e for e in noise[k]["edges"] if e] or [0]))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.3))
    for ax, what in zip(axes, ("edges", "nodes")):
        for i, k in enumerate(keys):
            vals = [v for v in noise[k][what] if v]
            ax.scatter([i] * len(vals), vals, s=12, color="tab:purple" if "sparse" in k else "gray")
            if len(vals) > 1:
                ax.plot([i, i], [min(vals), max(vals)], color="lightgray", lw=2, zorder=0)
        ax.set_yscale("log")
        ax.set_xlabel("(model, task) pairs, sorted", fontsize=8)
        ax.set_ylabel(f"circuit {what}", fontsize=8)
        ax.set_xticks([])
    axes[0].set_title("same pair, different mask seeds (purple: sparse, grey: dense)", fontsize=9)
    fig.tight_layout()
    return fig
