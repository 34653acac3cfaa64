"""Planted units with a known answer: linear probes in the residual stream, explained by their concept.

A scorer is checked on units whose right explanation we know. A unit that fires ``1.0`` exactly on a token
set makes that check a tautology for a keyword scorer (it predicts 1 on the quoted tokens and scores
``r = 1``). The planted units here are **directions in the residual stream** at the SAE's hook
(``blocks.{L}.hook_resid_post``), so their activations are graded and depend on the context, as a real
unit's do:

* a **concept** is a 0/1 label of every token, computed from the text alone (:func:`concept_labels`):
  ``"def"`` the token ``" def"``; ``"digits"`` a digit token ``"0".."9"``; ``"string"`` a token inside a
  string literal, i.e. a character of it lies between an opening quote and its closing quote on the same
  line (:func:`inside_string`; an apostrophe inside a word, as in ``don't``, opens nothing);
* a **probe** for a concept is a logistic regression ``p(y = 1 | x) = sigmoid(x . w + b)`` on the residual
  vector ``x [d_model]``, fitted with torch (L-BFGS, an L2 penalty on the standardised weights) on the
  cached activation store the SAE was trained on (:func:`fit_probes`);
* a **planted unit**'s activation is the probe's **logit** ``a = x . w + b`` (the units read their positive
  side, ``max(a, 0)``: the tokens the probe calls positive, graded by its confidence). The polysemantic
  unit is the larger of two probes' logits, each divided by its largest logit on the selection windows,
  ``a = max(l_def / m_def, l_digits / m_digits)``: it fires on either concept.

Its explanation (the planted "answer") is the concept in words. The notebook builds the planted units'
records from the store itself (:func:`planted_records`): its windows are dealt at random into three parts
(:func:`split_windows`), the probes fitted on one, their L2 strength chosen and their accuracy reported on
another, and the planted units' records built from the third, so selection, fitting and scoring read
different text. (:func:`planted_source` harvests the same units on new text with a model.)

**What a perfect scorer gives.** A simulator that reads the true explanation perfectly can predict the
concept (1 on its tokens, 0 elsewhere) and nothing more: the explanation does not say how strongly the
probe fires. Its pooled ``r`` on the test records is the unit's **ceiling** (:func:`ceilings`), below 1
because the probe is graded and imperfect. For a token-set concept the keyword simulator (10 on the quoted
tokens) *is* that perfect simulator, so it reaches the ceiling; it cannot read a concept that is not a
token list, such as "inside a string literal", and gives 0 there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from course_lib.autointerp.explainers import Explanation
from course_lib.autointerp.records import Record, RecordConfig, UnitRecords, build_records
from course_lib.autointerp.results import SCORE_KEYS, Result
from course_lib.autointerp.scoring import auroc, pooled_correlation
from course_lib.autointerp.units import UnitSource

CONCEPTS: tuple[str, ...] = ("def", "digits", "string")  # the concepts the probes are fitted for
DIGITS = frozenset("0123456789")
QUOTES = "\"'"


# --------------------------------------------------------------------------- concepts: labels from the text


def inside_string(strings: Sequence[str]) -> list[bool]:
    """Per token: does a character of it lie inside a string literal opened and not yet closed on its line?

    The tokens are read as one text (their concatenation). A ``"`` or ``'`` opens a literal when none is open
    (an apostrophe between two letters or digits, as in ``don't``, does not), the same quote closes it, a
    backslash escapes the next character, a newline closes any literal. Quote characters themselves are not
    inside. ``strings [pos] -> [pos]`` booleans.
    """
    out: list[bool] = []
    open_q: str | None = None
    escaped = False
    prev = ""
    for s in strings:
        inside = False
        for i, c in enumerate(s):
            nxt = s[i + 1] if i + 1 < len(s) else ""
            if c == "\n":
                open_q, escaped = None, False
            elif open_q is not None:
                if escaped:
                    escaped, inside = False, True
                elif c == "\\":
                    escaped, inside = True, True
                elif c == open_q:
                    open_q = None
                else:
                    inside = True
            elif c in QUOTES and not (c == "'" and prev.isalnum() and (nxt.isalnum() if nxt else True)):
                open_q = c
            prev = c
        out.append(inside)
    return out


def concept_labels(strings: Sequence[str]) -> dict[str, list[bool]]:
    """Every concept's 0/1 label per token of one window, from its token strings ``strings [pos]``:
    ``"def"`` (the token ``" def"``), ``"digits"`` (a token ``"0".."9"``, spaces ignored), ``"string"``
    (:func:`inside_string`)."""
    return {"def": [s == " def" for s in strings],
            "digits": [s.strip() in DIGITS for s in strings],
            "string": inside_string(strings)}


class TokenText:
    """Decodes token ids one at a time, each id once (``tokenizer.decode([id])``, cached)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if i not in self._cache:
                self._cache[i] = self.tokenizer.decode([i])
            out.append(self._cache[i])
        return out


def window_labels(windows: torch.Tensor, text: TokenText) -> dict[str, torch.Tensor]:
    """``windows [n, pos]`` -> ``{concept: labels [n, pos] bool}`` (each window read on its own)."""
    per = [concept_labels(text(w.tolist())) for w in windows]
    return {c: torch.tensor([p[c] for p in per], dtype=torch.bool).reshape(windows.shape) for c in CONCEPTS}


# --------------------------------------------------------------------------- probes


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    fit_share: float = 0.6  # share of the store's windows the probes are fitted on
    select_share: float = 0.15  # share on which the L2 strength is chosen and the probe's metrics reported
    #   (the rest, 1 - fit_share - select_share: the planted units' records)
    l2s: tuple[float, ...] = (1e-4, 1e-3, 1e-2)  # L2 strengths tried (penalty on standardised weights)
    max_rows: int = 40_000  # at most this many fitting rows (a seeded subsample)
    max_iter: int = 60  # L-BFGS iterations per fit
    seed: int = 0  # window split and subsample


SPLITS: tuple[str, ...] = ("fit", "select", "records")  # the three parts of the store's windows


def split_windows(n_windows: int, cfg: ProbeConfig, strata: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The store's windows dealt at random (seeded) into :data:`SPLITS` by ``cfg``'s shares: ``{part: window
    indices [m]}``, sorted. With ``strata [n_windows]`` (bool) the True windows are dealt by the shares first and
    the others after, so that each part gets its share of both (the notebook stratifies on the windows that hold
    the rarest concept, so that a small store still gives every part some of it)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    groups = [torch.arange(n_windows)] if strata is None else [torch.nonzero(strata).flatten(),
                                                                torch.nonzero(~strata).flatten()]
    parts: list[list[torch.Tensor]] = [[], [], []]
    for g in groups:
        g = g[torch.randperm(g.numel(), generator=gen)]
        n_fit = int(round(cfg.fit_share * g.numel()))
        n_sel = int(round(cfg.select_share * g.numel()))
        for j, piece in enumerate((g[:n_fit], g[n_fit:n_fit + n_sel], g[n_fit + n_sel:])):
            parts[j].append(piece)
    return {name: torch.cat(p).sort().values for name, p in zip(SPLITS, parts)}


def rarest_concept_windows(labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[n_windows]`` bool: the windows holding the concept that the fewest windows hold (``labels``: the
    concepts' ``[n_windows, pos]`` labels, :func:`window_labels`)."""
    held = {c: lab.any(dim=1) for c, lab in labels.items()}
    return min(held.values(), key=lambda h: int(h.sum()))


@dataclasses.dataclass(frozen=True)
class Probe:
    """A fitted logistic-regression probe: ``logit(x) = x . w + b`` on the raw residual ``x [d_model]``."""

    concept: str  # which concept it detects
    w: torch.Tensor  # [d_model] weights on the raw residual
    b: float  # bias
    l2: float  # the L2 strength chosen on the held-out windows
    n_fit: int  # tokens it was fitted on
    n_pos_fit: int  # positives among them
    heldout: dict[str, float]  # on the held-out windows: n, n_pos, auroc, precision and recall of logit > 0,
    #   loss (mean cross-entropy), max_logit


def _fit_logistic(z: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised features ``z [n, d]``, labels ``y [n]`` -> ``(w [d], b [])`` minimising
    ``mean BCE(z w + b, y) + l2 |w|^2`` with L-BFGS."""
    w = torch.zeros(z.shape[1], requires_grad=True)
    prior = y.float().mean().clamp(1e-4, 1 - 1e-4)
    b = torch.log(prior / (1 - prior)).reshape(()).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")
    yf = y.float()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, yf) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def fit_probe(concept: str, x_fit: torch.Tensor, y_fit: torch.Tensor, x_held: torch.Tensor, y_held: torch.Tensor,
              l2s: Sequence[float], max_iter: int) -> Probe:
    """Fit one probe per L2 strength on ``x_fit [n, d]`` / ``y_fit [n]``; keep the one with the lowest held-out
    cross-entropy on ``x_held`` / ``y_held`` and report its held-out metrics there."""
    mu, sd = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    z_fit, z_held = (x_fit - mu) / sd, (x_held - mu) / sd
    best: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
    for l2 in l2s:
        wz, bz = _fit_logistic(z_fit, y_fit, l2, max_iter)
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(z_held @ wz + bz, y_held.float()))
        if best is None or loss < best[0]:
            best = (loss, l2, wz, bz)
    assert best is not None
    loss, l2, wz, bz = best
    w = wz / sd
    b = float(bz - (mu / sd) @ wz)
    logit = x_held @ w + b
    pred = logit > 0
    yb = y_held.bool()
    tp = int((pred & yb).sum())
    held = {"n": int(y_held.numel()), "n_pos": int(yb.sum()), "auroc": auroc(yb.int().tolist(), logit.double().tolist()),
            "precision": tp / int(pred.sum()) if int(pred.sum()) else float("nan"),
            "recall": tp / int(yb.sum()) if int(yb.sum()) else float("nan"), "loss": loss,
            "max_logit": float(logit.max()) if logit.numel() else float("nan")}
    return Probe(concept, w, b, l2, int(y_fit.numel()), int(y_fit.sum()), held)


def store_rows(store: Any, text: TokenText) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Every row of an activation store (:class:`course_lib.sae.store.ActivationStore`): ``(acts [N, d] float32,
    window [N], {concept: labels [N] bool})``, the labels read from the store's token windows."""
    acts, where = [], []
    for a, w in store.iter_shards():
        acts.append(a.float())
        where.append(w.long())
    x, wh = torch.cat(acts), torch.cat(where)
    labels = window_labels(store.tokens, text)
    return x, wh[:, 0], {c: lab[wh[:, 0], wh[:, 1]] for c, lab in labels.items()}


def fit_probes(store: Any, tokenizer: Any, cfg: ProbeConfig = ProbeConfig()) -> dict[str, Probe]:
    """One probe per concept of :data:`CONCEPTS`, fitted on the store's activations (see the module docstring):
    on the ``"fit"`` windows of :func:`split_windows`, stratified by :func:`rarest_concept_windows` (at most ``cfg.max_rows`` rows), L2 chosen and metrics
    reported on the ``"select"`` windows; the ``"records"`` windows are left for :func:`planted_records`."""
    text = TokenText(tokenizer)
    x, window, labels = store_rows(store, text)
    parts = split_windows(int(store.tokens.shape[0]), cfg, rarest_concept_windows(window_labels(store.tokens, text)))
    member = {k: torch.isin(window, v) for k, v in parts.items()}
    fit_rows = torch.nonzero(member["fit"]).flatten()
    held_rows = torch.nonzero(member["select"]).flatten()
    if fit_rows.numel() > cfg.max_rows:
        gen = torch.Generator().manual_seed(cfg.seed)
        fit_rows = fit_rows[torch.randperm(fit_rows.numel(), generator=gen)[: cfg.max_rows]]
    return {c: fit_probe(c, x[fit_rows], labels[c][fit_rows], x[held_rows], labels[c][held_rows], cfg.l2s,
                         cfg.max_iter) for c in CONCEPTS}


# --------------------------------------------------------------------------- planted units


@dataclasses.dataclass(frozen=True)
class PlantedUnit:
    """A planted unit: the probes it reads, its concepts and its true explanation."""

    name: str  # unit name, e.g. "planted/ def"
    concepts: tuple[str, ...]  # the concepts it fires on (two for the polysemantic unit: max of their logits)
    explanation: str  # its true explanation (completes "the main thing this neuron does is find ...")
    token_list: bool  # the explanation is a list of quoted tokens (what a keyword simulator can read)


DIGITS_TEXT = ", ".join(f'"{d}"' for d in range(10))
PLANTED: tuple[PlantedUnit, ...] = (
    PlantedUnit("planted/ def", ("def",), 'the token " def".', True),
    PlantedUnit("planted/digits", ("digits",), f"digits, the tokens {DIGITS_TEXT}.", True),
    PlantedUnit("planted/string", ("string",), "text inside a string literal, between quotes on one line of code.",
                False),
    PlantedUnit("planted/def|digits", ("def", "digits"), f'the token " def", and digits, the tokens {DIGITS_TEXT}.',
                True),
)
CROSS: dict[str, str] = {  # each planted unit's stand-in explanation: a planted unit with a disjoint concept
    "planted/ def": "planted/digits", "planted/digits": "planted/ def", "planted/string": "planted/ def",
    "planted/def|digits": "planted/string"}


def planted_units() -> list[PlantedUnit]:
    """The four planted units: ``" def"``, digits, inside a string literal, and ``" def"`` or digits."""
    return list(PLANTED)


def cross_explanations(planted: Sequence[PlantedUnit]) -> list[str]:
    """Per planted unit, the true explanation of the planted unit :data:`CROSS` pairs it with (disjoint
    concepts, so a scorer that reads the explanation must score it low)."""
    by_name = {p.name: p for p in planted}
    return [by_name[CROSS[p.name]].explanation for p in planted]


def planted_transform(probes: Mapping[str, Probe],
                      planted: Sequence[PlantedUnit]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x [..., d_model] -> acts [..., n_planted]``: each unit the probe logit ``x . w + b``, or for a unit of
    several concepts the largest of their logits, each divided by its held-out maximum."""
    concepts = list(probes)
    W = torch.stack([probes[c].w for c in concepts], dim=1)  # [d, n_concepts]
    b = torch.tensor([probes[c].b for c in concepts])
    scale = torch.tensor([max(probes[c].heldout["max_logit"], 1e-6) for c in concepts])
    cols = [[concepts.index(c) for c in p.concepts] for p in planted]

    def transform(h: torch.Tensor) -> torch.Tensor:
        logits = h.float() @ W.to(h.device) + b.to(h.device)  # [..., n_concepts]
        out = []
        for idx in cols:
            if len(idx) == 1:
                out.append(logits[..., idx[0]])
            else:
                out.append((logits[..., idx] / scale[idx].to(h.device)).max(dim=-1).values)
        return torch.stack(out, dim=-1)

    return transform


def planted_source(model: Any, hook_name: str, probes: Mapping[str, Probe],
                   planted: Sequence[PlantedUnit]) -> UnitSource:
    """The planted units as a unit source on ``hook_name`` (the residual stream the probes were fitted on), to
    harvest them on new text with a model: ``acts [b, p, n_planted]`` (:func:`planted_transform`)."""
    return UnitSource("planted", hook_name, list(range(len(planted))), planted_transform(probes, planted), model)


def planted_records(store: Any, tokenizer: Any, probes: Mapping[str, Probe], planted: Sequence[PlantedUnit],
                    ctx: int, rec_cfg: RecordConfig, generator: torch.Generator,
                    cfg: ProbeConfig = ProbeConfig()) -> list[UnitRecords]:
    """The planted units' records, from the store's ``"records"`` windows (:func:`split_windows` as in
    :func:`fit_probes`: windows the probes were neither fitted nor selected on), no model needed.

    Each such window (BOS, then ``seq_len - 1`` tokens) is cut into pieces of ``ctx`` tokens, each given the
    window's BOS in front: ``[m, ctx + 1]`` windows. A token's activations are :func:`planted_transform` of its
    stored residual, computed with the whole window as context; positions the store left out (BOS, massive
    norms) get 0. Then :func:`~.records.build_records` (kind ``"planted"``)."""
    strata = rarest_concept_windows(window_labels(store.tokens, TokenText(tokenizer)))
    keep = split_windows(int(store.tokens.shape[0]), cfg, strata)["records"]
    transform = planted_transform(probes, planted)
    toks = store.tokens
    acts = torch.zeros(*toks.shape, len(planted))
    for a, where in store.iter_shards():
        where = where.long()
        rows = torch.isin(where[:, 0], keep)
        if rows.any():
            w = where[rows]
            acts[w[:, 0], w[:, 1]] = transform(a[rows].float())
    n_piece = (toks.shape[1] - 1) // ctx
    wins, piece_acts = [], []
    for i in keep.tolist():
        for k in range(n_piece):
            lo, hi = 1 + k * ctx, 1 + (k + 1) * ctx
            wins.append(torch.cat([toks[i, :1], toks[i, lo:hi]]))
            piece_acts.append(torch.cat([torch.zeros(1, len(planted)), acts[i, lo:hi]]))
    windows = torch.stack(wins) if wins else torch.zeros(0, ctx + 1, dtype=torch.long)
    a_all = torch.stack(piece_acts) if piece_acts else torch.zeros(0, ctx + 1, len(planted))
    return build_records([p.name for p in planted], "planted", a_all, windows, tokenizer, rec_cfg, generator)


# --------------------------------------------------------------------------- what a perfect scorer gives


def record_concept(r: Record, concepts: Sequence[str]) -> list[float]:
    """1.0 on the tokens of record ``r`` where any of ``concepts`` holds, else 0.0 (the record read on its own)."""
    lab = concept_labels(r.strings)
    return [float(any(lab[c][i] for c in concepts)) for i in range(len(r.strings))]


def ceilings(ur: UnitRecords, unit: PlantedUnit) -> dict[str, float | None]:
    """What a scorer that reads ``unit``'s true explanation perfectly gives on ``ur``'s test records.

    * ``correlation``: pooled r of the concept simulator (1 on a concept token, 0 elsewhere) on the test
      records (top, quantile, random), as the correlation scorers pool them;
    * ``auroc``: AUROC of "the record holds a concept token" between the activating (top, quantile) and the
      non-activating records, as detection asks it.

    None where undefined (a constant side, one class)."""
    sim = [record_concept(r, unit.concepts) for r in ur.test]
    real = [list(r.acts) for r in ur.test]
    flat = np.concatenate([np.asarray(s) for s in sim]) if sim else np.zeros(0)
    corr = None
    if flat.size and np.ptp(flat) > 0:
        v = pooled_correlation(real, sim)
        corr = float(v) if np.isfinite(v) else None
    has = [float(max(record_concept(r, unit.concepts), default=0.0)) for r in ur.contrast]
    a = auroc(ur.contrast_labels, has) if ur.contrast else float("nan")
    return {"correlation": corr, "auroc": None if not np.isfinite(a) else float(a)}


# --------------------------------------------------------------------------- reports


def _f(v: Any) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"


def probes_markdown(probes: Mapping[str, Probe]) -> str:
    """A Markdown table of the probes: fitting tokens and positives, the chosen L2, and on the held-out windows
    the positives, AUROC, and precision and recall of ``logit > 0`` (the unit's positive side)."""
    lines = ["| probe | fitted on (positives) | L2 | held-out tokens (positives) | held-out AUROC | precision | recall |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c, p in probes.items():
        h = p.heldout
        lines.append(f"| {c} | {p.n_fit} ({p.n_pos_fit}) | {p.l2:g} | {h['n']} ({h['n_pos']}) | {_f(h['auroc'])} | "
                     f"{_f(h['precision'])} | {_f(h['recall'])} |")
    return "\n".join(lines)


def planted_markdown(true: Sequence[Result], cross: Sequence[Result], null: Sequence[Result],
                     ceiling: Sequence[Mapping[str, float | None]], keys: Sequence[str]) -> str:
    """A Markdown table of the planted units' scores: per scorer and planted unit, the score with its true
    explanation, the score a perfect reader of it would give (:func:`ceilings`: the correlation ceiling for the
    correlation scorers, the record-level AUROC ceiling for detection, n/a for the others), with another
    planted unit's explanation (cross) and with a content-free one (null)."""
    lines = ["| scorer | planted unit | true explanation | perfect reader | another planted unit's | content-free |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key in keys:
        kind = "correlation" if key.startswith("correlation") else "auroc" if key == "detection_auroc" else None
        for t, c, n, ce in zip(true, cross, null, ceiling):
            lines.append(f"| {key} | `{t.unit}` | {_f(t.scores.get(key))} | {_f(ce.get(kind)) if kind else 'n/a'} | "
                         f"{_f(c.scores.get(key))} | {_f(n.scores.get(key))} |")
    return "\n".join(lines)


def planted_reading_markdown(planted: Sequence[PlantedUnit], true: Sequence[Result],
                             ceiling: Sequence[Mapping[str, float | None]]) -> str:
    """What this run's planted units say, as Markdown: per unit, the correlation a perfect reader of the true
    explanation gets (:func:`ceilings`) beside the keyword simulator's, and which units the keyword
    simulator cannot read (their explanation lists no tokens)."""
    parts = [f"`{p.name}` {_f(c.get('correlation'))} (keyword {_f(r.scores.get('correlation_keyword'))})"
             for p, r, c in zip(planted, true, ceiling)]
    unread = [f"`{p.name}`" for p in planted if not p.token_list]
    text = ("**This run.** Pooled r of a perfect reader of the true explanation (1 on the concept's tokens, 0 "
            "elsewhere), with the keyword simulator's r in brackets: " + "; ".join(parts) + ". ")
    if unread:
        text += (f"The keyword simulator reads quoted tokens only: on {', '.join(unread)} it predicts nothing, so its "
                 "known-answer gate reads the other units (its score there is shown, not gated).")
    return text


def planted_metrics(probes: Mapping[str, Probe], planted: Sequence[PlantedUnit],
                    ceiling: Sequence[Mapping[str, float | None]]) -> dict[str, Any]:
    """The ``planted`` entry of ``metrics.json``: per probe its L2, fitting counts and selection-window metrics;
    per planted unit its explanation, whether it is a token list, and its :func:`ceilings`."""
    return {"probes": {c: {"l2": p.l2, "n_fit": p.n_fit, "n_pos_fit": p.n_pos_fit, **p.heldout}
                       for c, p in probes.items()},
            "units": {p.name: {"explanation": p.explanation, "token_list": p.token_list, "ceiling": dict(c)}
                      for p, c in zip(planted, ceiling)}}


def score_planted(score: Callable[[Explanation, UnitRecords], Result], explanation: Explanation,
                  ur: UnitRecords) -> Result:
    """``score(explanation, ur)``, or, for a planted unit without an activating test record (a store too small
    to hold its concept in the records part), a result with every score missing and the reason."""
    if ur.test_top:
        return score(explanation, ur)
    return Result(unit=ur.unit, kind=ur.kind, explainer=explanation.explainer, explanation=explanation.text,
                  reason="no activating test record", scores={k: None for k in SCORE_KEYS}, records=ur.to_dict())
