"""Explainers: records in, one-sentence explanation out, behind one interface.

``explainer.explain(unit_records) -> Explanation`` (``explain_many`` for a list). Three kinds:

* :class:`LocalLLMExplainer` -- a local chat LM (SmolLM2-135M-Instruct offline by default) sees the
  train records in the paper's format, one ``token<TAB>activation`` line per token, activations
  discretised to 0-10; when under 20% of a record's values are nonzero, the nonzero lines are
  repeated after it. The assistant's answer is started with "the main thing this neuron does is
  find" and the model completes the sentence (greedy).
* :class:`HTTPExplainer` -- the same prompt sent to any OpenAI-compatible chat endpoint
  (:mod:`course_lib.autointerp.backends`): a hosted model, vLLM, llama.cpp's server...
* :class:`TokenStatsExplainer` -- no LLM: names the tokens that carry most of the activation mass
  in the train records (a trivial explanation, to see how much a trivial explanation scores).

An empty or unparsable answer gives ``Explanation(text=None, reason=...)``: it is recorded with its
reason and scored as missing; the run goes on.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from course_lib.autointerp.backends import BackendError, ChatClient
from course_lib.autointerp.localmodel import LocalLM
from course_lib.autointerp.records import Record, UnitRecords, discretise, escape_token

PREFIX = "the main thing this neuron does is find"
SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a "
    "short document. Look at the parts of the document the neuron activates for and summarize in a "
    "single sentence what the neuron is looking for. Don't list examples of words. The activation "
    "format is token<tab>activation. Activation values range from 0 to 10. A neuron finding what "
    "it's looking for is represented by a non-zero activation value. The higher the activation "
    "value, the stronger the match."
)


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One explanation of one unit (``text`` None when missing; ``reason`` says why)."""

    unit: str  # unit name, e.g. "sae/77"
    explainer: str  # explainer name, e.g. "local:smollm2"
    text: str | None  # the explanation (completes "the main thing this neuron does is find ...")
    reason: str | None = None  # why text is None ("empty", "unparsable: ...", "backend error: ...")
    raw: str = ""  # what the explainer returned before parsing

    @property
    def ok(self) -> bool:
        return self.text is not None


class Explainer(Protocol):
    name: str

    def explain(self, ur: UnitRecords) -> Explanation: ...

    def explain_many(self, urs: Sequence[UnitRecords]) -> list[Explanation]: ...


def format_record(r: Record, max_act: float, discretise_fn: Callable[..., Any] = discretise) -> str:
    """``token<TAB>d`` lines between ``<start>``/``<end>``; nonzero lines repeated if under 20% nonzero.

    ``d = discretise_fn(r.acts, max_act)``: :func:`~course_lib.autointerp.records.discretise`, or notebook
    04's learner's version of it (for the record the notebook shows).
    """
    d = discretise_fn(r.acts, max_act)
    lines = [f"{escape_token(s)}\t{int(v)}" for s, v in zip(r.strings, d)]
    text = "<start>\n" + "\n".join(lines) + "\n<end>\n"
    nz = [ln for ln, v in zip(lines, d) if v > 0]
    if nz and len(nz) < 0.2 * len(lines):
        text += "Same activations, but with all zeros filtered out:\n<start>\n" + "\n".join(nz) + "\n<end>\n"
    return text


def explanation_messages(ur: UnitRecords, max_records: int | None = None,
                         prefilled: bool = False) -> list[dict[str, str]]:
    """The chat messages (system + user) that show the unit's train records.

    ``prefilled``: the caller starts the assistant's answer with :data:`PREFIX` itself (local
    models); otherwise (chat APIs) the user message asks for a sentence completing it.
    """
    recs = ur.train[:max_records] if max_records else ur.train
    body = "Neuron\nActivations:\n" + "".join(format_record(r, ur.max_act) for r in recs)
    if prefilled:  # a question, not a quoted phrase: SmolLM2 completes a quote with " itself."
        user = body + "\nWhich tokens does the neuron look for?"
    else:
        user = body + f'\nExplain what the neuron does in one sentence that completes: "{PREFIX} ..."'
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _unquote(s: str) -> str:
    """Drop one pair of quotes wrapping the whole answer; quotes inside it (``the token "("``) stay."""
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'" and s[1:-1].count(s[0]) % 2 == 0:
        return s[1:-1].strip()
    return s


def parse_explanation(raw: str) -> tuple[str | None, str | None]:
    """``(text, None)`` or ``(None, reason)`` from a model's answer (prefix and quotes stripped)."""
    s = raw.strip()
    low = s.lower()
    if PREFIX in low:
        s = s[low.index(PREFIX) + len(PREFIX):]
    s = _unquote(s.strip().split("\n")[0].strip())
    if not s:
        return None, "empty"
    if not re.search(r"[A-Za-z]", s):
        return None, f"unparsable: no words in {s[:40]!r}"
    if "<start>" in s or "\t" in s:
        return None, f"unparsable: echoes the records ({s[:40]!r})"
    m = re.match(r"(.+?[.!?])(\s|$)", s)  # first sentence
    return (m.group(1) if m else s)[:300], None


def _missing(unit: str, name: str, reason: str, raw: str = "") -> Explanation:
    return Explanation(unit=unit, explainer=name, text=None, reason=reason, raw=raw)


def _per_live_unit(urs: Sequence[UnitRecords], name: str,
                   explain_alive: Callable[[Sequence[UnitRecords]], list[Explanation]]) -> list[Explanation]:
    """One Explanation per unit, in order: ``explain_alive`` (one call, in order) explains the live units, and
    every dead unit gets a missing explanation with the reason "dead unit"."""
    alive = [u for u in urs if u.alive]
    done = iter(explain_alive(alive) if alive else [])
    return [next(done) if u.alive else _missing(u.unit, name, "dead unit: no activating records") for u in urs]


@dataclasses.dataclass
class LocalLLMExplainer:
    """Explanations from a local chat LM (greedy completion of :data:`PREFIX`)."""

    lm: LocalLM  # local chat model
    max_new_tokens: int = 32  # answer length
    max_records: int | None = None  # show at most this many train records (None: all)

    @property
    def name(self) -> str:
        return f"local:{self.lm.name}"

    def explain(self, ur: UnitRecords) -> Explanation:
        return self.explain_many([ur])[0]

    def explain_many(self, urs: Sequence[UnitRecords]) -> list[Explanation]:
        """One batched greedy generation for the live units of ``urs``."""
        def explain_alive(alive: Sequence[UnitRecords]) -> list[Explanation]:
            prompts = [self.lm.chat_ids(explanation_messages(u, self.max_records, prefilled=True),
                                        assistant_prefix=PREFIX[0].upper() + PREFIX[1:]) for u in alive]
            raws = self.lm.generate_many(prompts, self.max_new_tokens)
            return [Explanation(u.unit, self.name, *parse_explanation(raw), raw) for u, raw in zip(alive, raws)]

        return _per_live_unit(urs, self.name, explain_alive)


@dataclasses.dataclass
class HTTPExplainer:
    """Explanations from an OpenAI-compatible chat endpoint (concurrent, retried, per-unit errors)."""

    client: ChatClient  # configured client (the key stays in the environment)
    max_records: int | None = None  # show at most this many train records

    @property
    def name(self) -> str:
        return f"http:{self.client.cfg.model}"

    def explain(self, ur: UnitRecords) -> Explanation:
        return self.explain_many([ur])[0]

    def explain_many(self, urs: Sequence[UnitRecords]) -> list[Explanation]:
        def explain_alive(alive: Sequence[UnitRecords]) -> list[Explanation]:
            answers = self.client.map([explanation_messages(u, self.max_records) for u in alive])
            return [_missing(u.unit, self.name, f"backend error: {ans}") if isinstance(ans, BackendError)
                    else Explanation(u.unit, self.name, *parse_explanation(ans), ans) for u, ans in zip(alive, answers)]

        return _per_live_unit(urs, self.name, explain_alive)


@dataclasses.dataclass
class TokenStatsExplainer:
    """Names the tokens carrying most activation mass in the train records (no LLM).

    For every token string ``t``: mass ``m_t = sum of relu(a)`` over its occurrences. Tokens are
    taken by decreasing mass until ``coverage`` of the total is reached (at most ``max_tokens``):
    ``'the tokens " def", " class".'``.
    """

    max_tokens: int = 3  # most tokens named
    coverage: float = 0.6  # stop once the named tokens carry this share of the activation mass
    name: str = "baseline:token-stats"

    def explain(self, ur: UnitRecords) -> Explanation:
        mass: dict[str, float] = defaultdict(float)
        for r in ur.train:
            for s, a in zip(r.strings, r.acts):
                if a > 0 and s.strip():
                    mass[s] += float(a)
        total = sum(mass.values())
        if total <= 0:
            return _missing(ur.unit, self.name, "dead unit: no activating records")
        ranked = sorted(mass.items(), key=lambda kv: -kv[1])
        chosen, covered = [], 0.0
        for s, m in ranked[: self.max_tokens]:
            chosen.append(s)
            covered += m
            if covered >= self.coverage * total:
                break
        shown = ", ".join(f'"{escape_token(s)}"' for s in chosen)
        text = f"the token {shown}." if len(chosen) == 1 else f"the tokens {shown}."
        return Explanation(ur.unit, self.name, text, None, text)

    def explain_many(self, urs: Sequence[UnitRecords]) -> list[Explanation]:
        return [self.explain(u) for u in urs]


def token_share(ur: UnitRecords) -> float:
    """Share of the train records' activation mass on the single heaviest token string."""
    mass: dict[str, float] = defaultdict(float)
    for r in ur.train:
        for s, a in zip(r.strings, r.acts):
            mass[s] += max(float(a), 0.0)
    tot = sum(mass.values())
    return float(max(mass.values()) / tot) if tot > 0 else float("nan")

