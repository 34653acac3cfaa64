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

At the position of each ``<TAB>`` the model's next-token distribution is read for the value tokens
``"0" .. "S"``, renormalised over them, and the expected value ``E[v] = sum_v v p(v)`` is the
predicted activation (rescaled to 0-10). All records of a unit go in one right-padded batch: **one
forward pass per unit**. Only the value rows of the unembedding are multiplied.

Scale: ``S = 10`` when every ``"0".."10"`` is a single token of the simulator's tokenizer (GPT-4's,
Llama-3's). SmolLM2's tokenizer splits ``"10"`` into ``"1", "0"``, so its first token cannot tell 1
from 10; there ``S = 9`` (values ``"0".."9"``, the few-shot example written on that scale).
Pearson correlation -- the score -- does not change under this rescaling.

Token display: tokens containing a newline, tab or carriage return are shown escaped (``\\n``), so
each token stays on one line; all other tokens are used as their own ids (no re-tokenisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

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


@dataclasses.dataclass
class AllAtOnceSimulator:
    """Simulate activations of a unit from its explanation with a local LM (see module docstring)."""

    lm: LocalLM  # the local model whose probabilities are read

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

    def simulate(self, explanation: str, records: Sequence[Record]) -> list[np.ndarray]:
        """Predicted activations on the 0-10 scale, one ``[len(record)]`` array per record."""
        seqs, reads = self.prompts(explanation, records)
        probs = self.lm.candidate_probs(seqs, reads, self.value_ids)
        values = np.arange(self.scale + 1, dtype=np.float64) * (10.0 / self.scale)
        return [p.double().numpy() @ values for p in probs]

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
