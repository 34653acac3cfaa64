"""Circuit finding by learned node masks (after Gao et al., 2025).

A node is one channel at one of the model's node hooks (:func:`iter_node_hooks`:
residual read channels, q/k/v channels, MLP neurons, residual write channels). Each node ``i`` has
a mask logit ``s_i``; the forward pass uses the hard mask ``m_i = 1[s_i > 0]`` and the backward pass
pretends ``dm/ds = sigmoid'(s / T) / T`` (a straight-through surrogate). A pruned node is
mean-ablated: ``a_i <- m_i a_i + (1 - m_i) mean_i`` with ``mean_i`` over corpus text. The masks
minimise ``task_loss + coef * sum_i m_i``; nodes are then ranked by ``s_i`` and a bisection over
``k`` finds the smallest top-``k`` set whose task loss on the *train* prompts reaches
``target_loss * train_target_ratio`` (a ratio below 1 leaves a margin for the held-out prompts).

A circuit counts only if it also works on held-out prompts: :class:`Circuit` ``valid`` is true when the
same node set reaches the target on the test prompts (:func:`accept_circuit`), and ``n_nodes``/``edges``
are reported only then.
A task is ``solved`` by a model when its unpruned held-out task loss is at most ``solved_loss`` (well
below chance, ``ln 2``), so that pruning cannot be what makes the model do the task.

Notebook 02's learners write three pieces of this and :func:`find_circuit` takes them as arguments:
the mask (``mask_fn``, :func:`hard_mask`), the acceptance test (``accept_fn``, :func:`accept_circuit`) and
the edge count (``edge_fn``, :func:`course_lib.circuits.edges.weight_edges`).

Controls (after the 2026 critiques): :func:`zero_means` (zero instead of mean ablation),
:func:`shuffled_labels` (a nonsense task: answers permuted across prompts) and
:func:`random_circuit_losses` (size-matched random node sets).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_lib import cache, runtime
from course_lib.circuits.edges import EdgeFn, count_edges, possible_edges, weight_edges
from course_lib.circuits.tasks import TaskData
from course_lib.circuits.transformer import SparseTransformer, SparseTransformerConfig

NodeKind = Literal["attn_in", "q", "k", "v", "attn_out", "mlp_in", "neuron", "mlp_out", "final_in"]


def iter_node_hooks(cfg: SparseTransformerConfig) -> Iterator[tuple[NodeKind, str, int]]:
    """The pruning's node sites in forward order: ``(kind, hook_name, n_channels)``.

    Kinds: ``attn_in``/``mlp_in``/``final_in`` (residual read channels), ``q``/``k``/``v``
    (attention channels, ``n_heads * d_head``), ``attn_out``/``mlp_out`` (residual write
    channels), ``neuron`` (MLP neurons).
    """
    d, hd = cfg.d_model, cfg.n_heads * cfg.d_head
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        yield "attn_in", f"{p}.hook_attn_in", d
        yield "q", f"{p}.attn.hook_q", hd
        yield "k", f"{p}.attn.hook_k", hd
        yield "v", f"{p}.attn.hook_v", hd
        yield "attn_out", f"{p}.hook_attn_out", d
        yield "mlp_in", f"{p}.hook_mlp_in", d
        yield "neuron", f"{p}.mlp.hook_post", cfg.d_mlp
        yield "mlp_out", f"{p}.hook_mlp_out", d
    yield "final_in", "hook_final_in", d


# --------------------------------------------------------------------------- nodes, means, masks


@dataclasses.dataclass(frozen=True)
class NodeSite:
    kind: NodeKind  # which channels: residual read/write, q/k/v, neuron
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
    """Forward ``1[logits > 0]``; backward the derivative of ``sigmoid(logits / temperature)``."""
    return _HardMask.apply(logits, temperature)


MaskFn = Callable[[torch.Tensor, float], torch.Tensor]  # (logits, temperature) -> mask


def accept_circuit(train_nodes: int | None, train_loss: float, test_loss: float, target_loss: float) -> bool:
    """A node set counts as a circuit when the bisection found it on the train prompts (``train_nodes`` is
    not None; 0 nodes is a valid size) and it also reaches the target on the held-out prompts."""
    return train_nodes is not None and test_loss <= target_loss


AcceptFn = Callable[[int | None, float, float, float], bool]  # (train_nodes, train_loss, test_loss, target)


@torch.no_grad()
def model_density(model: SparseTransformer, data: TaskData | None = None) -> float:
    """Edge density of the whole model, ``count_edges / possible_edges`` with every node kept (the same edge
    types as a circuit's, the unembedding restricted to ``data``'s answers): what a circuit's edge density would
    be if weight density alone decided it. 1.0 for a dense model; about the kept fraction of the block weights
    for a weight-sparse one."""
    kept = all_kept(model)
    return count_edges(model, kept, data) / max(possible_edges(model, kept, data), 1)


def smallest_k(loss_at: Callable[[int], float], ks: Sequence[int], goal: float) -> int | None:
    """The bisection on the number of kept nodes: the smallest ``k`` whose loss reaches ``goal``, or None.

    ``ks`` is the sorted grid of kept-node counts already traced (``loss_at(k)``: task loss of the top-``k``
    nodes of the ranking). Take the first grid point ``hi`` with ``loss_at(hi) <= goal`` and the grid point
    before it, ``lo`` (0 if none), then halve ``[lo, hi]`` while keeping ``loss_at(lo) > goal >= loss_at(hi)``
    until ``hi - lo == 1``; return ``hi``. About ``log2(hi - lo)`` more evaluations. The loss need not be
    monotone in ``k``: the answer is the crossing inside the first grid interval that reaches the goal.
    None when no grid point reaches the goal."""
    hits = [k for k in ks if loss_at(k) <= goal]
    if not hits:
        return None
    hi = hits[0]
    lo = max([k for k in ks if k < hi], default=0)
    if lo == hi:
        return hi
    while hi - lo > 1:  # loss_at(lo) > goal >= loss_at(hi)
        mid = (lo + hi) // 2
        if loss_at(mid) <= goal:
            hi = mid
        else:
            lo = mid
    return hi


SearchFn = Callable[[Callable[[int], float], Sequence[int], float], int | None]  # (loss_at, ks, goal) -> k


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
        final = model(data.tokens, return_type="final", last=data.last)  # [n, 1, d]: the last block at `last` only
    return final[:, 0]


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
    target_loss: float = 0.15  # task loss the circuit must reach (on the held-out prompts, to be valid)
    train_target_ratio: float = 1.0  # the bisection aims for target_loss * this on the train prompts (< 1: a margin)
    grid_points: int = 24  # kept-node counts evaluated for the loss curve
    solved_loss: float = 0.5  # a model solves a task when its unpruned held-out task loss is at most this
    mask_seed: int = 0  # seed of the mask logits' initial noise (one search per seed: the noise floor)
    init_noise: float = 0.0  # sd of the Gaussian noise added to init_logit (0: every search starts alike)
    batch_size: int = 0  # prompts per mask-learning step, a fresh random subset each step (0: all of them)


@dataclasses.dataclass
class Circuit:
    task: str
    model_name: str
    order: list[tuple[str, int]]  # every node (hook, channel), best first (by learned mask logit)
    curve_k: list[int]  # kept-node counts evaluated
    curve_loss: list[float]  # train task loss at each count
    n_nodes: int | None  # circuit size in nodes, only when valid (held-out loss reaches the target), else None
    train_loss: float  # task loss of the kept nodes (train bisection result, or the best k) on train prompts
    test_loss: float  # same nodes on the held-out prompts
    full_loss: float  # task loss of the unpruned model on the test prompts
    edges: int | None  # nonzero weights between kept nodes, only when valid
    kept: dict[str, torch.Tensor]  # {hook: bool [channels]} of the kept nodes (train bisection result, or best k)
    train_nodes: int | None = None  # smallest k reaching the target on the train prompts (None: not reached)
    full_train_loss: float = float("nan")  # task loss of the unpruned model on the train prompts
    target_loss: float = float("nan")  # the target used
    solved: bool = False  # the unpruned model's held-out loss is at most solved_loss
    valid: bool = False  # train_nodes found and the same nodes reach the target on held-out prompts
    possible_edges: int | None = None  # weights between the kept nodes, zero or not (only when valid)

    @property
    def kept_nodes(self) -> list[tuple[str, int]]:
        """The kept ``(hook, channel)`` pairs, best-ranked first."""
        rank = {n: i for i, n in enumerate(self.order)}
        nodes = [(h, int(c)) for h, m in self.kept.items() for c in torch.nonzero(m).flatten().tolist()]
        return sorted(nodes, key=lambda n: rank.get(n, len(rank)))


def masks_from_order(model: SparseTransformer, order: Sequence[tuple[str, int]], k: int) -> dict[str, torch.Tensor]:
    """Float masks ``{hook: [channels]}`` keeping the first ``k`` nodes of ``order``."""
    dev = next(model.parameters()).device
    masks = {s.hook: torch.zeros(s.size, device=dev) for s in node_sites(model)}
    for h, c in order[:k]:
        masks[h][c] = 1.0
    return masks


def learn_masks(
    model: SparseTransformer, data: TaskData, means: dict[str, torch.Tensor], pcfg: PruneConfig,
    progress: bool = False, mask_fn: MaskFn = hard_mask,
) -> dict[str, torch.Tensor]:
    """Optimise mask logits for ``task_loss + coef * active nodes``; returns ``{hook: logits}``.

    The masks in the forward pass are ``mask_fn(logits, pcfg.temperature)``. With ``pcfg.batch_size`` each
    step sees a random subset of that many prompts (drawn from the mask seed's generator), which makes a step
    cheaper in proportion; the loss curve and the bisection always use every prompt."""
    sites = node_sites(model)
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(pcfg.mask_seed)
    logits = {s.hook: (pcfg.init_logit + pcfg.init_noise * torch.randn(s.size, generator=g)).to(dev).requires_grad_()
              for s in sites}
    opt = torch.optim.Adam(logits.values(), lr=pcfg.lr)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        n = data.tokens.shape[0]
        for _ in tqdm(range(pcfg.steps), desc=f"masks {data.task}", disable=not progress, leave=False):
            masks = {h: mask_fn(s, pcfg.temperature) for h, s in logits.items()}
            batch = data
            if 0 < pcfg.batch_size < n:
                idx = torch.randperm(n, generator=g)[:pcfg.batch_size].to(dev)
                batch = dataclasses.replace(data, tokens=data.tokens[idx], last=data.last[idx],
                                            answer_ids=data.answer_ids[idx], prompts=[])
            final = masked_final_last(model, batch, masks, means)
            prev = batch.tokens[torch.arange(batch.tokens.shape[0], device=dev), batch.last]
            loss = task_loss_from_logits(model.unembed_columns(final, prev, batch.answer_ids))
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
    mask_fn: MaskFn = hard_mask, accept_fn: AcceptFn = accept_circuit, edge_fn: EdgeFn = weight_edges,
    search_fn: SearchFn = smallest_k,
) -> Circuit:
    """Learn masks, rank nodes, trace task loss vs kept nodes, bisect for the smallest circuit.

    ``mask_fn`` makes the masks while learning (:func:`learn_masks`), ``search_fn`` bisects for the smallest
    kept-node count (:func:`smallest_k`), ``accept_fn`` decides whether the node set is a circuit (``valid``),
    ``edge_fn`` counts its edges (:func:`~course_lib.circuits.edges.count_edges`).
    """
    if next(model.parameters()).device.type == "cpu":
        key = ("find_circuit", model.cfg, tuple(train.tokens.shape))
        ones = {h: m.float() for h, m in all_kept(model).items()}
        threads = runtime.faster_thread_count(key, lambda: task_loss(model, train, ones, means))
        with runtime.cpu_threads(threads):
            return _find_circuit(model, model_name, train, test, means, pcfg, progress, mask_fn, accept_fn, edge_fn,
                                 search_fn)
    return _find_circuit(model, model_name, train, test, means, pcfg, progress, mask_fn, accept_fn, edge_fn, search_fn)


def _find_circuit(
    model: SparseTransformer, model_name: str, train: TaskData, test: TaskData,
    means: dict[str, torch.Tensor], pcfg: PruneConfig, progress: bool,
    mask_fn: MaskFn, accept_fn: AcceptFn, edge_fn: EdgeFn, search_fn: SearchFn = smallest_k,
) -> Circuit:
    logits = learn_masks(model, train, means, pcfg, progress, mask_fn)
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
    goal = pcfg.target_loss * pcfg.train_target_ratio  # on the train prompts
    found = search_fn(loss_at, ks, goal)
    k_star: int | None = None if found is None else int(found)
    k_used = k_star if k_star is not None else min(ks, key=loss_at)
    masks = masks_from_order(model, order, k_used)
    kept = {h: m > 0.5 for h, m in masks.items()}
    test_loss = task_loss(model, test, masks, means)
    full_loss = task_loss(model, test)
    valid = bool(accept_fn(k_star, loss_at(k_used), test_loss, pcfg.target_loss))
    return Circuit(
        task=train.task, model_name=model_name, order=order, curve_k=ks, curve_loss=curve,
        n_nodes=k_star if valid else None, train_loss=loss_at(k_used), test_loss=test_loss,
        full_loss=full_loss, edges=count_edges(model, kept, train, edge_fn) if valid else None,
        kept=kept, train_nodes=k_star, full_train_loss=task_loss(model, train), target_loss=pcfg.target_loss,
        solved=full_loss <= pcfg.solved_loss, valid=valid,
        possible_edges=possible_edges(model, kept, train) if valid else None,
    )


def restrict_circuit(model: SparseTransformer, circuit: Circuit, nodes: Sequence[tuple[str, int]], train: TaskData,
                     test: TaskData, means: dict[str, torch.Tensor], edge_fn: EdgeFn = weight_edges,
                     accept_fn: AcceptFn = accept_circuit) -> Circuit:
    """``circuit`` cut down to ``nodes`` (a subset of its kept nodes, e.g. those connected to the answers), with
    its own train and held-out losses, validity at ``circuit.target_loss`` and size."""
    kept = {h: torch.zeros_like(m) for h, m in circuit.kept.items()}
    for h, c in nodes:
        kept[h][c] = True
    masks = {h: m.float() for h, m in kept.items()}
    train_loss, test_loss = task_loss(model, train, masks, means), task_loss(model, test, masks, means)
    n = len(nodes)
    valid = bool(accept_fn(n, train_loss, test_loss, circuit.target_loss))
    return dataclasses.replace(circuit, kept=kept, train_nodes=n, n_nodes=n if valid else None, train_loss=train_loss,
                               test_loss=test_loss, valid=valid,
                               edges=count_edges(model, kept, train, edge_fn) if valid else None,
                               possible_edges=possible_edges(model, kept, train) if valid else None)


def greedy_shrink(model: SparseTransformer, circuit: Circuit, train: TaskData, test: TaskData,
                  means: dict[str, torch.Tensor], goal: float, edge_fn: EdgeFn = weight_edges,
                  accept_fn: AcceptFn = accept_circuit) -> Circuit:
    """``circuit`` after one pass of backward elimination on the *train* prompts: from its lowest-ranked kept
    node up, a node is dropped (mean-ablated) when the train task loss stays at most ``goal`` without it.
    The result is judged on the held-out prompts as any circuit (:func:`restrict_circuit`). Cost: one forward
    pass per kept node."""
    nodes = list(circuit.kept_nodes)
    masks = {h: m.float() for h, m in circuit.kept.items()}
    for h, c in reversed(list(circuit.kept_nodes)):
        masks[h][c] = 0.0
        if task_loss(model, train, masks, means) <= goal:
            nodes.remove((h, c))
        else:
            masks[h][c] = 1.0
    return restrict_circuit(model, circuit, nodes, train, test, means, edge_fn, accept_fn)


CIRCUIT_CACHE_VERSION = "circuit-v3"  # bump when find_circuit's result changes for the same inputs


def find_circuit_cached(
    model: SparseTransformer, model_name: str, train: TaskData, test: TaskData,
    means: dict[str, torch.Tensor], pcfg: PruneConfig, progress: bool = False,
    mask_fn: MaskFn = hard_mask, accept_fn: AcceptFn = accept_circuit, edge_fn: EdgeFn = weight_edges,
    search_fn: SearchFn = smallest_k,
) -> Circuit:
    """:func:`find_circuit`, its result cached (:func:`course_lib.cache.load_or_build`) under everything
    that decides it: the model's weights, both prompt sets, the ablation means, ``pcfg``, the device
    type, and the source code of ``mask_fn``, ``accept_fn``, ``edge_fn`` and ``search_fn`` (the learner's or the
    library's, :func:`course_lib.cache.code_id`). A function whose source cannot be read is never cached.
    """
    codes = [cache.code_id(f) for f in (mask_fn, accept_fn, edge_fn, search_fn)]
    if None in codes:
        return find_circuit(model, model_name, train, test, means, pcfg, progress, mask_fn, accept_fn, edge_fn,
                            search_fn)
    state = model.state_dict()
    key = {
        "weights": cache.tensor_digest(state[k] for k in sorted(state)), "cfg": model.cfg, "task": train.task,
        "prompts": [cache.tensor_digest([d.tokens, d.last, d.answer_ids]) for d in (train, test)],
        "means": cache.tensor_digest(means[k] for k in sorted(means)), "prune": pcfg, "code": codes,
        "device": next(model.parameters()).device.type,
    }

    def build(folder) -> None:
        c = find_circuit(model, model_name, train, test, means, pcfg, progress, mask_fn, accept_fn, edge_fn, search_fn)
        fields = {f.name: getattr(c, f.name) for f in dataclasses.fields(c) if f.name != "model_name"}
        fields["kept"] = {h: m.cpu() for h, m in c.kept.items()}
        torch.save(fields, folder / "circuit.pt")

    folder = cache.load_or_build("circuit", key, CIRCUIT_CACHE_VERSION, build)
    fields = torch.load(folder / "circuit.pt", weights_only=True)
    dev = next(model.parameters()).device
    fields["kept"] = {h: m.to(dev) for h, m in fields["kept"].items()}
    fields["order"] = [(h, int(ch)) for h, ch in fields["order"]]
    return Circuit(model_name=model_name, **fields)


def zero_means(means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Zeros shaped like ``means``: passing them as means makes pruning *zero*-ablate instead."""
    return {h: torch.zeros_like(m) for h, m in means.items()}


def shuffled_labels(data: TaskData, seed: int = 0) -> TaskData:
    """A nonsense task: the ``(correct, wrong)`` answer pairs permuted across prompts.

    The prompts no longer determine the answer, so no circuit should reach a low loss on
    held-out prompts; one that does on train prompts has memorised or been created by pruning.
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(data.answer_ids.shape[0], generator=g).to(data.answer_ids.device)
    return dataclasses.replace(data, task=f"{data.task} (shuffled)", answer_ids=data.answer_ids[perm])


def flipped_labels(data: TaskData) -> TaskData:
    """A consistent nonsense task: every prompt's correct and wrong answers swapped.

    The rule is deterministic (a circuit *could* exist: "answer the other token"), but no trained model was
    taught it, so a pruned node set that reaches the target on held-out prompts shows that mean-ablation can
    manufacture behaviour: a control that can fail, unlike labels shuffled independently of the prompt (which
    no mechanism can predict on new prompts)."""
    return dataclasses.replace(data, task=f"{data.task} (flipped)", answer_ids=data.answer_ids.flip(1))


@torch.no_grad()
def composition_matched_losses(
    model: SparseTransformer, data: TaskData, kept: dict[str, torch.Tensor], means: dict[str, torch.Tensor],
    allowed: dict[str, torch.Tensor] | None = None, draws: int = 8, seed: int = 0,
) -> list[float]:
    """Task loss on ``data`` of ``draws`` random node sets with the circuit's composition: at every site as many
    nodes as ``kept`` has there, drawn from ``allowed[site]`` (bool mask; e.g. the nodes with a path of nonzero
    weights to the answer logits, :func:`course_lib.circuits.edges.answer_connected`), the rest ablated to
    ``means``. A draw at a site with fewer allowed nodes than the circuit keeps takes all of them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        masks = {}
        for h, m in kept.items():
            pool = torch.nonzero(allowed[h] if allowed is not None else torch.ones_like(m)).flatten().cpu()
            k = min(int(m.sum()), pool.numel())
            pick = pool[torch.randperm(pool.numel(), generator=g)[:k]]
            mm = torch.zeros(m.numel(), device=m.device)
            mm[pick.to(m.device)] = 1.0
            masks[h] = mm
        out.append(task_loss(model, data, masks, means))
    return out


@torch.no_grad()
def random_circuit_losses(
    model: SparseTransformer, data: TaskData, n_nodes: int, means: dict[str, torch.Tensor], draws: int = 8,
    seed: int = 0,
) -> list[float]:
    """Task loss on ``data`` of ``draws`` random node sets of ``n_nodes`` nodes (the rest ablated to ``means``).

    The size-matched control: a found circuit should do much better than a random set of its size.
    """
    sites = node_sites(model)
    everything = [(s.hook, c) for s in sites for c in range(s.size)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        idx = torch.randperm(len(everything), generator=g)[:n_nodes].tolist()
        out.append(task_loss(model, data, masks_from_order(model, [everything[i] for i in idx], n_nodes), means))
    return out


_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\u0120": "\u2423", "\u010a": "\u21b5", "\u0109": "\u21e5"}


def readable_token(text: str) -> str:
    """A token as a person reads it: BPE markers (``Ġ`` space, ``Ċ`` newline) and whitespace as visible signs."""
    return "".join(_VISIBLE.get(ch, ch) for ch in text)


def all_kept(model: SparseTransformer) -> dict[str, torch.Tensor]:
    """Masks keeping every node ``{hook: bool [channels]}`` (the full model)."""
    dev = next(model.parameters()).device
    return {s.hook: torch.ones(s.size, dtype=torch.bool, device=dev) for s in node_sites(model)}


@torch.no_grad()
def node_top_tokens(
    model: SparseTransformer, windows: torch.Tensor, nodes: Sequence[tuple[str, int]], tokenizer, k: int = 3,
    batch_size: int = 16,
) -> dict[tuple[str, int], list[str]]:
    """For each node ``(hook, channel)``: the ``k`` distinct corpus tokens where it is most positive
    (made readable by :func:`readable_token`)."""
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
            s = readable_token(tokenizer.decode([int(flat_tok[idx])]))
            if s not in words:
                words.append(s)
            if len(words) == k:
                break
        out[(h, c)] = words
    return out


@torch.no_grad()
def node_evidence(model: SparseTransformer, circuit: Circuit, data: TaskData, means: dict[str, torch.Tensor],
                  nodes: Sequence[tuple[str, int]] | None = None) -> dict[tuple[str, int], dict[str, float]]:
    """What each kept node does for the task, measured on ``data`` (the notebook uses the fit prompts):

    - ``act_diff``: its mean activation at the answer position on prompts whose correct answer is the task's
      first answer token minus on those whose correct answer is the second (the channel's signed vote);
    - ``ablation``: the circuit's task loss with this node mean-ablated as well, minus the circuit's loss
      (> 0: the circuit needs it).
    """
    nodes = list(nodes if nodes is not None else circuit.kept_nodes)
    hooks = {h for h, _ in nodes}
    masks = {h: m.float() for h, m in circuit.kept.items()}
    acts: dict[str, torch.Tensor] = {}

    def grab(name: str):
        def hook(x, hook):
            acts[name] = x.detach()
        return hook

    rows = torch.arange(data.tokens.shape[0], device=data.tokens.device)
    model.run_with_hooks(data.tokens, fwd_hooks=[(h, grab(h)) for h in hooks])
    first = data.answer_ids[:, 0] == data.answer_ids[0, 0]
    base = task_loss(model, data, masks, means)
    out = {}
    for h, c in nodes:
        a = acts[h][rows, data.last]
        a = a.reshape(a.shape[0], -1)[:, c]
        diff = float(a[first].mean() - a[~first].mean()) if first.any() and (~first).any() else 0.0
        masks[h][c] = 0.0
        out[(h, c)] = {"act_diff": diff, "ablation": task_loss(model, data, masks, means) - base}
        masks[h][c] = 1.0
    return out
