"""Notebook 05's figures; every function returns a matplotlib Figure (the notebook saves and shows it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from course_lib.capstone.activity import STATS, UnitActivity
from course_lib.capstone.circuit_view import CircuitUnits
from course_lib.capstone.explain import CHANCE, LABELS, SCORERS, UnitScore
from course_lib.capstone.matching import MatchedPair
from course_lib.capstone.units import CLASSES, COLORS


def plot_pairs(pairs: Sequence[MatchedPair]) -> Figure:
    """Validation loss of each sparse model and of the dense model it meets (a line per pair), by kept fraction."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    fr = sorted({p.fraction for p in pairs}, reverse=True)
    for p in pairs:
        x = fr.index(p.fraction) + (p.seed - 1) * 0.12
        ax.plot([x, x], [p.dense_loss, p.sparse_loss], color="lightgray", zorder=1)
        ax.scatter([x], [p.sparse_loss], color="tab:red", s=28, zorder=2, label="sparse model" if p is pairs[0] else None)
        ax.scatter([x], [p.dense_loss], color="tab:orange", marker="s", s=28, zorder=2,
                   label="dense model it meets" if p is pairs[0] else None)
        ax.annotate(f"d{p.dense_width}", (x, p.dense_loss), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xticks(range(len(fr)), [f"kept {f:g}" for f in fr])
    ax.margins(y=0.12)
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Matched pairs: each sparse model and the least capable dense width at least as capable\n"
                 "(seeds side by side; d<width> names the dense model's width)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _class_values(scores: Sequence[UnitScore], cls: str, key: str, which: str) -> list[float]:
    return [float(v) for r in scores if r.cls == cls and (v := getattr(r, which).get(key)) is not None]


def plot_class_scores(scores: Sequence[UnitScore], means: Mapping[str, Mapping[str, Mapping[str, Any]]],
                      gates: Mapping[str, Mapping[str, Any]], classes: Sequence[str] = CLASSES) -> Figure:
    """One panel per scorer: every unit's score (dots) per class, the class mean with its interval over units and
    seeds (black), and the mean score of another unit's explanation on the same units (hollow diamond: the null).
    A scorer that failed its gate is drawn in grey and titled so."""
    fig, axes = plt.subplots(1, len(SCORERS), figsize=(4.6 * len(SCORERS), 4.2), sharey=False)
    rng = np.random.default_rng(0)
    for ax, key in zip(np.atleast_1d(axes), SCORERS):
        ok = bool(gates.get(key, {}).get("pass"))
        for i, cls in enumerate(classes):
            v = _class_values(scores, cls, key, "own")
            o = _class_values(scores, cls, key, "other")
            color = COLORS.get(cls, "k") if ok else "lightgray"
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=6, alpha=0.45, color=color)
            m = means.get(key, {}).get(cls, {})
            if m.get("mean") is not None:
                lo, hi = m["ci95"]
                ax.errorbar([i], [m["mean"]], yerr=[[m["mean"] - lo], [hi - m["mean"]]], fmt="o", color="k",
                            capsize=3, ms=4)
            if o:
                ax.scatter([i + 0.3], [np.mean(o)], marker="D", facecolors="none", edgecolors="k", s=26)
        ax.axhline(CHANCE[key], color="gray", lw=0.8, ls=":")
        ax.set_xticks(range(len(classes)), [c.replace(" ", "\n") for c in classes], fontsize=7)
        ax.set_title(LABELS[key] + ("" if ok else "\nFAILED its gate: not used"), fontsize=8.5)
    fig.suptitle("Scores per unit class (dots: units; black: mean over pairs, 95% interval over units and seeds; "
                 "hollow diamond: another unit's explanation)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_r_against_k(table: Mapping[str, Mapping[str, Mapping[int, Mapping[str, Any]]]],
                     classes: Sequence[str] = CLASSES) -> Figure:
    """Mean pooled r of the k-token explanation against k (log axis), one line per class with its 95% band;
    binary and weighted keyword simulators side by side (:func:`course_lib.capstone.explain.r_against_k`)."""
    fig, axes = plt.subplots(1, len(table), figsize=(6 * len(table), 4), sharey=True)
    for ax, (sim, per_kind) in zip(np.atleast_1d(axes), table.items()):
        for cls in classes:
            row = per_kind.get(cls)
            if not row:
                continue
            ks = sorted(k for k in row if row[k]["mean"] is not None)
            m = [row[k]["mean"] for k in ks]
            ls = "--" if "random" in cls else "-"
            ax.plot(ks, m, ls, marker="o", ms=3, color=COLORS.get(cls, "k"), label=cls)
            ci = [row[k]["ci95"] for k in ks]
            if all(c is not None for c in ci):
                ax.fill_between(ks, [c[0] for c in ci], [c[1] for c in ci], color=COLORS.get(cls, "k"), alpha=0.12)
        ax.set_xscale("log")
        ax.set_xlabel("k: tokens in the explanation")
        ax.set_title(f"{sim} keyword simulator", fontsize=9)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mean r on the scoring split")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.suptitle("Description length: how much of each class k tokens capture (dashed: random directions)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_differences(diffs: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str) -> Figure:
    """A forest plot: per comparison (rows) and per group (all fractions, then each), the paired difference with
    its 95% interval over units and seeds; ``diffs[comparison][group]`` from
    :func:`course_lib.capstone.compare.paired_difference`."""
    rows = [(c, g, d) for c, per in diffs.items() for g, d in per.items() if d.get("diff") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    for i, (_c, g, d) in enumerate(rows):
        y = len(rows) - i
        lo, hi = d["ci95"] if d.get("ci95") else (d["diff"], d["diff"])
        color = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "gray"
        ax.errorbar([d["diff"]], [y], xerr=[[d["diff"] - lo], [hi - d["diff"]]], fmt="o" if g == "all" else "s",
                    color=color, capsize=3, ms=5 if g == "all" else 3.5)
        for v in d.get("per_pair", {}).values():
            ax.scatter([v], [y + 0.25], marker="v", color="k", s=9, alpha=0.6)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks([len(rows) - i for i in range(len(rows))], [f"{c}  ({g})" for c, g, _ in rows], fontsize=7.5)
    ax.set_xlabel("difference of class means (small triangles: each pair, i.e. each seed)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_activity(rows: Sequence[UnitActivity], classes: Sequence[str] = CLASSES) -> Figure:
    """The three activation statistics per class (boxes over units, all pairs)."""
    fig, axes = plt.subplots(1, len(STATS), figsize=(4.6 * len(STATS), 3.8))
    titles = {"active_fraction": "active fraction (> 0.1 max); small = sparse",
              "top_token_share": "share of mass on the top token", "top_bigram_share": "share of mass on the top bigram"}
    for ax, key in zip(axes, STATS):
        data = [[getattr(r, key) for r in rows if r.cls == c] for c in classes]
        keep = [i for i, d in enumerate(data) if d]
        bp = ax.boxplot([data[i] for i in keep], patch_artist=True, showfliers=False)
        for patch, i in zip(bp["boxes"], keep):
            patch.set_facecolor(COLORS.get(classes[i], "w"))
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(keep) + 1), [classes[i].replace(" ", "\n") for i in keep], fontsize=7)
        ax.set_title(titles[key], fontsize=9)
        ax.set_ylim(0, None)
    fig.suptitle("Without language: where each class's activation mass sits (scoring split)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_circuits(rows: Sequence[CircuitUnits]) -> Figure:
    """Per circuit (pair, task): its units at the two sites (light) and how many are explained (dark), dense and
    sparse side by side."""
    keys = sorted({(r.pair, r.task) for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys) + 2), 3.8))
    w = 0.38
    for j, side in enumerate(("dense", "sparse")):
        color = "tab:orange" if side == "dense" else "tab:red"
        for i, k in enumerate(keys):
            r = next((r for r in rows if (r.pair, r.task) == k and r.side == side), None)
            if r is None:
                continue
            x = i + (j - 0.5) * w
            ax.bar([x], [r.n_units], w, color=color, alpha=0.3, label=f"{side}: circuit units" if i == 0 else None)
            ax.bar([x], [r.n_explained], w, color=color, label=f"{side}: explained" if i == 0 else None)
    ax.set_xticks(range(len(keys)), [f"{t}\n{p}" for p, t in keys], fontsize=7)
    ax.set_ylabel("units (neurons + read channels)")
    ax.set_title("Task circuits: units a circuit needs, and how many have an explanation that beats the null", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
