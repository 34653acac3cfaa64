"""Scores of an explanation against a unit's held-out test records: top-activating and random (1:1),
plus activating records across activation quantiles when the records have them (``ur.test_quantile``).
"Activating" below means top or quantile records (label 1), "random" the random ones (label 0).

* **correlation** (Bills et al.): Pearson ``r`` between simulated and real activations, *pooled*
  over all tokens of all test records (not an average of per-record ``r``)::

      r = sum (s - s_bar)(a - a_bar) / sqrt(sum (s - s_bar)^2 sum (a - a_bar)^2)

  NaN (scored as missing) when either side is constant.
* **R²** and **absolute deviation explained** (Bills et al.'s other two simulation scores), pooled
  over the same tokens *after* a linear calibration ``p = alpha s + beta`` of the 0-10 simulation
  onto the activation scale (least squares, as ``LinearCalibratedNeuronSimulator``; here fitted on
  the scored records themselves -- two parameters over hundreds of tokens)::

      R^2 = 1 - mean((a - p)^2) / mean(a^2)        (denominator: mean of squares, not variance)
      ADE = 1 - mean|a - p| / mean|a|

  A constant simulation predicts nothing: both are NaN (missing), as is anything over all-zero ``a``.
* **detection** (delphi): for each test record ask the local LM "does this text activate a unit
  that finds <explanation>? Yes/No"; ``p_yes = P(Yes) / (P(Yes) + P(No))`` at the answer position.
  Label 1 for activating records, 0 for **non-activating** ones (``ur.negatives``, delphi's negatives:
  windows where the unit stays at level 0; not random windows, most of which activate somewhere).
* **fuzzing** (delphi): activating records with the truly active tokens marked ``<<like this>>`` (label 1)
  vs the same records with as many inactive tokens marked instead (label 0); ask whether the marked
  tokens match the explanation.
* **embedding** (delphi): cosine similarity between the embedded explanation and each test record's
  text (all-MiniLM-L6-v2); label 1 for activating records, 0 for non-activating ones.

* **intruder** (delphi): no explanation at all. Each question shows ``k`` records -- ``k - 1``
  activating (top or quantile) ones and one non-activating (the intruder) at a random place, labelled A, B, ... -- and asks
  which one does not belong; the answer is the argmax of ``P(letter)`` over the ``k`` letters.
  Reported as accuracy (chance ``1/k``) and the mean probability given to the intruder. It measures
  whether the unit's top records share something a reader can see, i.e. interpretability before
  any explanation.
* **surprisal** (delphi): how much the explanation, put in context, lowers the local LM's loss on a
  record: ``gain = mean_t log p(x_t | explanation, x_<t) - mean_t log p(x_t | neutral prefix, x_<t)``.
  A good explanation helps on activating records more than on random ones: AUROC of the gain,
  activating vs random
  (one batched forward over both prefixes).

Detection and fuzzing read ``P(Yes)`` from a local LM (:class:`YesNoScorer`) or from a server's chat model
(:class:`~course_lib.autointerp.remote.ChatYesNoScorer`), both on the questions of :class:`YesNoQuestions`.
Detection, fuzzing, embedding and surprisal are reported as **AUROC** (threshold-free; ties count 1/2, so a
constant predictor scores exactly 0.5) and **balanced accuracy** at threshold 0.5 (embedding: at
the median similarity), ``(TPR + TNR) / 2``. Each yes/no scorer is one batched forward per unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from course_lib.autointerp.localmodel import LocalLM
from course_lib.autointerp.records import Record, UnitRecords, discretise

# --------------------------------------------------------------------------- metrics


def pooled_correlation(real: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]]) -> float:
    """Pearson correlation over the concatenation of all records; NaN if either side is constant."""
    a = np.concatenate([np.asarray(r, dtype=np.float64) for r in real]) if len(real) else np.zeros(0)
    s = np.concatenate([np.asarray(r, dtype=np.float64) for r in simulated]) if len(simulated) else np.zeros(0)
    if a.shape != s.shape:
        raise ValueError(f"real {a.shape} and simulated {s.shape} differ in length")
    a = a - a.mean() if a.size else a
    s = s - s.mean() if s.size else s
    denom = np.sqrt((a * a).sum() * (s * s).sum())
    if a.size < 2 or denom <= 1e-12:
        return float("nan")
    return float((a * s).sum() / denom)


def _pooled(real: Sequence[Sequence[float]], pred: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.concatenate([np.asarray(r, dtype=np.float64) for r in real]) if len(real) else np.zeros(0)
    p = np.concatenate([np.asarray(r, dtype=np.float64) for r in pred]) if len(pred) else np.zeros(0)
    if a.shape != p.shape:
        raise ValueError(f"real {a.shape} and predicted {p.shape} differ in length")
    return a, p


def rsquared(real: Sequence[Sequence[float]], pred: Sequence[Sequence[float]]) -> float:
    """``1 - mean((a - p)^2) / mean(a^2)`` pooled over all records; NaN when ``a`` is all zero."""
    a, p = _pooled(real, pred)
    denom = float(np.mean(a * a)) if a.size else 0.0
    return float("nan") if denom <= 0 else 1.0 - float(np.mean((a - p) ** 2)) / denom


def absolute_dev_explained(real: Sequence[Sequence[float]], pred: Sequence[Sequence[float]]) -> float:
    """``1 - mean|a - p| / mean|a|`` pooled over all records; NaN when ``a`` is all zero."""
    a, p = _pooled(real, pred)
    denom = float(np.mean(np.abs(a))) if a.size else 0.0
    return float("nan") if denom <= 0 else 1.0 - float(np.mean(np.abs(a - p))) / denom


def linear_calibration(real: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """Least-squares ``(alpha, beta)`` of ``a ~ alpha s + beta`` pooled; None for a constant simulation."""
    a, s = _pooled(real, simulated)
    if s.size < 2 or np.ptp(s) == 0:
        return None
    sc = s - s.mean()
    alpha = float((sc * (a - a.mean())).sum() / (sc * sc).sum())
    return alpha, float(a.mean() - alpha * s.mean())


def simulation_scores(real: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]]) -> dict[str, float]:
    """``{"correlation", "rsquared", "absolute_dev_explained"}`` of one unit's simulation (module docstring)."""
    cal = linear_calibration(real, simulated)
    out = {"correlation": pooled_correlation(real, simulated)}
    if cal is None:
        return out | {"rsquared": float("nan"), "absolute_dev_explained": float("nan")}
    alpha, beta = cal
    pred = [alpha * np.asarray(s, dtype=np.float64) + beta for s in simulated]
    return out | {"rsquared": rsquared(real, pred), "absolute_dev_explained": absolute_dev_explained(real, pred)}


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties 1/2.

    Mann-Whitney form with average ranks; NaN when one class is empty.
    """
    y = np.asarray(labels, dtype=bool)
    x = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(xs):  # average ranks over ties
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def balanced_accuracy(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> float:
    """``(TPR + TNR) / 2`` of the prediction ``score > threshold``; NaN when one class is empty."""
    y = np.asarray(labels, dtype=bool)
    pred = np.asarray(scores, dtype=np.float64) > threshold
    if y.all() or (~y).all():
        return float("nan")
    return float(0.5 * ((pred & y).sum() / y.sum() + (~pred & ~y).sum() / (~y).sum()))


# --------------------------------------------------------------------------- correlation


def simulation_correlation(real: Sequence[Sequence[float]], simulated: Sequence[Sequence[float]],
                           correlation_fn: Callable[..., Any] = pooled_correlation) -> float:
    """The correlation score of a simulation: ``correlation_fn(real, simulated)`` (None read as NaN).

    A constant simulation (e.g. the keyword simulator on an explanation that quotes no token)
    predicts nothing: ``r = 0``. Constant *real* activations leave ``r`` undefined (NaN, missing).
    ``correlation_fn`` is :func:`pooled_correlation`, or notebook 04's learner's version of it.
    """
    flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in simulated]) if len(simulated) else np.zeros(0)
    if flat.size and np.ptp(flat) == 0 and np.ptp(np.concatenate([np.asarray(r, dtype=np.float64) for r in real])) > 0:
        return 0.0
    r = correlation_fn(real, simulated)
    return float("nan") if r is None else float(r)


def correlation_score(simulator: Any, explanation: str, ur: UnitRecords) -> tuple[float, list[np.ndarray]]:
    """``(r, simulated)``: :func:`simulation_correlation` of ``simulator.simulate`` on the unit's test records."""
    sim = simulator.simulate(explanation, ur.test)
    return simulation_correlation([r.acts for r in ur.test], sim), sim


def simulation_score(simulator: Any, explanation: str, ur: UnitRecords) -> tuple[dict[str, float], list[np.ndarray]]:
    """``(scores, simulated)``: :func:`simulation_scores` of ``simulator`` on the unit's test records.

    ``scores["correlation"]`` follows :func:`correlation_score` (0 for a constant simulation).
    """
    r, sim = correlation_score(simulator, explanation, ur)
    return simulation_scores([x.acts for x in ur.test], sim) | {"correlation": r}, sim


# --------------------------------------------------------------------------- yes/no scorers

SYSTEM_YN = "Answer Yes or No."
DETECT_Q = (
    "A neuron in a language model fires on: {explanation}\n\nText:\n{text}\n\n"
    "Does this text contain what the neuron fires on? Answer Yes or No."
)
FUZZ_Q = (
    "A neuron in a language model fires on: {explanation}\n\nIn the text below, some tokens are "
    "marked <<like this>>.\n\nText:\n{text}\n\nAre the marked tokens what the neuron fires on? "
    "Answer Yes or No."
)


def record_text(r: Record, marked: Sequence[bool] | None = None) -> str:
    """The record's text, optionally with the tokens where ``marked`` is true wrapped in ``<< >>``."""
    if marked is None:
        return "".join(r.strings)
    return "".join(f"<<{s}>>" if m else s for s, m in zip(r.strings, marked))


def detection_questions(explanation: str, ur: UnitRecords) -> tuple[list[str], list[int]]:
    """``(questions, labels)`` of the detection scorer: one :data:`DETECT_Q` per held-out test record
    (its plain text, no activations), label 1 for an activating (top or quantile) record and 0 for a
    non-activating one, in the order of ``ur.contrast`` (top, quantile, negative)."""
    return [DETECT_Q.format(explanation=explanation, text=record_text(r)) for r in ur.contrast], ur.contrast_labels


class YesNoQuestions:
    """Detection and fuzzing from any source of ``P(Yes)``: a subclass defines :meth:`p_yes`
    (:class:`YesNoScorer`: a local LM; :class:`~course_lib.autointerp.remote.ChatYesNoScorer`: a server)."""

    def p_yes(self, questions: Sequence[str]) -> np.ndarray:
        """``[n]`` probabilities of Yes, one per question."""
        raise NotImplementedError

    def _detection_questions(self, explanation: str, ur: UnitRecords) -> tuple[list[str], list[int]]:
        return detection_questions(explanation, ur)

    def _fuzzing_questions(self, explanation: str, ur: UnitRecords,
                           generator: torch.Generator) -> tuple[list[str], list[int]]:
        texts, labels = [], []
        for r in [*ur.test_top, *ur.test_quantile]:
            active = discretise(r.acts, ur.max_act) > 0
            if not active.any():
                continue
            inactive = np.flatnonzero(~active)
            pick = inactive[torch.randperm(len(inactive), generator=generator)[: int(active.sum())].numpy()]
            wrong = np.zeros_like(active)
            wrong[pick] = True
            texts += [FUZZ_Q.format(explanation=explanation, text=record_text(r, active)),
                      FUZZ_Q.format(explanation=explanation, text=record_text(r, wrong))]
            labels += [1, 0]
        return texts, labels

    @staticmethod
    def _summary(labels: list[int], p: np.ndarray) -> dict[str, Any]:
        if not labels:
            return {"auroc": float("nan"), "balanced_accuracy": float("nan"), "p_yes": [], "labels": []}
        return {"auroc": auroc(labels, p), "balanced_accuracy": balanced_accuracy(labels, p),
                "p_yes": p.tolist(), "labels": labels}

    def detection(self, explanation: str, ur: UnitRecords) -> dict[str, Any]:
        """Top vs random test records: does the text activate the unit? (one batch of questions)"""
        q, labels = self._detection_questions(explanation, ur)
        return self._summary(labels, self.p_yes(q))

    def fuzzing(self, explanation: str, ur: UnitRecords, generator: torch.Generator) -> dict[str, Any]:
        """Correctly vs wrongly marked tokens in top records (one batch of questions)."""
        q, labels = self._fuzzing_questions(explanation, ur, generator)
        return self._summary(labels, self.p_yes(q) if q else np.zeros(0))

    def detection_and_fuzzing(self, explanation: str, ur: UnitRecords,
                              generator: torch.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both scorers' questions in **one** batch (one forward for a local LM): ``(detection, fuzzing)``."""
        qd, ld = self._detection_questions(explanation, ur)
        qf, lf = self._fuzzing_questions(explanation, ur, generator)
        p = self.p_yes(qd + qf)
        return self._summary(ld, p[: len(qd)]), self._summary(lf, p[len(qd):])


@dataclasses.dataclass
class YesNoScorer(YesNoQuestions):
    """Reads ``P(Yes) / (P(Yes) + P(No))`` of a local chat LM for a batch of questions."""

    lm: LocalLM  # the local model

    def __post_init__(self) -> None:
        yes = [t for t in (self.lm.single_token_id("Yes"), self.lm.single_token_id(" Yes")) if t is not None]
        no = [t for t in (self.lm.single_token_id("No"), self.lm.single_token_id(" No")) if t is not None]
        if not yes or not no:
            raise ValueError("the local model's tokenizer has no single-token Yes/No")
        self.yes, self.no = yes, no

    def questions(self, questions: Sequence[str]) -> list[list[int]]:
        return [self.lm.chat_ids([{"role": "system", "content": SYSTEM_YN}, {"role": "user", "content": q}])
                for q in questions]

    def p_yes(self, questions: Sequence[str]) -> np.ndarray:
        """``[n]`` probabilities of Yes among {Yes, No} at the first answer token (one forward)."""
        seqs = self.questions(questions)
        probs = self.lm.candidate_probs(seqs, [[len(s) - 1] for s in seqs], self.yes + self.no)
        p = torch.cat(probs, dim=0).double().numpy()  # [n, n_yes + n_no]
        return p[:, : len(self.yes)].sum(axis=1)


# --------------------------------------------------------------------------- embedding


def embedding_score(embedder: Any, explanation: str, ur: UnitRecords,
                    cache: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """AUROC / balanced accuracy of ``cos(embed(explanation), embed(record text))``, activating vs random.

    ``cache``: record text -> its embedding, filled as records are met (the same numbers, each record
    embedded once however many explainers are scored on it)."""
    recs, labels = ur.contrast, ur.contrast_labels
    if cache is None:
        vecs = embedder.encode([explanation] + [record_text(r) for r in recs], convert_to_numpy=True,
                               normalize_embeddings=True, show_progress_bar=False)
        e, rv = vecs[0], vecs[1:]
    else:  # record texts embedded once per run, whatever explains them
        texts = [record_text(r) for r in recs]
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, embedder.encode(new, convert_to_numpy=True, normalize_embeddings=True,
                                                  show_progress_bar=False, batch_size=64)))
        e = embedder.encode([explanation], convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False)[0]
        rv = np.stack([cache[t] for t in texts])
    sims = rv @ e
    return {"auroc": auroc(labels, sims), "balanced_accuracy": balanced_accuracy(labels, sims, float(np.median(sims))),
            "similarity": sims.tolist(), "labels": labels}


# --------------------------------------------------------------------------- delphi: intruder, surprisal

INTRUDER_Q = (
    "Here are {k} short texts. In {k_minus_1} of them the same neuron of a language model fires; the "
    "remaining one is an intruder where it does not.\n\n{texts}\n\nWhich text is the intruder? Answer "
    "with its letter only."
)
LETTERS = "ABCDEFGH"


def intruder_score(lm: LocalLM, ur: UnitRecords, generator: torch.Generator, k: int = 4) -> dict[str, Any]:
    """delphi's intruder test (module docstring): one question per random test record, one forward.

    Returns ``{"accuracy", "p_intruder", "chance", "n_questions", "answers", "intruders"}``; NaN
    accuracy when the unit has fewer than ``k - 1`` activating (top or quantile) or no random test records.
    """
    if not 2 <= k <= len(LETTERS):
        raise ValueError(f"k must be in 2..{len(LETTERS)}")
    top, rnd = [*ur.test_top, *ur.test_quantile], ur.negatives  # activating records, intruders
    nan = {"accuracy": float("nan"), "p_intruder": float("nan"), "chance": 1.0 / k, "n_questions": 0,
           "answers": [], "intruders": []}
    if len(top) < k - 1 or not rnd:
        return nan
    letter_ids = [lm.single_token_id(c) for c in LETTERS[:k]]
    if any(t is None for t in letter_ids):
        raise ValueError("the local model's tokenizer has no single-token letters A..")
    questions, where = [], []
    for intruder in rnd:
        pick = torch.randperm(len(top), generator=generator)[: k - 1].tolist()
        shown: list[Record] = [top[i] for i in pick]
        pos = int(torch.randint(0, k, (1,), generator=generator))
        shown.insert(pos, intruder)
        texts = "\n".join(f"{LETTERS[j]}: {record_text(r).strip()}" for j, r in enumerate(shown))
        questions.append(INTRUDER_Q.format(k=k, k_minus_1=k - 1, texts=texts))
        where.append(pos)
    seqs = [lm.chat_ids([{"role": "user", "content": q}]) for q in questions]
    probs = lm.candidate_probs(seqs, [[len(s) - 1] for s in seqs], letter_ids)
    p = torch.cat(probs, dim=0).double().numpy()  # [n_q, k]
    answers = p.argmax(axis=1)
    return {"accuracy": float(np.mean(answers == np.asarray(where))),
            "p_intruder": float(np.mean(p[np.arange(len(where)), where])), "chance": 1.0 / k,
            "n_questions": len(where), "answers": answers.tolist(), "intruders": where}


SURPRISAL_WITH = "A neuron in a language model fires on {explanation}\nA text where it fires:\n"
SURPRISAL_WITHOUT = "A text:\n"


def surprisal_score(lm: LocalLM, explanation: str, ur: UnitRecords) -> dict[str, Any]:
    """delphi's surprisal scorer (module docstring): AUROC of the per-record log-likelihood gain.

    Record tokens are used as their own ids after the prefix (no re-tokenisation); a leading BOS of a
    record is dropped. Returns ``{"auroc", "gain_top", "gain_random", "gain", "labels"}``.
    """
    recs, labels = ur.contrast, ur.contrast_labels
    bos = lm.tokenizer.bos_token_id
    bodies = [[int(t) for t in r.tokens if bos is None or int(t) != bos] for r in recs]
    keep = [i for i, b in enumerate(bodies) if b]
    if not keep:
        return {"auroc": float("nan"), "gain_top": float("nan"), "gain_random": float("nan"), "gain": [],
                "labels": []}
    with_ids = lm.encode(SURPRISAL_WITH.format(explanation=explanation.strip()))
    without_ids = lm.encode(SURPRISAL_WITHOUT)
    seqs = [with_ids + bodies[i] for i in keep] + [without_ids + bodies[i] for i in keep]
    starts = [len(with_ids)] * len(keep) + [len(without_ids)] * len(keep)
    lp = [float(x.double().mean()) for x in lm.token_logprobs(seqs, starts)]
    gain = np.asarray(lp[: len(keep)]) - np.asarray(lp[len(keep):])
    y = np.asarray([labels[i] for i in keep])
    return {"auroc": auroc(y, gain),
            "gain_top": float(gain[y == 1].mean()) if (y == 1).any() else float("nan"),
            "gain_random": float(gain[y == 0].mean()) if (y == 0).any() else float("nan"),
            "gain": gain.tolist(), "labels": y.tolist()}
