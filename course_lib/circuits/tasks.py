"""Binary next-token Python tasks for circuit finding (after Gao et al., 2025).

Each task is a template filled with random names and values; a prompt ends just before a token
that can be one of two answers, and which one is right depends on something earlier in the
prompt. The *task loss* is the cross-entropy over just the two candidate logits at the last
position: ``L = mean_i softplus(l_wrong_i - l_correct_i)`` (``ln 2 = 0.693`` is chance).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import torch

NAMES = (
    "name", "value", "data", "result", "items", "key", "path", "line", "text", "count", "total",
    "config", "node", "entry", "prefix", "label", "msg", "parts", "args", "buf", "out", "res", "obj",
    "item", "word", "field", "target", "source", "state", "module", "token", "chunk", "row", "col",
)
WORDS = (
    "hello", "world", "foo", "bar", "spam", "eggs", "error", "default", "utf", "ascii", "main", "info",
    "debug", "value", "name", "file", "test", "data", "title", "none", "empty", "other", "true", "line",
)
SEQS = ("items", "lines", "names", "values", "parts", "words", "args", "keys", "rows", "data")
FUNCS = ("len", "str", "int", "list", "sorted", "repr", "tuple", "set", "print", "abs", "type", "iter")


@dataclasses.dataclass(frozen=True)
class Example:
    prompt: str  # text ending just before the answer
    correct: str  # the right next token (as text)
    wrong: str  # the other candidate


@dataclasses.dataclass(frozen=True)
class Task:
    name: str  # short id, e.g. "quote_close"
    description: str  # one sentence for the notebook
    answers: tuple[str, str]  # the two candidate tokens (as text)
    make: Callable[[random.Random, int], Example]  # (rng, class 0/1) -> example


def _quote_close(rng: random.Random, cls: int) -> Example:
    q, other = ("'", '"') if cls == 0 else ('"', "'")
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    return Example(f"{rng.choice(NAMES)} = {q}{words}", q, other)


def _bracket_depth(rng: random.Random, cls: int) -> Example:
    def num() -> str:
        return str(rng.randint(0, 99))

    if cls == 0:  # depth 1: the list is closed, the line ends
        body = ", ".join(num() for _ in range(rng.randint(1, 4)))
        return Example(f"{rng.choice(NAMES)} = [{body}]", "\n", "]")
    inner = [("[" + ", ".join(num() for _ in range(rng.randint(1, 3))) + "]") for _ in range(rng.randint(1, 3))]
    return Example(f"{rng.choice(NAMES)} = [{', '.join(inner)}", "]", "\n")


def _set_or_string(rng: random.Random, cls: int) -> Example:
    v, it, seq = rng.choice(NAMES), rng.choice(("x", "s", "item", "part", "w")), rng.choice(SEQS)
    init = "set()" if cls == 0 else rng.choice(('""', "''"))
    prompt = f"{v} = {init}\nfor {it} in {seq}:\n    {v}"
    return Example(prompt, "." if cls == 0 else " +=", " +=" if cls == 0 else ".")


def _bracket_type(rng: random.Random, cls: int) -> Example:
    opener, closer, other = ("(", ")", "]") if cls == 0 else ("[", "]", ")")
    vals = ", ".join(rng.choice(NAMES) for _ in range(rng.randint(2, 4)))
    return Example(f"{rng.choice(NAMES)} = {opener}{vals}", closer, other)


def _paren_close(rng: random.Random, cls: int) -> Example:
    """Depth 1 (``f(x``) closes with ``)``; depth 2 (``f(g(x``) with ``))`` (one BPE token)."""
    arg = rng.choice(NAMES)
    if cls == 0:
        return Example(f"{rng.choice(NAMES)} = {rng.choice(FUNCS)}({arg}", ")", "))")
    return Example(f"{rng.choice(NAMES)} = {rng.choice(FUNCS)}({rng.choice(FUNCS)}({arg}", "))", ")")


def _list_or_dict(rng: random.Random, cls: int) -> Example:
    """A variable made as a list is used with ``.append`` (``.``), one made as a dict with ``[key] =``."""
    v, it, seq = rng.choice(NAMES), rng.choice(("x", "k", "item", "key", "w")), rng.choice(SEQS)
    init = rng.choice(("[]", "list()")) if cls == 0 else rng.choice(("{}", "dict()"))
    prompt = f"{v} = {init}\nfor {it} in {seq}:\n    {v}"
    return Example(prompt, "." if cls == 0 else "[", "[" if cls == 0 else ".")


def _self_or_cls(rng: random.Random, cls: int) -> Example:
    """The first parameter of a method: ``cls`` after ``@classmethod``, ``self`` after ``@property``."""
    deco, first, other = ("classmethod", "cls", "self") if cls == 0 else ("property", "self", "cls")
    return Example(f"class {rng.choice(NAMES).title()}:\n    @{deco}\n    def {rng.choice(NAMES)}(", first, other)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("quote_close", "close a string with the quote that opened it: ' vs \"", ("'", '"'), _quote_close),
        Task(
            "bracket_depth",
            "after a ']' is the list still open (one more ']') or finished (newline)?",
            ("]", "\n"),
            _bracket_depth,
        ),
        Task("set_or_string", "a variable made as set() is used with '.add' ('.'), a string with ' +='",
             (".", " +="), _set_or_string),
        Task("bracket_type", "close a tuple with ')' and a list with ']'", (")", "]"), _bracket_type),
    )
}
"""The four tasks notebook 02 runs today (the shipped workshop reference set was judged on these)."""

SUITE: dict[str, Task] = {
    **TASKS,
    **{
        t.name: t
        for t in (
            Task("paren_close", "close one call with ')' and two nested calls with '))'", (")", "))"),
                 _paren_close),
            Task("list_or_dict", "a variable made as a list is used with '.append' ('.'), a dict with '[key] ='",
                 (".", "["), _list_or_dict),
            Task("self_or_cls", "a method's first parameter: 'cls' after @classmethod, 'self' after @property",
                 ("cls", "self"), _self_or_cls),
        )
    },
}
"""Every task (the issue's suite of >= 6): :data:`TASKS` plus three more; the reference-set trainer
(:mod:`course_lib.circuits.reference_training`) reports held-out losses on all of them."""


@dataclasses.dataclass
class TaskData:
    """Tokenised prompts of one task split. Shapes: ``tokens [n, max_len]`` (right-padded with 0)."""

    task: str
    tokens: torch.Tensor  # [n, max_len] int64
    last: torch.Tensor  # [n] index of each prompt's last token
    answer_ids: torch.Tensor  # [n, 2] (correct, wrong) token ids
    prompts: list[str]

    def to(self, device: torch.device | str) -> TaskData:
        return dataclasses.replace(
            self, tokens=self.tokens.to(device), last=self.last.to(device), answer_ids=self.answer_ids.to(device)
        )


def single_token_id(tokenizer, text: str) -> int:
    """The id of ``text`` if the tokenizer encodes it as exactly one token, else ``ValueError``."""
    ids = tokenizer.encode(text).ids
    if len(ids) != 1:
        raise ValueError(f"answer {text!r} is {len(ids)} tokens {tokenizer.encode(text).tokens}, not one")
    return ids[0]


def encode_example(tokenizer, ex: Example) -> tuple[list[int], int, int]:
    """Prompt ids and the two answer ids; checks that ``prompt + answer`` tokenizes as
    ``tokens(prompt) + [answer]`` for both answers (so the answer really is the next token)."""
    p = tokenizer.encode(ex.prompt).ids
    out = []
    for ans in (ex.correct, ex.wrong):
        a = single_token_id(tokenizer, ans)
        if tokenizer.encode(ex.prompt + ans).ids != p + [a]:
            raise ValueError(f"{ex.prompt + ans!r} does not tokenize as prompt + {ans!r}")
        out.append(a)
    return p, out[0], out[1]


def make_task_data(task: str, tokenizer, n: int, seed: int, split: str) -> TaskData:
    """``n`` prompts of ``task`` (half per class), ``split`` "train" or "test" (disjoint seeds).

    Prompts whose answer would not be a clean next token (see :func:`encode_example`) are skipped;
    if more than half are, the task does not fit this tokenizer and ``ValueError`` is raised.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; valid values: 'train', 'test'")
    t = SUITE[task]
    rng = random.Random(f"{task}-{split}-{seed}")
    rows, answers, prompts, tries = [], [], [], 0
    while len(rows) < n:
        tries += 1
        if tries > 2 * n + 20:
            raise ValueError(f"task {task!r}: too many prompts do not tokenize cleanly")
        ex = t.make(rng, len(rows) % 2)
        try:
            ids, c, w = encode_example(tokenizer, ex)
        except ValueError:
            continue
        rows.append(ids)
        answers.append((c, w))
        prompts.append(ex.prompt)
    width = max(map(len, rows))
    tokens = torch.zeros(n, width, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    last = torch.tensor([len(r) - 1 for r in rows])
    return TaskData(task, tokens, last, torch.tensor(answers), prompts)


def task_corpus(tokenizer, n_tokens: int, seed: int = 1, exclude_seed: int = 0, exclude_n: int = 1024) -> torch.Tensor:
    """Task-template text to mix into pretraining: ``[>= n_tokens]`` int64 token ids.

    Documents ``prompt + correct answer``, each followed by ``<|endoftext|>``, cycling over the tasks of
    :data:`SUITE` that fit ``tokenizer`` (classes alternating), drawn from ``random.Random(f"{task}-pretrain-
    {seed}")`` (a stream of its own, not the "train"/"test" prompt streams). Any prompt that occurs among the
    first ``exclude_n`` *test* prompts of seed ``exclude_seed`` (what the notebook judges circuits on) is
    left out, so held-out prompts stay unseen even where a template has few distinct fillings.
    """
    eos = tokenizer.token_to_id("<|endoftext|>")
    tasks, excluded = [], set()
    for name in SUITE:
        try:
            excluded.update(make_task_data(name, tokenizer, exclude_n, exclude_seed, "test").prompts)
            tasks.append(name)
        except ValueError:  # an answer is not one token of this tokenizer
            continue
    rngs = {t: random.Random(f"{t}-pretrain-{seed}") for t in tasks}
    ids: list[int] = []
    i = 0
    while len(ids) < n_tokens:
        name = tasks[i % len(tasks)]
        ex = SUITE[name].make(rngs[name], (i // len(tasks)) % 2)
        i += 1
        if ex.prompt in excluded:
            continue
        ids.extend(tokenizer.encode(ex.prompt + ex.correct).ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


SPLITS = ("solve", "fit", "report")  # what decides "solved", what the masks and the bisection see, what is reported


def index_task_data(data: TaskData, idx: list[int]) -> TaskData:
    """The prompts ``idx`` of ``data`` (in that order), padding trimmed to the longest of them."""
    i = torch.tensor(idx, dtype=torch.long)
    last = data.last[i]
    width = int(last.max()) + 1 if len(idx) else 1
    return TaskData(data.task, data.tokens[i, :width], last, data.answer_ids[i], [data.prompts[j] for j in idx])


def prompt_splits(task: str, tokenizer, n: int, seed: int = 0) -> dict[str, TaskData]:
    """Three disjoint prompt sets of ``task``, ``n`` each (half per class): ``{"solve", "fit", "report"}``.

    Drawn from the "test" stream of ``seed`` (for seed 0, prompts the reference set's training text left out:
    :func:`task_corpus`); a prompt string is used once, so no prompt is in two splits even where a template has
    few distinct fillings. One split decides which tasks a model solves, one fits the masks and the bisection,
    one reports validity and every loss shown: select, fit and report on different data.
    ``ValueError`` when the task has too few distinct prompts for ``3 n``.
    """
    pool = make_task_data(task, tokenizer, 4 * n + 64, seed, "test")
    seen: set[str] = set()
    by_class: list[list[int]] = [[], []]
    for i, p in enumerate(pool.prompts):
        if p not in seen:
            seen.add(p)
            by_class[i % 2].append(i)
    half = n // 2
    if min(map(len, by_class)) < 3 * half:
        raise ValueError(f"task {task!r}: {min(map(len, by_class))} distinct prompts per class, fewer than 3 x {half}")
    out = {}
    for k, name in enumerate(SPLITS):
        idx = [j for pair in zip(by_class[0][k * half:(k + 1) * half], by_class[1][k * half:(k + 1) * half])
               for j in pair]
        out[name] = index_task_data(pool, idx)
    return out
