"""Explain-and-score loop: records -> explanation -> all scores -> :class:`~.results.Result`.

:class:`Scorers` bundles what scoring needs (the all-at-once simulator and the yes/no scorer share
one local LM; the keyword simulator and the embedder need none). Every scorer that reads the LM is
one batched forward per unit: simulation (all test records), and detection + fuzzing together
(all test records, and the top records marked right and wrong).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from course_lib.autointerp.explainers import Explanation, parse_explanation
from course_lib.autointerp.records import UnitRecords
from course_lib.autointerp.results import SCORE_KEYS, Result
from course_lib.autointerp.scoring import YesNoScorer, correlation_score, embedding_score
from course_lib.autointerp.simulator import AllAtOnceSimulator, KeywordSimulator


@dataclasses.dataclass
class Scorers:
    """The scorers of one run (any of them may be None to skip it)."""

    simulator: AllAtOnceSimulator | None  # LLM all-at-once simulator
    yes_no: YesNoScorer | None  # detection + fuzzing
    embedder: Any = None  # sentence-transformers model (embedding score)
    keyword: KeywordSimulator = dataclasses.field(default_factory=KeywordSimulator)  # no-LLM simulator
    seed: int = 0  # seeds fuzzing's choice of wrongly marked tokens

    @classmethod
    def from_local(cls, lm: Any, embedder: Any = None, seed: int = 0) -> Scorers:
        return cls(simulator=AllAtOnceSimulator(lm), yes_no=YesNoScorer(lm), embedder=embedder, seed=seed)

    def score(self, expl: Explanation, ur: UnitRecords) -> Result:
        """All scores of one explanation (``None`` for every score when it is missing)."""
        scores: dict[str, float | None] = {k: None for k in SCORE_KEYS}
        extra: dict[str, Any] = {"seconds": {}}
        if expl.text is not None:
            t = expl.text
            r, sim = correlation_score(self.keyword, t, ur)
            scores["correlation_keyword"] = r
            if self.simulator is not None:
                t0 = time.perf_counter()
                r, sim = correlation_score(self.simulator, t, ur)
                extra["seconds"]["simulation"] = time.perf_counter() - t0
                scores["correlation_llm"] = r
                extra["simulated"] = [s.tolist() for s in sim]
            if self.yes_no is not None:
                t0 = time.perf_counter()
                d, f = self.yes_no.detection_and_fuzzing(t, ur, torch.Generator().manual_seed(self.seed))
                extra["seconds"]["detection_and_fuzzing"] = time.perf_counter() - t0
                scores["detection_auroc"], scores["detection_bacc"] = d["auroc"], d["balanced_accuracy"]
                extra["detection_p_yes"] = d["p_yes"]
                scores["fuzzing_auroc"], scores["fuzzing_bacc"] = f["auroc"], f["balanced_accuracy"]
            if self.embedder is not None:
                scores["embedding_auroc"] = embedding_score(self.embedder, t, ur)["auroc"]
        return Result(unit=ur.unit, kind=ur.kind, explainer=expl.explainer, explanation=expl.text,
                      reason=expl.reason, scores=scores, records=ur.to_dict(), extra=extra)


def explain_and_score(explainer: Any, scorers: Scorers, urs: Sequence[UnitRecords],
                      progress: bool = True) -> list[Result]:
    """Explain every unit (one call: HTTP explainers run concurrently), then score each."""
    expls = explainer.explain_many(urs)
    return [scorers.score(e, u) for e, u in tqdm(list(zip(expls, urs)), desc=f"score {explainer.name}",
                                                 disable=not progress)]


def explain_text(text: str, unit: str, explainer: str = "human") -> Explanation:
    """Wrap a typed explanation (the "explain it yourself" widget) with the same parsing rules."""
    parsed, reason = parse_explanation(text)
    return Explanation(unit=unit, explainer=explainer, text=parsed, reason=reason, raw=text)
