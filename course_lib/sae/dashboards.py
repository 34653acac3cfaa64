"""Feature dashboards for TopK SAE latents: contexts with tokens highlighted, quantile examples, the
activation histogram (:func:`course_lib.sae.plots.activation_histogram`), and the output tokens a
latent promotes or suppresses.

Codes: :func:`encode_store` runs the SAE over an activation store once and keeps the sparse codes
``vals [N, k]``, ``idx [N, k]`` (int32) and ``where [N, 2]`` (window, position) — ``N*k*8`` bytes, so
one latent's examples are a scan, not a re-encoding. Logit effects: the decoder row ``w_i`` through
the final RMSNorm's gain and the unembedding, ``(w_i * g_ln) @ W_U [vocab]`` (the direct path only).
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from course_lib.sae.model import SparseAutoencoder


@dataclasses.dataclass
class Codes:
    """Sparse TopK codes of a store: row ``r`` is token ``tokens[where[r, 0], where[r, 1]]``."""

    vals: torch.Tensor  # [N, k] float32 activations (>= 0)
    idx: torch.Tensor  # [N, k] int32 latent ids
    where: torch.Tensor  # [N, 2] int32 (window, position)
    tokens: torch.Tensor  # [n_windows, seq_len] token ids of the store
    n_latents: int  # dictionary size

    @property
    def token_of_row(self) -> torch.Tensor:
        return self.tokens[self.where[:, 0].long(), self.where[:, 1].long()]

    def latent(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows [m], acts [m])`` of the tokens where latent ``i`` fires (act > 0)."""
        hit = (self.idx == i) & (self.vals > 0)
        rows = hit.any(1).nonzero().squeeze(1)
        acts = (self.vals[rows] * hit[rows]).sum(1)
        return rows, acts

    def density(self) -> np.ndarray:
        """Share of tokens on which each latent fires ``[n_latents]``."""
        counts = torch.bincount(self.idx[self.vals > 0].long(), minlength=self.n_latents)
        return (counts.double() / self.vals.shape[0]).numpy()


@torch.no_grad()
def encode_store(autoencoder: SparseAutoencoder, store: Any, batch_size: int = 4096, progress: bool = True) -> Codes:
    """Encode every activation of ``store`` (an ActivationStore) with a TopK ``autoencoder``."""
    if autoencoder.cfg.kind != "topk":
        raise ValueError("dashboards need a TopK SAE (sparse codes)")
    dev = autoencoder.W_dec.device
    vals, idx, where = [], [], []
    for acts, wh in tqdm(store.iter_shards(), total=len(store.shards), desc="encode store", disable=not progress):
        for s in range(0, acts.shape[0], batch_size):
            v, i = autoencoder.encode_sparse(acts[s : s + batch_size].to(dev, torch.float32))
            vals.append(v.cpu())
            idx.append(i.to(torch.int32).cpu())
        where.append(wh)
    return Codes(torch.cat(vals), torch.cat(idx), torch.cat(where), store.tokens, autoencoder.cfg.n_latents)


# --------------------------------------------------------------------------- examples


def top_examples(codes: Codes, latent: int, n: int = 10) -> list[tuple[int, float]]:
    """The ``n`` strongest ``(row, activation)`` pairs of ``latent``."""
    rows, acts = codes.latent(latent)
    order = acts.argsort(descending=True)[:n]
    return [(int(rows[o]), float(acts[o])) for o in order]


def quantile_examples(
    codes: Codes, latent: int, n_quantiles: int = 4, per: int = 3, generator: torch.Generator | None = None
) -> list[tuple[str, list[tuple[int, float]]]]:
    """Random examples from ``n_quantiles`` equal bands of the latent's activation range (top band first)."""
    rows, acts = codes.latent(latent)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    out: list[tuple[str, list[tuple[int, float]]]] = []
    if acts.numel() == 0:
        return out
    top = float(acts.max())
    for q in range(n_quantiles, 0, -1):
        lo, hi = top * (q - 1) / n_quantiles, top * q / n_quantiles
        sel = ((acts > lo) & (acts <= hi)).nonzero().squeeze(1)
        pick = sel[torch.randperm(sel.numel(), generator=gen)[:per]]
        out.append((f"{lo:.2f} - {hi:.2f} ({sel.numel()} tokens)", [(int(rows[p]), float(acts[p])) for p in pick]))
    return out


def context_html(codes: Codes, tokenizer: Any, latent: int, row: int, window: int = 12,
                 latent_acts: dict[tuple[int, int], float] | None = None, max_act: float | None = None) -> str:
    """One context around ``row``: tokens coloured by the latent's activation; the centre token boxed."""
    if latent_acts is None:
        latent_acts = latent_activation_map(codes, latent)
    w, p = (int(v) for v in codes.where[row])
    seq = codes.tokens[w]
    lo, hi = max(1, p - window), min(seq.shape[0], p + 4)
    vmax = max_act or max(latent_acts.values(), default=1.0) or 1.0
    parts = []
    for j in range(lo, hi):
        text = tokenizer.decode([int(seq[j])])
        a = latent_acts.get((w, j), 0.0)
        alpha = min(1.0, a / vmax)
        style = f"background: rgba(255, 120, 0, {alpha:.2f});"
        if j == p:
            style += " border: 1px solid #333;"
        label = html.escape(text).replace("\n", "&#8629;").replace(" ", "&nbsp;")
        parts.append(f'<span title="{a:.2f}" style="{style}">{label}</span>')
    return "<code style='white-space: pre'>" + "".join(parts) + "</code>"


def latent_activation_map(codes: Codes, latent: int) -> dict[tuple[int, int], float]:
    """``{(window, position): activation}`` of one latent (where it fires)."""
    rows, acts = codes.latent(latent)
    wh = codes.where[rows].tolist()
    return {(int(a), int(b)): float(v) for (a, b), v in zip(wh, acts.tolist())}


# --------------------------------------------------------------------------- logit effects


def unembed_direction(model: Any) -> torch.Tensor:
    """``diag(g_ln) W_U`` ``[d_model, vocab]`` (float32, CPU): the direct path to the logits."""
    w_u = model.W_U.detach().float().cpu()
    ln = getattr(model, "ln_final", None)
    gain = getattr(ln, "weight", None) if ln is not None else None
    if gain is None and ln is not None and hasattr(ln, "_original_component"):
        gain = getattr(ln._original_component, "weight", None)
    if gain is not None:
        w_u = gain.detach().float().cpu()[:, None] * w_u
    return w_u


def logit_effects(autoencoder: SparseAutoencoder, w_u: torch.Tensor, latent: int, tokenizer: Any, n: int = 8
                  ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """``(promoted, suppressed)`` tokens: the largest and smallest entries of ``w_dec[latent] @ w_u``."""
    eff = autoencoder.W_dec.detach().float().cpu()[latent] @ w_u
    top = eff.topk(n)
    bot = (-eff).topk(n)
    promoted = [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)]
    suppressed = [(tokenizer.decode([int(i)]), float(-v)) for v, i in zip(bot.values, bot.indices)]
    return promoted, suppressed


def token_purity(codes: Codes, latent: int, n: int = 20) -> tuple[int | None, float, int]:
    """``(token id, share, m)``: the most common token among the latent's ``m <= n`` strongest activations and
    the share of them it takes (1.0: a single-token latent; low: read its contexts). ``(None, nan, 0)`` if dead."""
    top = top_examples(codes, latent, n)
    if not top:
        return None, float("nan"), 0
    toks = codes.token_of_row[torch.tensor([r for r, _ in top])]
    ids, counts = toks.unique(return_counts=True)
    best = int(counts.argmax())
    return int(ids[best]), float(counts[best]) / len(top), len(top)


_PROSE_TEXT = re.compile(r"^[A-Za-z ,.;:!?'()\-\n]*$")  # letters and prose punctuation only: no code characters


def prose_share(codes: Codes, tokenizer: Any, latent: int, n: int = 20, before: int = 8) -> float:
    """Share of the latent's ``n`` strongest contexts that read as English prose: the activating token and the
    ``before`` tokens before it (within its window, after BOS) hold letters and prose punctuation only, with at
    least 8 letters before the token (a context at the start of a window does not count). NaN if dead."""
    top = top_examples(codes, latent, n)
    if not top:
        return float("nan")
    hits = 0
    for row, _ in top:
        w, p = (int(x) for x in codes.where[row])
        ids = codes.tokens[w, max(1, p - before): p].tolist()  # after BOS only
        prefix = tokenizer.decode(ids) if ids else ""
        text = prefix + tokenizer.decode([int(codes.tokens[w, p])])
        hits += bool(_PROSE_TEXT.match(text)) and sum(c.isalpha() for c in prefix) >= 8
    return hits / len(top)


def content_words(codes: Codes, tokenizer: Any, latent: int, n: int = 20) -> list[str]:
    """The distinct content words among the tokens of the latent's ``n`` strongest contexts: whole words (a
    leading space, then letters only) of at least 4 letters, so function words (" of", " the") and word
    pieces do not count."""
    top = top_examples(codes, latent, n)
    if not top:
        return []
    ids = codes.token_of_row[torch.tensor([r for r, _ in top])].unique().tolist()
    words = [tokenizer.decode([i]) for i in ids]
    return sorted({w.strip() for w in words if w.startswith(" ") and w.strip().isalpha() and len(w.strip()) >= 4})


def theme_latent(codes: Codes, tokenizer: Any, candidates: Sequence[int], n: int = 20,
                 min_prose: float = 0.8) -> int | None:
    """Among ``candidates``, a latent about meaning rather than one token: of those whose ``n`` strongest contexts
    are at least ``min_prose`` English prose (:func:`prose_share`), the one whose strongest contexts fire on the
    most different content words (:func:`content_words`; ties: the lower token purity). None if no candidate
    has prose contexts and at least 3 content words."""
    best, best_key = None, (2, 0.0)
    for latent in candidates:
        if prose_share(codes, tokenizer, latent, n) < min_prose:
            continue
        words = content_words(codes, tokenizer, latent, n)
        _, purity, _ = token_purity(codes, latent, n)
        key = (len(words), -purity)
        if key > best_key:
            best, best_key = int(latent), key
    return best


def next_token_hits(codes: Codes, autoencoder: SparseAutoencoder, w_u: torch.Tensor, latent: int, n: int = 20,
                    top: int = 50) -> tuple[float, int]:
    """How often the token that follows one of the latent's ``n`` strongest contexts is among the ``top``
    tokens its decoder direction promotes on the direct path (:func:`logit_effects`): ``(share, contexts)``.
    Chance is ``top / vocabulary``; a share near chance says the promoted list does not describe what the
    model writes next after the latent fires."""
    eff = autoencoder.W_dec.detach().float().cpu()[latent] @ w_u
    promoted = set(eff.topk(top).indices.tolist())
    seq = codes.tokens.shape[1]
    nxt = [int(codes.tokens[int(codes.where[r, 0]), int(codes.where[r, 1]) + 1])
           for r, _ in top_examples(codes, latent, n) if int(codes.where[r, 1]) + 1 < seq]
    return (sum(t in promoted for t in nxt) / len(nxt) if nxt else float("nan")), len(nxt)


# --------------------------------------------------------------------------- pages


def dashboard_html(codes: Codes, autoencoder: SparseAutoencoder, tokenizer: Any, w_u: torch.Tensor, latent: int,
                   n_top: int = 8, n_quantiles: int = 4, per: int = 2) -> str:
    """A latent's dashboard as HTML: density, top contexts, quantile examples, logit effects."""
    amap = latent_activation_map(codes, latent)
    vmax = max(amap.values(), default=1.0)
    dens = len(amap) / max(codes.vals.shape[0], 1)
    out = [f"<h4>Latent {latent}</h4><p>fires on {len(amap)} tokens (density {dens:.2e}); "
           f"max activation {vmax:.2f}</p>"]
    promoted, suppressed = logit_effects(autoencoder, w_u, latent, tokenizer)
    fmt = ", ".join
    out.append("<p><b>promotes</b>: " + fmt(f"<code>{html.escape(repr(t))}</code> {v:+.2f}" for t, v in promoted)
               + "<br><b>suppresses</b>: "
               + fmt(f"<code>{html.escape(repr(t))}</code> {v:+.2f}" for t, v in suppressed) + "</p>")
    out.append("<p><b>top contexts</b></p>")
    for row, act in top_examples(codes, latent, n_top):
        out.append(f"<div>{act:6.2f} &nbsp; {context_html(codes, tokenizer, latent, row, latent_acts=amap, max_act=vmax)}</div>")
    for band, examples in quantile_examples(codes, latent, n_quantiles, per):
        out.append(f"<p><b>band {band}</b></p>")
        for row, act in examples:
            out.append(f"<div>{act:6.2f} &nbsp; {context_html(codes, tokenizer, latent, row, latent_acts=amap, max_act=vmax)}</div>")
    return "\n".join(out)


def latents_for_token(codes: Codes, token_id: int, n: int = 10) -> list[tuple[int, float]]:
    """Latents with the largest mean activation on occurrences of ``token_id``: ``[(latent, mean act)]``."""
    rows = (codes.token_of_row == token_id).nonzero().squeeze(1)
    if rows.numel() == 0:
        return []
    sums = torch.zeros(codes.n_latents, dtype=torch.float64)
    sums.index_add_(0, codes.idx[rows].reshape(-1).long(), codes.vals[rows].reshape(-1).double())
    mean = sums / rows.numel()
    top = mean.topk(min(n, codes.n_latents))
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices) if v > 0]
