"""Scores of an explanation against a unit's held-out test records (top-activating and random, 1:1).

* **correlation** (Bills et al.): Pearson ``r`` between simulated and real activations, *pooled*
  over all tokens of all test records (not an average of per-record ``r``)::

      r = sum (s - s_bar)(a - a_bar) / sqrt(sum (s - s_bar)^2 sum (a - a_bar)^2)

  NaN (scored as missing) when either side is constant.
* **detection** (delphi): for each test record ask the local LM "does this text activate a unit
  that finds <explanation>? Yes/No"; ``p_yes = P(Yes) / (P(Yes) + P(No))`` at the answer position.
  Label 1 for top records, 0 for random ones.
* **fuzzing** (delphi): top records with the truly active tokens marked ``<<like this>>`` (label 1)
  vs the same records with as many inactive tokens marked instead (label 0); ask whether the marked
  tokens match the explanation.
* **embedding** (delphi): cosine similarity between the embedded explanation and each test record's
  text (all-MiniLM-L6-v2); label 1 for top records.

Detection, fuzzing and embedding are reported as **AUROC** (threshold-free; ties count 1/2, so a
constant predictor scores exactly 0.5) and **balanced accuracy** at threshold 0.5 (embedding: at
the median similarity), ``(TPR + TNR) / 2``. Each yes/no scorer is one batched forward per unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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


def correlation_score(simulator: Any, explanation: str, ur: UnitRecords) -> tuple[float, list[np.ndarray]]:
    """``(r, simulated)``: pooled correlation of ``simulator.simulate`` on the unit's test records.

    A constant simulation (e.g. the keyword simulator on an explanation that quotes no token)
    predicts nothing: ``r = 0``. Constant *real* activations leave ``r`` undefined (NaN, missing).
    """
    sim = simulator.simulate(explanation, ur.test)
    real = [r.acts for r in ur.test]
    flat = np.concatenate(sim) if sim else np.zeros(0)
    if flat.size and np.ptp(flat) == 0 and np.ptp(np.concatenate(real)) > 0:
        return 0.0, sim
    return pooled_correlation(real, sim), sim


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


@dataclasses.dataclass
class YesNoScorer:
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

    def _detection_questions(self, explanation: str, ur: UnitRecords) -> tuple[list[str], list[int]]:
        labels = [1] * len(ur.test_top) + [0] * len(ur.test_random)
        return [DETECT_Q.format(explanation=explanation, text=record_text(r)) for r in ur.test], labels

    def _fuzzing_questions(self, explanation: str, ur: UnitRecords,
                           generator: torch.Generator) -> tuple[list[str], list[int]]:
        texts, labels = [], []
        for r in ur.test_top:
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
        """Top vs random test records: does the text activate the unit? (one forward)"""
        q, labels = self._detection_questions(explanation, ur)
        return self._summary(labels, self.p_yes(q))

    def fuzzing(self, explanation: str, ur: UnitRecords, generator: torch.Generator) -> dict[str, Any]:
        """Correctly vs wrongly marked tokens in top records (one forward)."""
        q, labels = self._fuzzing_questions(explanation, ur, generator)
        return self._summary(labels, self.p_yes(q) if q else np.zeros(0))

    def detection_and_fuzzing(self, explanation: str, ur: UnitRecords,
                              generator: torch.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both scorers' questions in **one** batched forward: ``(detection, fuzzing)``."""
        qd, ld = self._detection_questions(explanation, ur)
        qf, lf = self._fuzzing_questions(explanation, ur, generator)
        p = self.p_yes(qd + qf)
        return self._summary(ld, p[: len(qd)]), self._summary(lf, p[len(qd):])


# --------------------------------------------------------------------------- embedding


def embedding_score(embedder: Any, explanation: str, ur: UnitRecords) -> dict[str, Any]:
    """AUROC / balanced accuracy of ``cos(embed(explanation), embed(record text))``, top vs random."""
    recs = ur.test
    labels = [1] * len(ur.test_top) + [0] * len(ur.test_random)
    vecs = embedder.encode([explanation] + [record_text(r) for r in recs], convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
    sims = vecs[1:] @ vecs[0]
    return {"auroc": auroc(labels, sims), "balanced_accuracy": balanced_accuracy(labels, sims, float(np.median(sims))),
            "similarity": sims.tolist(), "labels": labels}
