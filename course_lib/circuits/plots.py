"""Figures for notebook 02: weight-sparse transformers and their circuits.

Every plot function returns a matplotlib ``Figure`` and never calls ``show()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
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
        ax.set(xscale="log", title=task, xlabel="kept nodes", ylabel="task loss (train prompts)")
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
    model: SparseTransformer, circuit: pruning.Circuit, top_tokens: Mapping[Node, list[str]] | None = None,
    max_nodes: int = 40, title: str | None = None, edge_threshold: float = 0.0, data=None, tokenizer=None,
) -> Figure:
    """Wiring diagram of a circuit: nodes connected through to the answer logits, in columns by layer and kind.

    Drawn: the ``max_nodes`` highest-ranked kept nodes that have a path to the answer logits (the two answers
    of ``data``, else every token that a kept unembedding read channel writes above the threshold). Lines:
    weights with ``|w| >= edge_threshold`` (red +, blue -, width by |w|), dotted residual links, dashed grey
    query/key -> value links of one head. Each node is labelled with its role and, if given, the corpus
    tokens it fires on most. Labels do not overlap (the figure grows with the number of nodes).
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
        if top_tokens and n in top_tokens:
            label += "\nfires on: " + " ".join(pruning.readable_token(t) for t in top_tokens[n][:3])
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
    """One color per group: dense black, the others from a fixed palette in order of appearance."""
    sparse = [g for g in dict.fromkeys(groups) if g != "dense"]
    return {"dense": "black", **{g: _GROUP_PALETTE[i % len(_GROUP_PALETTE)] for i, g in enumerate(sparse)}}


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
    """The frontier task by task (:func:`course_lib.circuits.frontier.analyse_per_task`).

    One panel per task with at least one circuit: circuit edges (log) against validation loss; dense models
    as grey dots and the dense curve (seeds averaged) in black; each sparse model colored by group, with a
    hollow marker on the dense curve at its loss and a dotted line whose length is the ratio. The last panel
    gives every matched ratio (dense / sparse edges, log) against the sparse model's loss, with 1x and the
    paper's ~16x as lines."""
    tasks = [t for t, e in analysis["per_task"].items() if e["dense"] or e["sparse"]
             or any((m.edges.get(t) or 0) > 0 for m in models)]
    colors = group_colors([m.group for m in models])
    n = len(tasks) + 1
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    flat = axes.flatten()
    for ax, t in zip(flat, tasks):
        e = analysis["per_task"][t]
        dense = [(m.val_loss, m.edges[t]) for m in models if m.dense and (m.edges.get(t) or 0) > 0]
        if dense:
            ax.scatter(*zip(*dense), s=12, color="gray", zorder=2)
        if e["dense"]:
            ax.plot([p[0] for p in e["dense"]], [p[1] for p in e["dense"]], color="black", lw=1.2, zorder=1)
        for name, s in e["sparse"].items():
            g = next(m.group for m in models if m.name == name)
            ax.scatter([s["val_loss"]], [s["edges"]], s=28, color=colors[g], zorder=3)
            if s["matched_edges"]:
                ax.plot([s["val_loss"]] * 2, [s["edges"], s["matched_edges"]], ls=":", color=colors[g], lw=1)
                ax.scatter([s["val_loss"]], [s["matched_edges"]], s=28, facecolors="none", edgecolors=colors[g])
        ax.set_yscale("log")
        ax.set_title(f"{t}", fontsize=9)
        ax.set_xlabel("validation loss", fontsize=8)
        ax.set_ylabel("circuit edges", fontsize=8)
        ax.tick_params(labelsize=7)
    ax = flat[len(tasks)]
    for key, r in analysis["pairs"].items():
        if r is None:
            continue
        name = key.split("|")[0]
        m = next(x for x in models if x.name == name)
        ax.scatter([m.val_loss], [r], s=20, color=colors[m.group])
    ax.axhline(1, color="gray", lw=0.8)
    ax.axhline(16, color="gray", lw=0.8, ls="--")
    ax.text(ax.get_xlim()[0], 16, " paper ~16x", fontsize=7, va="bottom")
    ax.set_yscale("log")
    ax.set_title("dense / sparse edges at equal loss", fontsize=9)
    ax.set_xlabel("sparse model's validation loss", fontsize=8)
    ax.tick_params(labelsize=7)
    for a in flat[len(tasks) + 1:]:
        a.axis("off")
    handles = [plt.Line2D([], [], color="black", marker="o", mfc="gray", mec="gray", label="dense (curve: seeds averaged)")]
    handles += [plt.Line2D([], [], ls="", marker="o", color=c, label=g) for g, c in colors.items() if g != "dense"]
    handles += [plt.Line2D([], [], ls="", marker="o", mfc="none", color="gray", label="dense curve at the same loss")]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    fig.suptitle("Capability vs circuit size, task by task (held-out-valid circuits only)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig
