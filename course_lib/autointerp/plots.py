"""Figures for notebook 04 (automated interpretability): score distributions, explainer comparison,
per-unit cards with token highlighting, and an HTML version of the cards for widgets.

Every plot function returns a matplotlib ``Figure`` and never calls ``show()``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from course_lib.autointerp.records import UnitRecords
from course_lib.autointerp.results import CHANCE as CHANCE_BY_KEY
from course_lib.autointerp.results import Result, bootstrap_ci, gate_failure

KIND_COLORS = {"sae": "tab:blue", "neuron": "tab:orange", "random": "tab:gray", "token": "tab:green"}
FAILED_COLOR = "lightgray"  # every artist of a scorer that failed its sanity gates
SCORE_LABELS = {
    "correlation_llm": "correlation\n(135M simulator)",
    "correlation_keyword": "correlation\n(keyword simulator)",
    "detection_auroc": "detection AUROC",
    "fuzzing_auroc": "fuzzing AUROC",
    "embedding_auroc": "embedding AUROC",
    "surprisal_auroc": "surprisal AUROC",
    "intruder_accuracy": "intruder accuracy",
}
CHANCE = CHANCE_BY_KEY


def _vals(results: Sequence[Result], key: str) -> list[float]:
    return [v for r in results if (v := r.scores.get(key)) is not None and math.isfinite(v)]


def _failure(gates: dict[str, dict[str, Any]] | None, key: str) -> str | None:
    """``"failed gate: ..."`` when ``gates`` says the scorer ``key`` failed (a scorer not gated: None)."""
    return None if gates is None or key not in gates else gate_failure(gates[key])


def plot_score_distributions(results: Sequence[Result], explainer: str,
                             kinds: Sequence[str] = ("sae", "neuron", "random"),
                             keys: Sequence[str] = tuple(SCORE_LABELS),
                             gates: dict[str, dict[str, Any]] | None = None) -> Figure:
    """One panel per scorer: each unit's score as a dot, per unit kind, with the kind's mean (bar) and
    its 95% bootstrap confidence interval over units (:func:`~.results.bootstrap_ci`); ``n`` under
    each bar.

    ``gates`` (:func:`~.results.sanity_gates`): a scorer that failed its gates is drawn in
    :data:`FAILED_COLOR` with ``"failed gate: ..."`` in its panel's title -- its numbers are shown,
    not to be read as a result.
    """
    rows = [r for r in results if r.explainer == explainer]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.7 * len(keys), 3.6), sharey=False)
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)
    labelled: set[str] = set()  # kinds already in the legend (the first panel with data labels them)
    for ax, key in zip(axes, keys):
        failed = _failure(gates, key)
        for i, kind in enumerate(kinds):
            v = _vals([r for r in rows if r.kind == kind], key)
            color = FAILED_COLOR if failed else KIND_COLORS.get(kind, "k")
            if v:
                m, ci = float(np.mean(v)), bootstrap_ci(v)
                err = None if ci is None else [[max(0.0, m - ci[0])], [max(0.0, ci[1] - m)]]
                first = kind not in labelled and not failed
                ax.bar(i, m, yerr=err, capsize=4, ecolor=FAILED_COLOR if failed else "k", color=color,
                       alpha=0.35, width=0.7, label=f"{kind} (mean, 95% bootstrap CI)" if first else None)
                ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=12, color=color,
                           zorder=3, label=f"{kind} (unit)" if first else None)
                if first:
                    labelled.add(kind)
            ax.text(i, -0.04, f"n={len(v)}", transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=6,
                    color="gray")
        ax.axhline(CHANCE.get(key, 0.0), color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(kinds)), kinds)
        ax.tick_params(axis="x", pad=9)
        title = SCORE_LABELS.get(key, key)
        if failed:
            title += "\n" + failed.replace("; ", ";\n")
        ax.set_title(title, fontsize=8, color="gray" if failed else "k")
        ax.set_ylim(-1.05 if key.startswith("correlation") else -0.02, 1.05)
    axes[0].set_ylabel("score (dashed: chance)")
    if labelled:
        fig.legend(loc="lower center", ncol=6, fontsize=7, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"Scores per unit kind, explanations by {explainer}"
                 + (" (grey: scorer failed its sanity gates)" if gates and any(_failure(gates, k) for k in keys) else ""))
    fig.tight_layout()
    return fig


def plot_explainer_comparison(results: Sequence[Result], keys: Sequence[str] = tuple(SCORE_LABELS),
                              gates: dict[str, dict[str, Any]] | None = None) -> Figure:
    """Mean score (+/- standard error) per scorer for each explainer, all unit kinds pooled.

    ``gates``: the bars of a scorer that failed its gates are drawn in :data:`FAILED_COLOR` and its
    label says ``"failed gate: ..."``.
    """
    explainers = sorted({r.explainer for r in results})
    fig, ax = plt.subplots(figsize=(1.7 * len(keys) + 2, 4.2))
    width = 0.8 / max(1, len(explainers))
    failed = {k: _failure(gates, k) for k in keys}
    for j, ex in enumerate(explainers):
        rows = [r for r in results if r.explainer == ex]
        means, errs = [], []
        for key in keys:
            v = _vals(rows, key)
            means.append(float(np.mean(v)) if v else np.nan)
            errs.append(float(np.std(v) / np.sqrt(len(v))) if len(v) > 1 else 0.0)
        x = np.arange(len(keys)) + (j - (len(explainers) - 1) / 2) * width
        n_missing = sum(r.explanation is None for r in rows)
        bars = ax.bar(x, means, width, yerr=errs, capsize=3, label=f"{ex} ({n_missing} missing)",
                      color=f"C{j}")
        for b, key in zip(bars, keys):
            if failed[key]:
                b.set_facecolor(FAILED_COLOR)
                b.set_edgecolor(f"C{j}")  # the explainer stays readable by its outline
                b.set_hatch("//" if j % 2 else "")
    for i, key in enumerate(keys):
        ax.hlines(CHANCE.get(key, 0.0), i - 0.45, i + 0.45, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(keys)), [SCORE_LABELS.get(k, k) + ("\n(failed gate)" if failed[k] else "") for k in keys],
                  fontsize=7)
    for t, key in zip(ax.get_xticklabels(), keys):
        if failed[key]:
            t.set_color("gray")
    ax.set_ylabel("mean score over units (dashed: chance)")
    bad = [f"{k}: {failed[k].removeprefix('failed gate: ')}" for k in keys if failed[k]]
    ax.set_title("Explainer comparison" + ("\ngrey = failed gate: " + "; ".join(bad) if bad else ""), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _draw_tokens(ax, strings: Sequence[str], values: Sequence[float], vmax: float, y: float,
                 cmap: str, max_chars: int) -> float:
    """Write tokens left to right at height ``y`` (axes coords), background shaded by value; wraps."""
    cm = plt.get_cmap(cmap)
    x, step, line_h = 0.0, 1.0 / max_chars, 0.055
    for s, v in zip(strings, values):
        shown = s.replace("\n", "\u21b5").replace("\t", "\u2192")
        if x + len(shown) * step > 1.0:
            x, y = 0.0, y - line_h
        frac = min(max(float(v) / vmax, 0.0), 1.0) if vmax > 0 else 0.0
        ax.text(x, y, shown, family="monospace", fontsize=8, va="top", transform=ax.transAxes,
                bbox={"boxstyle": "square,pad=0.05", "fc": cm(0.85 * frac) if frac > 0 else "white", "ec": "none"})
        x += len(shown) * step
    return y - line_h


def plot_unit_card(result: Result, max_records: int = 4, max_chars: int = 95) -> Figure:
    """Explanation, scores, and test records: real activations (orange) over simulated ones (blue)."""
    ur = result.unit_records()
    sims = result.extra.get("simulated")
    recs = ur.test[:max_records]
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.75 * len(recs)))
    ax.axis("off")
    sc = ", ".join(f"{k}={v:.2f}" for k, v in result.scores.items() if v is not None)
    expl = result.explanation if result.explanation is not None else f"[missing: {result.reason}]"
    ax.set_title(f"{result.unit} | {result.explainer}\n\"...find {expl}\"", fontsize=9, loc="left")
    ax.text(0, 1.0, sc or "no scores", fontsize=7, transform=ax.transAxes, va="top", color="dimgray")
    y = 0.92
    for i, r in enumerate(recs):
        ax.text(-0.01, y, f"{r.kind}", fontsize=7, ha="right", va="top", transform=ax.transAxes)
        y = _draw_tokens(ax, r.strings, r.acts, ur.max_act, y, "Oranges", max_chars)
        if sims is not None and i < len(sims):
            y = _draw_tokens(ax, r.strings, sims[i], 10.0, y, "Blues", max_chars)
        y -= 0.02
    ax.text(0, max(y, 0.0) - 0.02, "orange: real activation / max; blue: simulated activation (0-10)",
            fontsize=7, transform=ax.transAxes, va="top", color="dimgray")
    return fig


def records_html(ur: UnitRecords, simulated: Sequence[Sequence[float]] | None = None,
                 which: str = "train") -> str:
    """HTML of a unit's records, tokens shaded by activation (orange) and simulation (blue)."""

    def spans(strings: Sequence[str], vals: Sequence[float], vmax: float, rgb: str) -> str:
        out = []
        for s, v in zip(strings, vals):
            a = min(max(float(v) / vmax, 0.0), 1.0) if vmax > 0 else 0.0
            out.append(f'<span style="background:rgba({rgb},{a:.2f});white-space:pre" title="{float(v):.2f}">'
                       f"{html.escape(s)}</span>")
        return "".join(out)

    recs = ur.train if which == "train" else ur.test
    rows = []
    for i, r in enumerate(recs):
        row = f'<div style="font-family:monospace;margin:2px 0"><b>{r.kind}</b> {spans(r.strings, r.acts, ur.max_act, "255,140,0")}</div>'
        if simulated is not None and i < len(simulated):
            row += f'<div style="font-family:monospace;margin:0 0 4px 0"><i>sim</i> {spans(r.strings, simulated[i], 10.0, "30,100,255")}</div>'
        rows.append(row)
    return "".join(rows)


def plot_r_against_k(table: dict[str, Any]) -> Figure:
    """Mean pooled r of the k-token explanation against k (log axis), one colour per unit kind with its 95%
    bootstrap band, solid for the unigram explanation and dashed for the bigram one; one panel per simulator
    (binary, weighted keyword). ``table``: :func:`~.lengths.r_against_k`."""
    fig, axes = plt.subplots(1, len(table), figsize=(5.2 * len(table), 3.6), sharey=True, squeeze=False)
    colours = {"sae": "tab:blue", "neuron": "tab:orange", "random": "tab:grey", "token": "tab:green"}
    styles = {"unigram": "-", "bigram": "--"}
    for ax, (name, per_vocab) in zip(axes[0], table.items()):
        all_ks: set[int] = set()
        for vocab, per_kind in per_vocab.items():
            for kind, row in per_kind.items():
                all_ks |= set(row)
                ks = [k for k in sorted(row) if row[k]["mean"] is not None]
                if not ks:
                    continue
                m = [row[k]["mean"] for k in ks]
                ax.plot(ks, m, marker="o" if vocab == "unigram" else "s", ls=styles.get(vocab, ":"),
                        color=colours.get(kind), label=f"{kind}, {vocab} (n={row[ks[0]]['n']})")
                lo = [row[k]["ci95"][0] if row[k]["ci95"] else row[k]["mean"] for k in ks]
                hi = [row[k]["ci95"][1] if row[k]["ci95"] else row[k]["mean"] for k in ks]
                ax.fill_between(ks, lo, hi, color=colours.get(kind), alpha=0.12 if vocab == "unigram" else 0.06)
        ax.set_xscale("log")
        ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        ax.minorticks_off()
        ax.set_xlabel("description length k (tokens; a bigram counts 2)")
        ax.set_title(f"{name} keyword simulator")
        ax.axhline(0.0, color="k", lw=0.8, ls=":")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("pooled r on test records")
    fig.tight_layout()
    return fig
