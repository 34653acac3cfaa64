"""Binary next-token Python tasks and circuit finding by learned node masks (after Gao et al., 2025).

Tasks
-----
Each task is a template filled with random names and values; a prompt ends just before a token
that can be one of two answers, and which one is right depends on something earlier in the
prompt. The *task loss* is the cross-entropy over just the two candidate logits at the last
position: ``L = mean_i softplus(l_wrong_i - l_correct_i)`` (``ln 2 = 0.693`` is chance).

Pruning
-------
A node is one channel at one of the model's node hooks (:func:`sparse_transformer.iter_node_hooks`:
residual read channels, q/k/v channels, MLP neurons, residual write channels). Each node ``i`` has
a mask logit ``s_i``; the forward pass uses the hard mask ``m_i = 1[s_i > 0]`` and the backward pass
pretends ``dm/ds = sigmoid'(s / T) / T`` (a straight-through surrogate). A pruned node is
mean-ablated: ``a_i <- m_i a_i + (1 - m_i) mean_i`` with ``mean_i`` over corpus text. The masks
minimise ``task_loss + coef * sum_i m_i``; nodes are then ranked by ``s_i`` and a bisection over
``k`` finds the smallest top-``k`` set whose task loss reaches ``target_loss``.

Circuit size
------------
Edges are nonzero weights between two kept nodes: ``W_Q/W_K/W_V`` (read channel -> q/k/v channel),
matching q-k channel pairs (the dot product), ``W_O`` (v channel -> write channel), ``W_in`` (read
channel -> neuron), ``W_out`` (neuron -> write channel), the residual stream (a write channel to the
same channel of every later read) and ``W_U`` (final read channel -> the task's answer tokens).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_lib.sparse_transformer import SparseTransformer, iter_node_hooks

# --------------------------------------------------------------------------- tasks

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
    t = TASKS[task]
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


# --------------------------------------------------------------------------- nodes, means, masks


@dataclasses.dataclass(frozen=True)
class NodeSite:
    kind: str  # attn_in, q, k, v, attn_out, mlp_in, neuron, mlp_out, final_in
    hook: str  # hook point name
    layer: int  # block index (n_layers for final_in)
    size: int  # channels


def node_sites(model: SparseTransformer) -> list[NodeSite]:
    out = []
    for kind, hook, n in iter_node_hooks(model.cfg):
        layer = int(hook.split(".")[1]) if hook.startswith("blocks.") else model.cfg.n_layers
        out.append(NodeSite(kind, hook, layer, n))
    return out


def total_nodes(model: SparseTransformer) -> int:
    return sum(s.size for s in node_sites(model))


@torch.no_grad()
def node_means(model: SparseTransformer, windows: torch.Tensor, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Mean activation of every node over corpus ``windows [n, seq]``: ``{hook: [channels]}``."""
    sites = node_sites(model)
    dev = next(model.parameters()).device
    sums = {s.hook: torch.zeros(s.size, device=dev) for s in sites}
    count = 0
    names = {s.hook for s in sites}
    for i in range(0, windows.shape[0], batch_size):
        w = windows[i : i + batch_size].to(dev)
        _, cache = model.run_with_cache(w, names_filter=lambda n: n in names)
        for s in sites:
            sums[s.hook] += cache[s.hook].reshape(-1, s.size).sum(0)
        count += w.numel()
    return {k: v / count for k, v in sums.items()}


class _HardMask(torch.autograd.Function):
    """Forward ``1[s > 0]``; backward ``sigmoid'(s / T) / T`` (surrogate gradient)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, temperature: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(logits)
        ctx.temperature = temperature
        return (logits > 0).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (logits,) = ctx.saved_tensors
        sig = torch.sigmoid(logits / ctx.temperature)
        return grad * sig * (1 - sig) / ctx.temperature, None


def hard_mask(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return _HardMask.apply(logits, temperature)


def _ablation_hook(mask: torch.Tensor, mean: torch.Tensor):
    def fn(act: torch.Tensor, hook) -> torch.Tensor:
        shape = act.shape
        flat = act.reshape(*shape[:2], -1)
        return (flat * mask + mean * (1 - mask)).reshape(shape)

    return fn


def masked_final_last(
    model: SparseTransformer, data: TaskData, masks: dict[str, torch.Tensor], means: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Normalised final residual at each prompt's last position ``[n, d_model]`` with nodes masked.

    ``masks[hook]`` is ``[channels]`` in [0, 1] (1 keeps, 0 mean-ablates); hooks not in ``masks`` are kept.
    """
    hooks = [(h, _ablation_hook(m, means[h])) for h, m in masks.items()]
    with model.hooks(fwd_hooks=hooks):
        final = model(data.tokens, return_type="final")
    return final[torch.arange(final.shape[0], device=final.device), data.last]


def task_logits(
    model: SparseTransformer, data: TaskData, masks: dict[str, torch.Tensor] | None = None,
    means: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``[n, 2]`` logits of (correct, wrong) at the last position (optionally with masks)."""
    final = masked_final_last(model, data, masks or {}, means or {})
    prev = data.tokens[torch.arange(data.tokens.shape[0], device=data.tokens.device), data.last]
    return model.unembed_columns(final, prev, data.answer_ids)


def task_loss_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Two-token cross-entropy: ``mean softplus(l_wrong - l_correct)``."""
    return F.softplus(logits[:, 1] - logits[:, 0]).mean()


def task_loss(model: SparseTransformer, data: TaskData, masks=None, means=None) -> float:
    with torch.no_grad():
        return float(task_loss_from_logits(task_logits(model, data, masks, means)))


# --------------------------------------------------------------------------- pruning


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    steps: int = 200  # Adam steps on the mask logits
    lr: float = 0.05  # Adam learning rate for the mask logits
    coef: float = 1e-3  # penalty per active node
    init_logit: float = 1.0  # every node starts kept
    temperature: float = 1.0  # surrogate sigmoid temperature
    target_loss: float = 0.15  # task loss the circuit must reach
    grid_points: int = 24  # kept-node counts evaluated for the loss curve


@dataclasses.dataclass
class Circuit:
    task: str
    model_name: str
    order: list[tuple[str, int]]  # every node (hook, channel), best first (by learned mask logit)
    curve_k: list[int]  # kept-node counts evaluated
    curve_loss: list[float]  # train task loss at each count
    n_nodes: int | None  # smallest k reaching the target (None: not reached)
    train_loss: float  # task loss of the circuit (or the best k found) on train prompts
    test_loss: float  # same nodes on the held-out prompts
    full_loss: float  # task loss of the unpruned model on the test prompts
    edges: int | None  # nonzero weights between kept nodes
    kept: dict[str, torch.Tensor]  # {hook: bool [channels]} of the circuit (or best k)


def masks_from_order(model: SparseTransformer, order: Sequence[tuple[str, int]], k: int) -> dict[str, torch.Tensor]:
    """Float masks ``{hook: [channels]}`` keeping the first ``k`` nodes of ``order``."""
    dev = next(model.parameters()).device
    masks = {s.hook: torch.zeros(s.size, device=dev) for s in node_sites(model)}
    for h, c in order[:k]:
        masks[h][c] = 1.0
    return masks


def learn_masks(
    model: SparseTransformer, data: TaskData, means: dict[str, torch.Tensor], pcfg: PruneConfig,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Optimise mask logits for ``task_loss + coef * active nodes``; returns ``{hook: logits}``."""
    sites = node_sites(model)
    dev = next(model.parameters()).device
    logits = {s.hook: torch.full((s.size,), pcfg.init_logit, device=dev, requires_grad=True) for s in sites}
    opt = torch.optim.Adam(logits.values(), lr=pcfg.lr)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in tqdm(range(pcfg.steps), desc=f"masks {data.task}", disable=not progress, leave=False):
            masks = {h: hard_mask(s, pcfg.temperature) for h, s in logits.items()}
            final = masked_final_last(model, data, masks, means)
            prev = data.tokens[torch.arange(data.tokens.shape[0], device=dev), data.last]
            loss = task_loss_from_logits(model.unembed_columns(final, prev, data.answer_ids))
            active = sum(m.sum() for m in masks.values())
            opt.zero_grad(set_to_none=True)
            (loss + pcfg.coef * active).backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return {h: s.detach() for h, s in logits.items()}


def _grid(n: int, points: int) -> list[int]:
    ks = {0, n}
    for i in range(points):
        ks.add(int(round(math.exp(math.log(n) * i / (points - 1)))))
    return sorted(k for k in ks if 0 <= k <= n)


def find_circuit(
    model: SparseTransformer, model_name: str, train: TaskData, test: TaskData,
    means: dict[str, torch.Tensor], pcfg: PruneConfig, progress: bool = False,
) -> Circuit:
    """Learn masks, rank nodes, trace task loss vs kept nodes, bisect for the smallest circuit."""
    logits = learn_masks(model, train, means, pcfg, progress)
    flat = [(float(v), h, c) for h, s in logits.items() for c, v in enumerate(s.tolist())]
    flat.sort(key=lambda t: -t[0])
    order = [(h, c) for _, h, c in flat]
    cache: dict[int, float] = {}

    def loss_at(k: int) -> float:
        if k not in cache:
            cache[k] = task_loss(model, train, masks_from_order(model, order, k), means)
        return cache[k]

    n_total = len(order)
    n_active = sum(int((s > 0).sum()) for s in logits.values())
    ks = sorted(set(_grid(n_total, pcfg.grid_points)) | {n_active})
    curve = [loss_at(k) for k in ks]
    hits = [k for k in ks if loss_at(k) <= pcfg.target_loss]
    if hits:
        hi = hits[0]
        lo = max([k for k in ks if k < hi], default=0)
        while hi - lo > 1:  # loss(lo) > target >= loss(hi)
            mid = (lo + hi) // 2
            if loss_at(mid) <= pcfg.target_loss:
                hi = mid
            else:
                lo = mid
        k_star: int | None = hi
        k_used = hi
    else:
        k_star = None
        k_used = min(ks, key=loss_at)
    masks = masks_from_order(model, order, k_used)
    kept = {h: m > 0.5 for h, m in masks.items()}
    return Circuit(
        task=train.task, model_name=model_name, order=order, curve_k=ks, curve_loss=curve,
        n_nodes=k_star, train_loss=loss_at(k_used), test_loss=task_loss(model, test, masks, means),
        full_loss=task_loss(model, test), edges=count_edges(model, kept, train) if k_star is not None else None,
        kept=kept,
    )


# --------------------------------------------------------------------------- edges


@torch.no_grad()
def count_edges(model: SparseTransformer, kept: dict[str, torch.Tensor], data: TaskData | None = None) -> int:
    """Nonzero weights between kept nodes (see the module docstring for the edge types)."""
    return sum(n for _, _, n in edge_list_counts(model, kept, data))


@torch.no_grad()
def edge_list_counts(
    model: SparseTransformer, kept: dict[str, torch.Tensor], data: TaskData | None = None
) -> list[tuple[str, str, int]]:
    """``(source hook, target hook, edges)`` for every pair of node sites that weights connect."""
    cfg = model.cfg
    out: list[tuple[str, str, int]] = []

    def nz(w: torch.Tensor, src: str, dst: str) -> None:
        a, b = kept[src], kept[dst]
        out.append((src, dst, int((w[a][:, b] != 0).sum())))

    writes: list[str] = []
    for layer, block in enumerate(model.blocks):
        p = f"blocks.{layer}"
        reads = [f"{p}.hook_attn_in"]
        for w in writes:
            out.append((w, reads[0], int((kept[w] & kept[reads[0]]).sum())))
        for name, W in (("q", block.attn.W_Q), ("k", block.attn.W_K), ("v", block.attn.W_V)):
            nz(W, f"{p}.hook_attn_in", f"{p}.attn.hook_{name}")
        out.append((f"{p}.attn.hook_q", f"{p}.attn.hook_k",
                    int((kept[f"{p}.attn.hook_q"] & kept[f"{p}.attn.hook_k"]).sum())))
        nz(block.attn.W_O, f"{p}.attn.hook_v", f"{p}.hook_attn_out")
        writes.append(f"{p}.hook_attn_out")
        for w in writes:
            out.append((w, f"{p}.hook_mlp_in", int((kept[w] & kept[f"{p}.hook_mlp_in"]).sum())))
        nz(block.mlp.W_in, f"{p}.hook_mlp_in", f"{p}.mlp.hook_post")
        nz(block.mlp.W_out, f"{p}.mlp.hook_post", f"{p}.hook_mlp_out")
        writes.append(f"{p}.hook_mlp_out")
    for w in writes:
        out.append((w, "hook_final_in", int((kept[w] & kept["hook_final_in"]).sum())))
    if data is not None:
        ids = torch.unique(data.answer_ids)
        out.append(("hook_final_in", "answers", int((model.W_U[kept["hook_final_in"]][:, ids] != 0).sum())))
    del cfg
    return out


def all_kept(model: SparseTransformer) -> dict[str, torch.Tensor]:
    dev = next(model.parameters()).device
    return {s.hook: torch.ones(s.size, dtype=torch.bool, device=dev) for s in node_sites(model)}


@torch.no_grad()
def node_top_tokens(
    model: SparseTransformer, windows: torch.Tensor, nodes: Sequence[tuple[str, int]], tokenizer, k: int = 3,
    batch_size: int = 16,
) -> dict[tuple[str, int], list[str]]:
    """For each node ``(hook, channel)``: the ``k`` distinct corpus tokens where it is most positive."""
    hooks = {h for h, _ in nodes}
    dev = next(model.parameters()).device
    acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    toks = []
    for i in range(0, windows.shape[0], batch_size):
        w = windows[i : i + batch_size].to(dev)
        _, cache = model.run_with_cache(w, names_filter=lambda n: n in hooks)
        for h in hooks:
            acts[h].append(cache[h].reshape(w.numel(), -1).cpu())
        toks.append(w.reshape(-1).cpu())
    flat_tok = torch.cat(toks)
    out: dict[tuple[str, int], list[str]] = {}
    for h, c in nodes:
        a = torch.cat(acts[h])[:, c]
        words: list[str] = []
        for idx in a.argsort(descending=True)[: 20 * k].tolist():
            s = tokenizer.decode([int(flat_tok[idx])])
            if s not in words:
                words.append(s)
            if len(words) == k:
                break
        out[(h, c)] = words
    return out
