"""The paper's scorers through any OpenAI-compatible server: all-at-once simulation, detection, fuzzing.

**Simulation over the completions API** (:class:`ServerSimulator`), as Bills et al. (2023) ran it
(openai/automated-interpretability, ``ExplanationNeuronSimulator``): the prompt of
:mod:`~course_lib.autointerp.simulator` -- every token of a record on its own line followed by a tab
and the placeholder ``unknown`` -- is sent to ``POST /completions`` with ``echo: true`` and
``logprobs: N`` (their ``N = 15``), so the server returns, for every *prompt* token, the ``N`` most
likely tokens at that position and their log-probabilities; ``max_tokens`` is 1 (the paper sent 0,
which llama-cpp-python reads as "no limit"; the one generated token is ignored). At the slot after
each tab (where the placeholder stands) the entries whose text is exactly one of the value tokens
``"0" .. "S"`` are kept -- tokens outside the top ``N`` are not seen -- and renormalised among
themselves::

    p(v) = exp(lp_v) / sum_{u in top-N, u a value} exp(lp_u),      E[v] = sum_v v p(v)

the predicted activation, rescaled to 0-10 by ``10 / S`` (``S`` as in the simulator module: 10, or
9 for a tokenizer that splits ``"10"``). A slot whose top ``N`` holds no value token predicts 0, as
in the paper. The local :class:`~course_lib.autointerp.simulator.AllAtOnceSimulator` renormalises
over *all* ``S + 1`` values; the two agree to the mass of the values outside the top ``N``. Measured
with SmolLM2 (llama.cpp server, tests/autointerp): with ``N = 15`` only 5-7 of the 10 values are
listed at a slot (the placeholder and other tokens take the rest) and the expected values come out
lower than the local simulator's by up to 0.8 on the 0-10 scale; with ``N = 100`` 9.3 of 10 on
average (at least 3). Ask for as many as the server allows (llama-cpp-python: any ``N``; vLLM: its
``--max-logprobs``, 20 by default; OpenAI: 5).

*Where the slots are.* With the served model's ``tokenizer`` the prompt goes as **token ids**, built
exactly as the local simulator builds them (same ids, same read positions). The first such request
is a probe (not retried): if it fails and the same prompt as **text** then succeeds, the server is
taken to accept text only (llama-cpp-python answers ids with HTTP 500) and gets text from then on.
In a text prompt each slot is the reply's token whose ``text_offset`` is where the placeholder starts
in that text (a slot whose placeholder did not become a token of its own is unreadable and predicts 0);
for SmolLM2 the text tokenises into exactly the local simulator's ids (tested). vLLM's ``prompt_logprobs`` form
(``prompt_logprobs=True``: per prompt token, ``{token_id: {"logprob", "decoded_token"}}``) is read
the same way, by index, for id prompts.

*Which entry holds a slot's distribution* (``alignment``). The OpenAI API and vLLM give echoed token
``i`` the distribution that predicted it, ``p(. | x_<i)``: the slot's distribution sits at the
placeholder's own entry. llama-cpp-python (0.3.x), for a prompt that does not start with BOS (such as
SmolLM2's: its GGUF says ``add_bos_token = false``), gives entry ``i`` the distribution *after* it,
``p(. | x_<=i)``: the slot's distribution sits at the tab's entry, one earlier. ``"auto"`` decides per
reply from the prompt's own structure: the distribution that predicts a slot puts nearly all its mass
on the values and the placeholder, the one before it predicts the tab -- of the two candidate entries,
the one with more mass on ``{"0".."S", "unknown"}`` (summed over all slots) is read.

**Detection and fuzzing over chat completions** (:class:`ChatYesNoScorer`): the questions of
:class:`~course_lib.autointerp.scoring.YesNoScorer`, one chat request each (``max_tokens`` a few
tokens, ``logprobs: true, top_logprobs: N``). When the reply carries the first answer token's top
log-probabilities, ``p_yes = P(yes) / (P(yes) + P(no))`` over the entries whose text, stripped and
lower-cased, is ``yes`` / ``no``; otherwise (no log-probabilities, or neither word among them) the
answer text is parsed: starting with yes -> 1, no -> 0, anything else -> 0.5 (undecided).

One :class:`~course_lib.autointerp.backends.ChatConfig` (base URL, model, key variable) drives the
HTTP explainer and both scorers: :meth:`course_lib.autointerp.pipeline.Scorers.from_server`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from course_lib.autointerp.backends import BackendError, ChatClient
from course_lib.autointerp.localmodel import LocalLM
from course_lib.autointerp.records import Record, escape_token
from course_lib.autointerp.scoring import SYSTEM_YN, YesNoQuestions
from course_lib.autointerp.simulator import (
    EXAMPLE,
    EXAMPLE_LINES,
    HEADER,
    PLACEHOLDER,
    TARGET,
    AllAtOnceSimulator,
)

Alignment = Literal["auto", "predicts", "follows"]  # entry i holds p(. | x_<i) ("predicts") or p(. | x_<=i)


@dataclasses.dataclass(frozen=True)
class PromptEntry:
    """One echoed prompt token of a completions reply."""

    token: str | None  # its text (None where the form does not say)
    offset: int | None  # its character offset in the prompt text (None where the form does not say)
    top: dict[str, float] | None  # text -> log-probability of the most likely tokens (None for the first)


def prompt_entries(choice: dict[str, Any]) -> list[PromptEntry]:
    """The per-token entries of a completions ``choices[0]`` (generated tokens included, if any).

    Reads the OpenAI form ``logprobs: {tokens, text_offset, top_logprobs}`` (OpenAI, vLLM and
    llama-cpp-python with ``echo``) or vLLM's ``prompt_logprobs: [None | {id: {"logprob",
    "decoded_token"}}]`` (no text offsets: index it by token position). Two ids that decode to the same
    text add their probabilities. Raises :class:`~course_lib.autointerp.backends.BackendError` when
    the reply has neither.
    """
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("top_logprobs"), list):
        tops = lp["top_logprobs"]
        tokens = lp.get("tokens") or [None] * len(tops)
        offsets = lp.get("text_offset") or [None] * len(tops)
        return [PromptEntry(t, o, {str(k): float(v) for k, v in top.items()} if isinstance(top, dict) else None)
                for t, o, top in zip(tokens, offsets, tops)]
    pl = choice.get("prompt_logprobs")
    if isinstance(pl, list):
        out = []
        for pos in pl:
            if not isinstance(pos, dict):
                out.append(PromptEntry(None, None, None))
                continue
            top: dict[str, float] = {}
            for k, v in pos.items():
                text = str(v.get("decoded_token", k)) if isinstance(v, dict) else str(k)
                logprob = float(v["logprob"]) if isinstance(v, dict) else float(v)
                top[text] = float(np.logaddexp(top[text], logprob)) if text in top else logprob
            out.append(PromptEntry(None, None, top))
        return out
    raise BackendError("the completions reply has no prompt log-probabilities (logprobs with echo, or "
                       "prompt_logprobs): this server cannot run the all-at-once simulator")


def value_distribution(top: dict[str, float] | None, scale: int) -> np.ndarray:
    """``[scale + 1]`` probabilities of the values ``"0".."scale"`` among the top entries, renormalised
    over those present (module docstring); all zero when none is present."""
    p = np.zeros(scale + 1)
    for v in range(scale + 1):
        if top is not None and str(v) in top:
            p[v] = math.exp(top[str(v)])
    total = p.sum()
    return p / total if total > 0 else p


def _slot_mass(top: dict[str, float] | None, scale: int) -> float:
    """Probability mass of the values and the placeholder in one entry (what follows a tab)."""
    if not top:
        return 0.0
    return sum(math.exp(top[k]) for k in [*(str(v) for v in range(scale + 1)), PLACEHOLDER] if k in top)


def read_slots(entries: Sequence[PromptEntry], slots: Sequence[int | None], scale: int,
               alignment: Alignment = "auto") -> tuple[list[np.ndarray], str]:
    """The value distributions ``[scale + 1]`` at each slot, and the alignment used.

    ``slots[k]``: the index of the entry of slot ``k``'s placeholder token (None: unreadable, all-zero
    distribution). ``"predicts"`` reads that entry, ``"follows"`` the one before it, ``"auto"`` the
    one of the two with more slot mass over all slots (module docstring).
    """
    def at(i: int | None) -> dict[str, float] | None:
        return entries[i].top if i is not None and 0 <= i < len(entries) else None

    if alignment == "auto":
        here = sum(_slot_mass(at(s), scale) for s in slots)
        before = sum(_slot_mass(at(s - 1 if s is not None else None), scale) for s in slots)
        alignment = "follows" if before > here else "predicts"
    elif alignment not in ("predicts", "follows"):
        raise ValueError(f"alignment={alignment!r}: use 'auto', 'predicts' or 'follows'")
    shift = 1 if alignment == "follows" else 0
    return [value_distribution(at(s - shift if s is not None else None), scale) for s in slots], alignment


@dataclasses.dataclass
class ServerSimulator:
    """All-at-once simulation through an OpenAI-compatible completions endpoint (module docstring).

    Same interface as :class:`~course_lib.autointerp.simulator.AllAtOnceSimulator`.
    """

    client: ChatClient  # configured client (base URL, model, key variable)
    tokenizer: Any = None  # the served model's HF tokenizer: id prompts identical to the local simulator's; None: text
    top_logprobs: int = 15  # N, top log-probabilities per position (the paper: 15; OpenAI allowed at most 5 later)
    max_tokens: int = 1  # tokens generated after the prompt (ignored; llama-cpp-python reads 0 as unlimited)
    scale: int | None = None  # S; None: from the tokenizer (10 if "10" is one token, else 9), 10 without one
    alignment: Alignment = "auto"  # which entry holds a slot's distribution (module docstring)
    prompt_logprobs: bool = False  # ask for vLLM's prompt_logprobs form instead of echo + logprobs

    def __post_init__(self) -> None:
        self._ids: AllAtOnceSimulator | None = None
        if self.tokenizer is not None:  # the local simulator's prompt builder needs the tokenizer only
            self._ids = AllAtOnceSimulator(LocalLM(model=None, tokenizer=self.tokenizer, name="tokenizer"))
            if self.scale is None:
                self.scale = self._ids.scale
            elif self.scale != self._ids.scale:
                raise ValueError(f"scale={self.scale}, but the tokenizer's single-token values give {self._ids.scale}")
        if self.scale is None:
            self.scale = 10
        if not 1 <= self.scale <= 10:
            raise ValueError(f"scale={self.scale}: the values are the single tokens '0'..'S', S in 1..10")
        self.send_ids: bool | None = None if self._ids is not None else False  # None: not tried yet
        self.last_alignment: str | None = None  # the alignment "auto" chose for the last reply

    def prefix_text(self, explanation: str) -> str:
        """Instructions, the few-shot example on this scale, and the target header with ``explanation``."""
        example = EXAMPLE + "".join(f"{t}\t{round(v * self.scale)}\n" for t, v in EXAMPLE_LINES)
        return HEADER.format(S=self.scale) + example + TARGET.format(explanation=explanation.strip())

    def text_prompt(self, explanation: str, record: Record) -> tuple[str, list[int]]:
        """``(text, offsets)``: the prompt as text and the character offset of each placeholder."""
        parts, offsets = [self.prefix_text(explanation)], []
        n = len(parts[0])
        for t, s in zip(record.tokens, record.strings):
            shown = escape_token(self.tokenizer.decode([int(t)]) if self.tokenizer is not None else s)
            offsets.append(n + len(shown) + 1)
            line = f"{shown}\t{PLACEHOLDER}\n"
            parts.append(line)
            n += len(line)
        return "".join(parts), offsets

    def _params(self) -> dict[str, Any]:
        if self.prompt_logprobs:
            return {"prompt_logprobs": self.top_logprobs}
        return {"echo": True, "logprobs": self.top_logprobs}

    def slot_entries(self, explanation: str, record: Record) -> tuple[list[PromptEntry], list[int | None]]:
        """One request: the reply's entries, and for each token of ``record`` the index of the entry of
        its placeholder (None: unreadable). Token ids when possible, else text (module docstring)."""
        if self.send_ids is not False and self._ids is not None:
            ids, read = self._ids.prompt(explanation, record.tokens)
            probing = self.send_ids is None  # the first id request is not retried: any failure -> text
            try:
                choice = self.client.completion_choice(ids, self.max_tokens, 0 if probing else None, **self._params())
            except BackendError:
                if not probing:
                    raise
                entries, slots = self._text_entries(explanation, record)  # raises if text fails too
                self.send_ids = False  # ids failed where text worked: this server takes text only
                return entries, slots
            self.send_ids = True
            entries = prompt_entries(choice)
            if len(entries) < len(ids):
                raise BackendError(f"the server echoed {len(entries)} entries for a prompt of {len(ids)} ids")
            return entries, [r + 1 for r in read]  # the placeholder follows the tab read position
        return self._text_entries(explanation, record)

    def _text_entries(self, explanation: str, record: Record) -> tuple[list[PromptEntry], list[int | None]]:
        text, offsets = self.text_prompt(explanation, record)
        entries = prompt_entries(self.client.completion_choice(text, self.max_tokens, **self._params()))
        where = {e.offset: i for i, e in enumerate(entries) if e.offset is not None}
        if not where and offsets:
            raise BackendError("the completions reply has no text offsets: send token ids (give a tokenizer)")
        return entries, [where.get(o) for o in offsets]

    def _one(self, explanation: str, record: Record) -> np.ndarray:
        """``[len(record), S + 1]`` value distributions of one record (one request)."""
        entries, slots = self.slot_entries(explanation, record)
        probs, self.last_alignment = read_slots(entries, slots, self.scale, self.alignment)
        return np.stack(probs) if probs else np.zeros((0, self.scale + 1))

    def simulate_with_probs(self, explanation: str, records: Sequence[Record]) -> list[np.ndarray]:
        """The value distributions ``[len(record), S + 1]`` per record (one request per record,
        ``concurrency`` in flight). Raises the first :class:`BackendError`."""
        out = self.client.run_many(lambda r: self._one(explanation, r), list(records))
        for x in out:
            if isinstance(x, BackendError):
                raise x
        return out  # type: ignore[return-value]

    def simulate(self, explanation: str, records: Sequence[Record]) -> list[np.ndarray]:
        """Predicted activations on the 0-10 scale, one ``[len(record)]`` array per record."""
        values = np.arange(self.scale + 1, dtype=np.float64) * (10.0 / self.scale)
        return [p @ values for p in self.simulate_with_probs(explanation, records)]


_ANSWER = re.compile(r"\W*(yes|no)\b", re.IGNORECASE)


def yes_probability(choice: dict[str, Any]) -> tuple[float, str]:
    """``(p_yes, source)`` of a chat ``choices[0]``; ``source`` is ``"logprobs"``, ``"text"`` or
    ``"undecided"`` (module docstring)."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        tops = first.get("top_logprobs") or [{"token": first.get("token"), "logprob": first.get("logprob")}]
        mass = {"yes": 0.0, "no": 0.0}
        for t in tops:
            word = str(t.get("token") or "").strip().lower()
            if word in mass and t.get("logprob") is not None:
                mass[word] += math.exp(float(t["logprob"]))
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"]), "logprobs"
    m = _ANSWER.match(str(choice.get("message", {}).get("content") or ""))
    if m:
        return (1.0 if m.group(1).lower() == "yes" else 0.0), "text"
    return 0.5, "undecided"


@dataclasses.dataclass
class ChatYesNoScorer(YesNoQuestions):
    """Detection and fuzzing through an OpenAI-compatible chat endpoint (module docstring)."""

    client: ChatClient  # configured client (base URL, model, key variable)
    top_logprobs: int = 10  # log-probabilities asked for at the answer's first token (OpenAI allows 0-20)
    max_tokens: int = 3  # answer length (the parsed-text fallback reads its first word)
    logprobs: bool = True  # ask for log-probabilities (a server that refuses them is detected: see _ask)

    def __post_init__(self) -> None:
        self.last_sources: list[str] = []  # "logprobs" / "text" / "undecided" per question of the last call
        self.logprobs_accepted: bool | None = None  # None: not tried yet

    def _ask(self, question: str) -> dict[str, Any]:
        """One chat request. The first with log-probabilities is a probe (not retried): if it fails and
        the same question without them succeeds, the server is asked without them from then on
        (llama-cpp-python started with ``--logits_all false`` answers them with HTTP 500)."""
        msgs = [{"role": "system", "content": SYSTEM_YN}, {"role": "user", "content": question}]
        if not self.logprobs or self.logprobs_accepted is False:
            return self.client.chat_choice(msgs, self.max_tokens)
        probing = self.logprobs_accepted is None
        try:
            choice = self.client.chat_choice(msgs, self.max_tokens, 0 if probing else None,
                                             logprobs=True, top_logprobs=self.top_logprobs)
        except BackendError:
            if not probing:
                raise
            choice = self.client.chat_choice(msgs, self.max_tokens)  # raises if this fails too
            self.logprobs_accepted = False
            return choice
        self.logprobs_accepted = True
        return choice

    def p_yes(self, questions: Sequence[str]) -> np.ndarray:
        """``[n]`` probabilities of Yes, one chat request per question (``concurrency`` in flight).
        Raises the first :class:`BackendError`."""
        replies = self.client.run_many(self._ask, list(questions))
        for x in replies:
            if isinstance(x, BackendError):
                raise x
        read = [yes_probability(c) for c in replies]  # type: ignore[arg-type]
        self.last_sources = [s for _, s in read]
        return np.array([p for p, _ in read], dtype=np.float64)
