"""The "all at once" simulator (Bills et al., 2023): predict a unit's activation at every token.

Given an explanation, one prompt per record lists every token of the record on its own line with
a placeholder where the activation would go::

    <few-shot example with real values>
    Explanation of neuron 2 behavior: the main thing this neuron does is find <explanation>
    Activations:
    <start>
    token_1<TAB>unknown
    token_2<TAB>unknown
    ...

At the position of each ``<TAB>`` the model's next-token log-probabilities ``lp [vocab]`` are read, and
:func:`expected_values` turns them into the predicted activation: the distribution over the values
``v = 0 .. S`` is the softmax of the value tokens' log-probabilities, renormalised over those ``S + 1``
values only, ``p(v) = exp(lp[id_v]) / sum_u exp(lp[id_u])``, and the prediction is its expectation
``E[v] = sum_v v p(v)`` (rescaled to 0-10). All records of a unit go in one right-padded batch: **one
forward pass per unit**; the unembedding is applied record by record at the read positions only.

Scale: ``S = 10`` when every ``"0".."10"`` is a single token of the simulator's tokenizer (GPT-4's,
Llama-3's). SmolLM2's tokenizer splits ``"10"`` into ``"1", "0"``, so its first token cannot tell 1
from 10; there ``S = 9`` (values ``"0".."9"``, the few-shot example written on that scale).
Pearson correlation -- the score -- does not change under this rescaling.

Token display: tokens containing a newline, tab or carriage return are shown escaped (``\\n``), so
each token stays on one line; all other tokens are used as their own ids (no re-tokenisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from course_lib.autointerp.localmodel import LocalLM
from course_lib.autointerp.records import Record, escape_token

HEADER = "Predict a neuron's activation (0 to {S}, mostly 0) on each token from its explanation.\n\n"
EXAMPLE = (
    "Neuron 1\nExplanation of neuron 1 behavior: the main thing this neuron does is find the "
    'keyword " return".\nActivations:\n<start>\n'
)
EXAMPLE_LINES: tuple[tuple[str, float], ...] = (
    (" return", 1.0), (" x", 0), ("\\n", 0), ("    ", 0), (" return", 1.0), (" None", 0.1),
)
TARGET = (
    "<end>\n\nNeuron 2\nExplanation of neuron 2 behavior: the main thing this neuron does is find "
    "{explanation}\nActivations:\n<start>\n"
)
PLACEHOLDER = "unknown"


def expected_values(logprobs: Any, value_ids: Sequence[int]) -> np.ndarray:
    """Expected value of the simulator's distribution over the values ``0 .. S`` at each token.

    ``logprobs [n_tokens, vocab]``: the LM's next-token log-probabilities at each read position (logits, i.e.
    log-probabilities shifted by a constant per token, give the same result); ``value_ids [S + 1]``: the token
    ids of ``"0" .. "S"``. ``p = softmax(logprobs[:, value_ids])`` (renormalised over the ``S + 1`` values)
    and ``E = p @ [0, 1, ..., S]``: ``[n_tokens]`` float64.
    """
    lp = np.asarray(logprobs, dtype=np.float64)[:, list(value_ids)]
    lp = lp - lp.max(axis=1, keepdims=True)
    p = np.exp(lp)
    p /= p.sum(axis=1, keepdims=True)
    return p @ np.arange(len(value_ids), dtype=np.float64)


@dataclasses.dataclass
class AllAtOnceSimulator:
    """Simulate activations of a unit from its explanation with a local LM (see module docstring)."""

    lm: LocalLM  # the local model whose probabilities are read
    expected_fn: Callable[[np.ndarray, Sequence[int]], Any] = expected_values  # (logprobs [n, vocab], value ids)
    #   -> expected value on 0..S per token: :func:`expected_values`, or notebook 04's learner's version of it

    def __post_init__(self) -> None:
        ten = [self.lm.single_token_id(str(v)) for v in range(11)]
        self.scale = 10 if all(t is not None for t in ten) else 9
        self.value_ids = [int(t) for t in ten[: self.scale + 1]]  # type: ignore[arg-type]
        if any(t is None for t in ten[: self.scale + 1]):
            raise ValueError("the simulator's tokenizer does not have single-token digits 0-9")
        self.tab = self.lm.encode("\t")
        self.newline = self.lm.encode("\n")
        self.placeholder = self.lm.encode(PLACEHOLDER)
        self._display: dict[int, list[int]] = {}
        example = EXAMPLE + "".join(f"{t}\t{round(v * self.scale)}\n" for t, v in EXAMPLE_LINES)
        self._prefix_text = HEADER.format(S=self.scale) + example

    def display_ids(self, token_id: int) -> list[int]:
        """Ids that show ``token_id`` on one line: itself, or its escaped text if it has ``\\n\\t\\r``."""
        if token_id not in self._display:
            s = self.lm.tokenizer.decode([token_id])
            self._display[token_id] = self.lm.encode(escape_token(s)) if any(c in s for c in "\n\t\r") else [token_id]
        return self._display[token_id]

    def prompt(self, explanation: str, tokens: Sequence[int]) -> tuple[list[int], list[int]]:
        """``(ids, read_positions)``: the prompt for one record and where each token's value is read."""
        ids = self.lm.encode(self._prefix_text + TARGET.format(explanation=explanation.strip()))
        read: list[int] = []
        for t in tokens:
            ids.extend(self.display_ids(int(t)))
            ids.extend(self.tab)
            read.append(len(ids) - 1)
            ids.extend(self.placeholder)
            ids.extend(self.newline)
        return ids, read

    def prompts(self, explanation: str, records: Sequence[Record]) -> tuple[list[list[int]], list[list[int]]]:
        built = [self.prompt(explanation, r.tokens) for r in records]
        return [b[0] for b in built], [b[1] for b in built]

    @torch.no_grad()
    def vocab_logprobs(self, explanation: str, records: Sequence[Record]) -> Iterator[np.ndarray]:
        """Per record, the next-token log-probabilities over the whole vocabulary at its read positions,
        ``[len(record), vocab]`` float32: one batched forward for all records, the unembedding record by record."""
        seqs, reads = self.prompts(explanation, records)
        h, _ = self.lm.hidden(seqs)
        w = self.lm.model.lm_head.weight
        for i, pos in enumerate(reads):
            hp = h[i, torch.tensor(list(pos), dtype=torch.long, device=h.device)].float()  # [n, d]
            yield torch.log_softmax(hp @ w.float().T, dim=-1).cpu().numpy()

    def simulate(self, explanation: str, records: Sequence[Record]) -> list[np.ndarray]:
        """Predicted activations on the 0-10 scale, one ``[len(record)]`` array per record: ``expected_fn`` of
        each record's log-probabilities (:meth:`vocab_logprobs`), times ``10 / S``."""
        out = []
        for r, lp in zip(records, self.vocab_logprobs(explanation, records)):
            e = np.asarray(self.expected_fn(lp, self.value_ids), dtype=np.float64).reshape(-1)
            if e.shape != (len(r.tokens),):
                raise ValueError(f"expected_fn returned {e.size} values for a record of {len(r.tokens)} tokens")
            out.append(e * (10.0 / self.scale))
        return out

    def simulate_with_probs(self, explanation: str, records: Sequence[Record]) -> list[np.ndarray]:
        """The renormalised value distributions ``[len(record), S + 1]`` per record."""
        seqs, reads = self.prompts(explanation, records)
        return [p.numpy() for p in self.lm.candidate_probs(seqs, reads, self.value_ids)]


def quoted_strings(explanation: str) -> list[str]:
    """Strings quoted in an explanation (``"..."`` or backticks), e.g. ``'the token " def"'`` -> ``[" def"]``."""
    import re

    return [m for m in re.findall(r'"([^"]+)"|`([^`]+)`', explanation) for m in m if m]


@dataclasses.dataclass
class KeywordSimulator:
    """A no-LLM simulator: predicts 10 on tokens whose text matches a string quoted in the explanation.

    Matching ignores surrounding whitespace and case. It measures how much of an explanation's score
    a literal token list earns -- the ceiling of what the token-statistics baseline can say -- and
    is the control against which the 135M all-at-once simulator is read.
    """

    def simulate(self, explanation: str, records: Sequence[Record]) -> list[np.ndarray]:
        keys = {q.strip().lower() for q in quoted_strings(explanation) if q.strip()}
        return [np.array([10.0 if s.strip().lower() in keys and s.strip() else 0.0 for s in r.strings])
                for r in records]
