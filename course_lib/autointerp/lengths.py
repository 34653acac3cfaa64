"""Description length: how much of a unit a k-token statistics explanation captures, as k grows.

An explanation here is a set of **keys**, each with a weight:

* a **unigram** key ``X`` matches every occurrence of the token string ``X`` (description length 1);
* a **bigram** key ``(Y, X)`` -- "the token X when preceded by the token Y" -- matches an occurrence of
  ``X`` right after ``Y`` in the same record (description length 2: it names two tokens). The first token
  of a record has no predecessor in it and matches no bigram.

A key's weight is the mean activation over its matches in the **train** records (those the explainer reads).
Two simulators read an explanation on a record: **binary** (``s_i = 1`` where a key matches, else 0: what the
keyword simulator does with a quoted token list) and **weighted** (``s_i`` = the weight of the matching key,
a bigram before a unigram, else 0: a bigram key predicts the mean activation of its pair).

The **k-token explanation** is fitted on the train records: greedy forward selection, starting from the
empty explanation, adds at each step the candidate key (any unigram or bigram with activation in the train
records) that raises the pooled ``r`` of the simulator on the train records most per token of description
length, among the keys that still fit in ``k`` tokens, and stops when none raises it. With unigram
candidates only it is the **unigram** explanation; with bigram candidates too, the **bigram** one. Both are
then scored on the **test** records (top, quantile and random, the correlation score's records) by the pooled
Pearson ``r`` of :func:`~.scoring.pooled_correlation` (0 for a constant simulation, as the scorers do). Per
unit kind and ``k``: the mean ``r`` over units with its 95% bootstrap CI. A kind whose ``r`` is already high
at small ``k`` is explained by few tokens; a kind that catches up only as ``k`` grows needs a long
description (a list of tokens is not an explanation); a kind that gains from bigrams at equal length depends
on the token before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from course_lib.autointerp.records import Record, UnitRecords
from course_lib.autointerp.results import bootstrap_ci
from course_lib.autointerp.scoring import pooled_correlation

KS: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 21)  # description lengths, in tokens
SIMULATORS: tuple[str, ...] = ("binary", "weighted")  # how an explanation is read
VOCABULARIES: tuple[str, ...] = ("unigram", "bigram")  # the candidate keys: unigrams, or unigrams and bigrams

Key = str | tuple[str, str]  # a unigram "X" or a bigram ("Y", "X"): X after Y


def cost(key: Key) -> int:
    """Description length of a key in tokens: 1 for a unigram, 2 for a bigram."""
    return 2 if isinstance(key, tuple) else 1


def describe(expl: dict[Key, float]) -> str:
    """An explanation as text: ``'" def"; " x" after " ("'``."""
    return "; ".join(f'"{k[1]}" after "{k[0]}"' if isinstance(k, tuple) else f'"{k}"' for k in expl)


def _keys(r: Record) -> tuple[list[str], list[tuple[str, str] | None]]:
    """Per token of ``r``: its unigram key and its bigram key (None for the first token)."""
    s = list(r.strings)
    return s, [None] + [(s[i - 1], s[i]) for i in range(1, len(s))]


def simulate(expl: dict[Key, float], records: Sequence[Record], weighted: bool) -> list[list[float]]:
    """The explanation read on ``records``: per token the weight (or 1) of its bigram key if listed, else of
    its unigram key if listed, else 0. One list per record."""
    out = []
    for r in records:
        uni, bi = _keys(r)
        row = []
        for u, b in zip(uni, bi):
            key: Key | None = b if b is not None and b in expl else u if u in expl else None
            row.append(0.0 if key is None else (expl[key] if weighted else 1.0))
        out.append(row)
    return out


def _r_rows(pred: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``pred [C, T]`` with ``a [T]``; 0 for a constant row."""
    p = pred - pred.mean(axis=1, keepdims=True)
    ac = a - a.mean()
    den = np.sqrt((p * p).sum(axis=1) * (ac * ac).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p @ ac) / den
    return np.where(den > 1e-12, r, 0.0)


def fit_explanation(ur: UnitRecords, k: int, weighted: bool, bigrams: bool) -> dict[Key, float]:
    """The k-token explanation of ``ur`` (module docstring): greedy forward selection on the train records.

    Returns ``{key: weight}`` in the order chosen (weight: mean activation of the key's train matches),
    total description length at most ``k``; empty when no train token activates."""
    a = np.concatenate([np.asarray(r.acts, dtype=np.float64) for r in ur.train]) if ur.train else np.zeros(0)
    if a.size == 0 or a.max() <= 0:
        return {}
    uni: list[str] = []
    bi: list[tuple[str, str] | None] = []
    for r in ur.train:
        u, b = _keys(r)
        uni += u
        bi += b
    positions: dict[Key, list[int]] = {}
    for i, (u, b) in enumerate(zip(uni, bi)):
        positions.setdefault(u, []).append(i)
        if bigrams and b is not None:
            positions.setdefault(b, []).append(i)
    cands = [key for key, pos in positions.items() if a[pos].max() > 0]
    cands.sort(key=lambda key: (-float(a[positions[key]].sum()), cost(key), str(key)))  # ties: heaviest first
    if not cands:
        return {}
    T = a.size
    ind = np.zeros((len(cands), T), dtype=bool)
    for j, key in enumerate(cands):
        ind[j, positions[key]] = True
    w = np.array([a[ind[j]].mean() for j in range(len(cands))])
    val = w if weighted else np.ones(len(cands))
    is_bi = np.array([isinstance(key, tuple) for key in cands])
    c = np.array([cost(key) for key in cands])
    pred, bi_cover = np.zeros(T), np.zeros(T, dtype=bool)
    chosen: dict[Key, float] = {}
    free = np.ones(len(cands), dtype=bool)
    r_cur, left = 0.0, k
    while True:
        ok = free & (c <= left)
        if not ok.any():
            break
        mask = ind & (is_bi[:, None] | ~bi_cover[None, :])  # a unigram does not override a chosen bigram
        new = np.where(mask, val[:, None], pred[None, :])
        gain = np.where(ok, (_r_rows(new, a) - r_cur) / c, -np.inf)
        j = int(np.argmax(gain))
        if gain[j] <= 1e-9:
            break
        pred, r_cur = new[j], float(_r_rows(new[j:j + 1], a)[0])
        if is_bi[j]:
            bi_cover |= ind[j]
        free[j] = False
        left -= int(c[j])
        chosen[cands[j]] = float(w[j])
    return chosen


def k_token_r(ur: UnitRecords, k: int, weighted: bool, bigrams: bool = False) -> float | None:
    """Pooled ``r`` on the test records of the k-token explanation (unigram, or with ``bigrams`` bigram too)
    read by the binary or weighted simulator (None when the unit has no activating train token or its test
    activations are constant; 0 for a constant simulation)."""
    expl = fit_explanation(ur, k, weighted, bigrams)
    if not expl:
        return None
    real = [list(r.acts) for r in ur.test]
    if not real or np.ptp(np.concatenate([np.asarray(x, dtype=np.float64) for x in real])) == 0:
        return None
    sim = simulate(expl, ur.test, weighted)
    if np.ptp(np.concatenate([np.asarray(x, dtype=np.float64) for x in sim])) == 0:
        return 0.0  # a constant simulation predicts nothing
    v = pooled_correlation(real, sim)
    return None if not np.isfinite(v) else float(v)


def r_against_k(urs: Sequence[UnitRecords], ks: Sequence[int] = KS, seed: int = 0,
                vocabularies: Sequence[str] = VOCABULARIES) -> dict[str, Any]:
    """``{simulator: {vocabulary: {kind: {k: {"mean", "ci95", "n"}}}}}`` for ``simulator`` in :data:`SIMULATORS`
    and ``vocabulary`` in ``vocabularies`` ("unigram", "bigram")."""
    out: dict[str, Any] = {}
    for name in SIMULATORS:
        out[name] = {}
        for vocab in vocabularies:
            per_kind: dict[str, Any] = {}
            for kind in dict.fromkeys(u.kind for u in urs):
                row = {}
                for k in ks:
                    v = [x for u in urs if u.kind == kind
                         for x in [k_token_r(u, k, name == "weighted", vocab == "bigram")] if x is not None]
                    ci = bootstrap_ci(v, seed=seed)
                    row[k] = {"mean": float(np.mean(v)) if v else None, "ci95": None if ci is None else list(ci),
                              "n": len(v)}
                per_kind[kind] = row
            out[name][vocab] = per_kind
    return out


def _cell(e: dict[str, Any]) -> str:
    if e["mean"] is None:
        return "n/a"
    ci = e["ci95"]
    return f"{e['mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def lengths_markdown(table: dict[str, Any], k_focus: int = 3) -> str:
    """What the run's r-against-k table says, as Markdown: per simulator and vocabulary, each kind's mean r
    [95% CI] at ``k_focus`` tokens and at the largest k, whether the SAE interval lies above the others at
    ``k_focus`` (unigram), and per kind the bigram minus unigram mean at the largest k."""
    lines = []
    for name, per_vocab in table.items():
        uni = per_vocab.get("unigram", {})
        ks = sorted(next(iter(uni.values())).keys()) if uni else []
        if not ks or k_focus not in ks:
            continue
        kmax = ks[-1]
        parts = []
        for vocab, per_kind in per_vocab.items():
            parts.append(f"{vocab}: at k = {k_focus} " + "; ".join(f"{x} {_cell(per_kind[x][k_focus])}" for x in per_kind)
                         + f"; at k = {kmax} " + "; ".join(f"{x} {_cell(per_kind[x][kmax])}" for x in per_kind))
        sae = uni.get("sae", {}).get(k_focus, {})
        others = [uni[x][k_focus] for x in uni if x != "sae"]
        sep = (sae.get("ci95") is not None and all(o.get("ci95") is not None and sae["ci95"][0] > o["ci95"][1]
                                                   for o in others))
        text = (f"* **{name} simulator**: " + ". ".join(parts) + ". "
                + (f"At k = {k_focus} (unigram) the SAE interval lies above every other kind's."
                   if sep else f"At k = {k_focus} (unigram) the SAE interval overlaps another kind's."))
        big = per_vocab.get("bigram")
        if big:
            diffs = [f"{x} {big[x][kmax]['mean'] - uni[x][kmax]['mean']:+.2f}" for x in uni
                     if x in big and uni[x][kmax]["mean"] is not None and big[x][kmax]["mean"] is not None]
            if diffs:
                text += f" Bigram minus unigram mean r at k = {kmax}: " + ", ".join(diffs) + "."
        lines.append(text)
    return "\n".join(lines)
