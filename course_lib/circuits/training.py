"""Training the weight-sparse transformer (notebook 02) and caching the trained models.

Adam on random windows of the corpus's token stream, linear warmup then linear decay to 10% of the
peak learning rate; after every step every sparsified tensor keeps its top-k entries by magnitude
(:func:`course_lib.weight_sparsity.project_topk`), the kept fraction annealing from 1 to
``target_fraction`` (:func:`course_lib.weight_sparsity.kept_fraction`). Notebook 02 passes its learners'
versions of these two functions (``fraction_fn``, ``project_fn``). Trained models are cached by
``(model config, train config, data key)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from course_lib import cache, corpus, weight_sparsity
from course_lib.circuits.transformer import SparseTransformer, SparseTransformerConfig

VERSION = "sparse-transformer-v1"
FractionFn = Callable[[int, int, float, float, float], float]  # (step, total, target, start, end) -> kept fraction
ProjectFn = Callable[[torch.Tensor, float], torch.Tensor]  # (tensor, kept fraction) -> projected copy


@dataclasses.dataclass(frozen=True)
class CircuitTrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # windows per step
    lr: float = 3e-3  # peak Adam learning rate (warmup, then linear decay to 10%)
    warmup_frac: float = 0.01  # fraction of steps of linear warmup
    betas: tuple[float, float] = (0.9, 0.95)  # Adam betas (as in the paper's public script)
    grad_clip: float = 1.0  # clip the global gradient norm to this
    target_fraction: float = 1.0  # kept fraction of every sparsified tensor at the end (1.0 = dense)
    anneal_start: float = 0.01  # fraction of training where the kept fraction starts to fall
    anneal_end: float = 0.5  # fraction of training where it reaches target_fraction
    seed: int = 0  # init and batch order
    eval_windows: int = 64  # validation windows for the final validation loss
    anneal_shape: str = "linear"  # "linear" (kept fraction falls linearly) or "geometric" (its log does)
    embed_fraction: float | None = None  # kept fraction of the embedding, unembedding and its bias (None: as the rest)

    def __post_init__(self) -> None:
        if self.anneal_shape not in weight_sparsity.ANNEAL_SHAPES:
            raise ValueError(f"anneal_shape={self.anneal_shape!r}; valid: {sorted(weight_sparsity.ANNEAL_SHAPES)}")
        if self.embed_fraction is not None and not 0 < self.embed_fraction <= 1:
            raise ValueError(f"embed_fraction={self.embed_fraction!r}; valid: None or a number in (0, 1]")


EMBEDDING_PARAMETERS = ("W_E", "W_U", "b_U", "W_pos")  # what ``embed_fraction`` applies to


def sparse_groups(model: SparseTransformer, tcfg: CircuitTrainConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(blocks, embeddings)``: the sparsified tensors kept at ``target_fraction`` and those kept at
    ``embed_fraction`` (empty when it is None: then every sparsified tensor is in the first list)."""
    params = model.sparsified_parameters()
    if tcfg.embed_fraction is None:
        return list(params.values()), []
    return ([p for n, p in params.items() if n not in EMBEDDING_PARAMETERS],
            [p for n, p in params.items() if n in EMBEDDING_PARAMETERS])


def lr_at(step: int, tcfg: CircuitTrainConfig) -> float:
    """Linear warmup over ``warmup_frac`` of training, then linear decay to 10% of the peak."""
    warm = max(1, int(tcfg.warmup_frac * tcfg.steps))
    if step < warm:
        return tcfg.lr * (step + 1) / warm
    u = (step - warm) / max(1, tcfg.steps - warm)
    return tcfg.lr * (1.0 - 0.9 * u)


@torch.no_grad()
def eval_loss(model: SparseTransformer, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy over ``windows [n, seq_len + 1]``."""
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch_size):
        w = windows[i : i + batch_size].to(dev)
        logits = model(w[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum"))
        count += w[:, 1:].numel()
    return total / max(count, 1)


def train_step(model: SparseTransformer, opt: torch.optim.Optimizer, batch: torch.Tensor, step: int,
               tcfg: CircuitTrainConfig, sparse: list[torch.Tensor],
               fraction_fn: FractionFn = weight_sparsity.kept_fraction,
               project_fn: ProjectFn = weight_sparsity.project_topk,
               embed: list[torch.Tensor] | None = None) -> tuple[float, float]:
    """One training step on ``batch [b, n_ctx + 1]`` (inputs and next-token targets), in place.

    Learning rate ``lr_at(step)``; next-token cross-entropy; gradients clipped to norm ``tcfg.grad_clip``;
    Adam; then every tensor in ``sparse`` becomes ``project_fn(p, f)`` with the kept fraction
    ``f = fraction_fn(step, ...)`` (nothing while ``f`` is 1), and every tensor in ``embed`` (see
    :func:`sparse_groups`) the same with ``tcfg.embed_fraction`` as its target. ``tcfg.anneal_shape ==
    "geometric"`` replaces ``fraction_fn`` by :func:`course_lib.weight_sparsity.kept_fraction_geometric`.
    Returns ``(loss, f)``. The one step of both :func:`train` and the resumable reference trainer.
    """
    for g in opt.param_groups:
        g["lr"] = lr_at(step, tcfg)
    logits = model(batch[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
    opt.step()
    if tcfg.anneal_shape != "linear":
        fraction_fn = weight_sparsity.ANNEAL_SHAPES[tcfg.anneal_shape]
    frac = fraction_fn(step, tcfg.steps, tcfg.target_fraction, tcfg.anneal_start, tcfg.anneal_end)
    groups = [(sparse, frac)]
    if embed:
        groups.append((embed, fraction_fn(step, tcfg.steps, tcfg.embed_fraction or 1.0, tcfg.anneal_start,
                                          tcfg.anneal_end)))
    with torch.no_grad():
        for tensors, f in groups:
            if f < 1.0:
                for p in tensors:
                    p.copy_(project_fn(p, f))
    return float(loss.detach()), frac


def train(
    model: SparseTransformer,
    stream: torch.Tensor,
    tcfg: CircuitTrainConfig,
    progress: bool = True,
    fraction_fn: FractionFn = weight_sparsity.kept_fraction,
    project_fn: ProjectFn = weight_sparsity.project_topk,
) -> dict[str, list[float]]:
    """Train on random windows of ``stream [n_tokens]``; project weights to top-k after each step.

    After optimizer step ``step`` every sparsified tensor ``p`` becomes ``project_fn(p, f)`` with the kept
    fraction ``f = fraction_fn(step, tcfg.steps, tcfg.target_fraction, tcfg.anneal_start, tcfg.anneal_end)``
    (nothing to do while ``f`` is 1). Returns ``{"step": [...], "loss": [...], "kept_fraction": [...]}``
    (logged every few steps).
    """
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(tcfg.seed)
    batches = corpus.random_batches(stream, model.cfg.n_ctx, tcfg.batch_size, gen)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=tcfg.betas)
    weight_sparsity.SparsitySchedule(tcfg.target_fraction, tcfg.anneal_start, tcfg.anneal_end)  # checks the values
    sparse, embed = sparse_groups(model, tcfg)
    log: dict[str, list[float]] = {"step": [], "loss": [], "kept_fraction": []}
    every = max(1, tcfg.steps // 100)
    bar = tqdm(range(tcfg.steps), desc=f"train (keep {tcfg.target_fraction:g})", disable=not progress)
    ema = None
    for step in bar:
        lv, frac = train_step(model, opt, next(batches).to(dev), step, tcfg, sparse, fraction_fn, project_fn, embed)
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if step % every == 0 or step == tcfg.steps - 1:
            log["step"].append(step)
            log["loss"].append(lv)
            log["kept_fraction"].append(frac)
            bar.set_postfix(loss=f"{ema:.3f}", keep=f"{frac:.3f}")
    return log


@dataclasses.dataclass
class TrainedModel:
    """A trained (or freshly initialised) model with what the notebook reports about it."""

    name: str  # e.g. "dense", "sparse 0.1", "random init"
    model: SparseTransformer
    val_loss: float  # next-token cross-entropy on held-out files
    nonzero_fraction: float  # measured over the sparsified tensors of the weights
    log: dict[str, list[float]]  # training curve
    folder: Path | None  # cache folder holding model.safetensors (None: not cached)


def val_windows(val_stream: torch.Tensor, seq_len: int, n: int) -> torch.Tensor:
    """The first ``n`` consecutive windows ``[n, seq_len + 1]`` of the validation stream."""
    w = corpus.windows(val_stream, seq_len + 1)
    return w[:n]


def load_or_train(
    name: str,
    mcfg: SparseTransformerConfig,
    tcfg: CircuitTrainConfig,
    train_stream: torch.Tensor,
    val_stream: torch.Tensor,
    data_key: object,
    device: torch.device | str = "cpu",
    progress: bool = True,
    fraction_fn: FractionFn = weight_sparsity.kept_fraction,
    project_fn: ProjectFn = weight_sparsity.project_topk,
) -> TrainedModel:
    """Train (or load from the cache) one model; the cache key is (configs, data_key, VERSION).

    The cache folder holds ``model.safetensors`` (weights) and ``train_log.json`` (curve, losses).
    ``tcfg.steps == 0`` gives the randomly initialised model (the pruning control). ``fraction_fn`` and
    ``project_fn`` (see :func:`train`) are used only when the model is trained here; they are not part of
    the cache key, so a replacement must compute what the library's do (notebook 02's checkers test that).
    """

    def build(folder: Path) -> None:
        torch.manual_seed(tcfg.seed)
        model = SparseTransformer(mcfg).to(device)
        log = train(model, train_stream, tcfg, progress, fraction_fn, project_fn) if tcfg.steps > 0 else {}
        vloss = eval_loss(model, val_windows(val_stream, mcfg.n_ctx, tcfg.eval_windows))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "train_log.json").write_text(json.dumps({"log": log, "val_loss": vloss}))

    key = {"model": mcfg, "train": tcfg, "data": data_key}
    folder = cache.load_or_build("sparse_transformer", key, VERSION, build)
    model = SparseTransformer(mcfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.to(device).eval()
    meta = json.loads((folder / "train_log.json").read_text())
    nz = weight_sparsity.nonzero_fraction(model.sparsified_parameters().values())
    return TrainedModel(name, model, float(meta["val_loss"]), nz, meta["log"], folder)


def checkpoint_nonzero_fraction(folder: Path) -> float:
    """Fraction of nonzero entries of the sparsified tensors, read from ``model.safetensors``."""

    state = load_file(str(Path(folder) / "model.safetensors"))
    skip = ("ln", "sink", "W_bigram")
    return weight_sparsity.nonzero_fraction(v for k, v in state.items() if not any(s in k for s in skip))
