"""Notebook 01's bookkeeping: parameter checks and sizes, and the weight-sparse comparison's table.

The notebook's cells run the experiment (train the toy models, draw them); this module checks the notebook's
own parameters and derives the profile's training sizes (:func:`settings`, :func:`settings_text`), prunes the
trained dense models once for the weight-sparse comparison (:func:`prune_dense_once`, which takes the
learner's ``topk_per_instance``) and assembles that comparison's per-level table (:class:`WeightSparseLevel`,
:func:`weight_sparse_table`) with its text (:func:`weight_sparse_table_text`) and ``metrics.json`` records
(:func:`weight_sparse_records`).

Nothing here prints or displays: the notebook prints the text.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_lib import runtime
from course_lib.toy.model import ToyModel, ToyTrainConfig, evaluate_loss

TopkFn = Callable[[torch.Tensor, int], torch.Tensor]  # (W [I, m, n], k) -> W with k nonzeros per instance
BIG_SWEEP_FEATURE_CHOICES: tuple[int, ...] = (100, 200)  # valid BIG_SWEEP_FEATURES
KEPT_FRACTION_RANGE: tuple[float, float] = (0.01, 1.0)  # valid range of each WEIGHT_SPARSITY_LEVELS entry

# --------------------------------------------------------------------------- parameters and sizes


@dataclasses.dataclass(frozen=True)
class Settings:
    """Notebook 01's validated parameters and the training sizes derived from the run's profile."""

    use_reference_solutions: bool  # True: every exercise runs on the library solution, announced per exercise
    big_sweep_features: int  # n of the n -> 20 sweep of section 4 (100 or 200)
    weight_sparsity_levels: tuple[float, ...]  # distinct kept weight fractions of section 7, densest first
    train: ToyTrainConfig  # sections 2, 3 and the |x| model (Adam at lr 1e-3 needs thousands of steps)
    big_train: ToyTrainConfig  # the n -> 20 sweep, the costliest program: smaller batches
    ws_train: ToyTrainConfig  # the weight-sparse comparison (many instances of 20 -> 5)
    phase_train: ToyTrainConfig  # the 2 -> 1 phase diagram: hundreds of instances, small batches suffice
    priv_train: ToyTrainConfig  # the ReLU-hidden model: it unmixes its neurons slowly, more steps
    widget_train: ToyTrainConfig  # one live retraining of the section-8 widget
    seeds_per_setting: int  # replicate models per setting (the lowest-loss one is kept)
    big_sweep_instances: int  # sparsities of the n -> 20 sweep
    phase_grid: int  # sparsities x importances in the phase diagram (this many of each)
    ws_replicates: int  # instances per weight-sparsity level


def settings(run: runtime.Run, use_reference_solutions: object, big_sweep_features: object,
             weight_sparsity_levels: object) -> Settings:
    """Validate notebook 01's own parameters and derive its training sizes from ``run.profile``.

    Raises :class:`runtime.ParameterError` naming the parameter and its valid values:
    ``USE_REFERENCE_SOLUTIONS`` a bool; ``BIG_SWEEP_FEATURES`` 100 or 200; ``WEIGHT_SPARSITY_LEVELS`` a list or
    tuple of at least 2 kept fractions in ``[0.01, 1.0]``, at least 2 of them different. The smoke profile only
    checks that every code path runs, so it takes few steps at a higher learning rate (lr 1e-2).
    """
    runtime.check_type("USE_REFERENCE_SOLUTIONS", use_reference_solutions, bool)
    runtime.check_choice("BIG_SWEEP_FEATURES", big_sweep_features, BIG_SWEEP_FEATURE_CHOICES)
    runtime.check_type("WEIGHT_SPARSITY_LEVELS", weight_sparsity_levels, (list, tuple))
    levels: Sequence[Any] = weight_sparsity_levels  # type: ignore[assignment]
    if len(levels) < 2:
        raise runtime.ParameterError("WEIGHT_SPARSITY_LEVELS needs at least 2 kept fractions, e.g. [1.0, 0.1]")
    for level in levels:
        runtime.check_range("WEIGHT_SPARSITY_LEVELS entry", level, *KEPT_FRACTION_RANGE)
    if len({float(level) for level in levels}) < 2:
        raise runtime.ParameterError(
            f"WEIGHT_SPARSITY_LEVELS={levels!r} needs at least 2 different kept fractions in [0.01, 1.0], "
            "e.g. [1.0, 0.1]")
    return Settings(
        use_reference_solutions=bool(use_reference_solutions),
        big_sweep_features=int(big_sweep_features),  # type: ignore[call-overload]
        weight_sparsity_levels=tuple(sorted({float(v) for v in levels}, reverse=True)),
        train=run.pick(
            smoke=ToyTrainConfig(steps=300, batch_size=256, lr=1e-2),
            workshop=ToyTrainConfig(steps=4000, batch_size=1024, lr=1e-3),
            full=ToyTrainConfig(steps=10_000, batch_size=1024, lr=1e-3)),
        big_train=run.pick(
            smoke=ToyTrainConfig(steps=200, batch_size=128, lr=1e-2),
            workshop=ToyTrainConfig(steps=2500, batch_size=256, lr=1e-3),
            full=ToyTrainConfig(steps=10_000, batch_size=1024, lr=1e-3)),
        ws_train=run.pick(
            smoke=ToyTrainConfig(steps=300, batch_size=256, lr=1e-2),
            workshop=ToyTrainConfig(steps=3000, batch_size=512, lr=1e-3),
            full=ToyTrainConfig(steps=10_000, batch_size=1024, lr=1e-3)),
        phase_train=run.pick(
            smoke=ToyTrainConfig(steps=300, batch_size=128, lr=1e-2),
            workshop=ToyTrainConfig(steps=3000, batch_size=256, lr=1e-3),
            full=ToyTrainConfig(steps=10_000, batch_size=1024, lr=1e-3)),
        priv_train=run.pick(
            smoke=ToyTrainConfig(steps=300, batch_size=256, lr=1e-2),
            workshop=ToyTrainConfig(steps=8000, batch_size=1024, lr=1e-3),
            full=ToyTrainConfig(steps=20_000, batch_size=1024, lr=1e-3)),
        widget_train=run.pick(
            smoke=ToyTrainConfig(steps=100, batch_size=128, lr=1e-2),
            workshop=ToyTrainConfig(steps=800, batch_size=256, lr=1e-2),
            full=ToyTrainConfig(steps=3000, batch_size=512, lr=3e-3)),
        seeds_per_setting=run.pick(smoke=1, workshop=3, full=4),
        big_sweep_instances=run.pick(smoke=8, workshop=16, full=30),
        phase_grid=run.pick(smoke=4, workshop=10, full=16),
        ws_replicates=run.pick(smoke=2, workshop=4, full=8),
    )


def settings_text(s: Settings, run: runtime.Run) -> str:
    """One line naming the profile, the device and the training steps (main models and the big sweep)."""
    return f"profile={run.profile} device={run.device} steps={s.train.steps} (big sweep {s.big_train.steps})"


# --------------------------------------------------------------------------- section 7: dense vs weight-sparse


@dataclasses.dataclass(frozen=True)
class WeightSparseLevel:
    """One row of the weight-sparse comparison: means over a kept fraction's instances, rounded for the table."""

    kept_fraction: float  # target kept fraction of W (1.0 = dense)
    nonzero_weights: int  # mean fraction of nonzero weights of W, in percent (rounded to an integer)
    features_represented: float  # mean number of features with ||W_f|| > 0.5 (2 decimals)
    features_per_neuron: float  # mean features per feature-carrying hidden dimension (2 decimals)
    interference: float  # mean superposition of the represented features (3 decimals)
    dims_per_feature: float  # mean dimensions per feature D*, clipped (3 decimals)
    loss: float  # mean loss of the models trained sparse (4 decimals)
    loss_pruned_after: float  # mean loss of the dense models pruned once after training to this fraction (4 decimals)


def prune_dense_once(model: ToyModel, kept: Sequence[float], topk_fn: TopkFn) -> torch.Tensor:
    """Loss [I] of the dense models pruned once, after training, to each instance's kept fraction.

    ``kept[i]`` is instance ``i``'s kept fraction; the dense instances are those at ``max(kept)`` (the densest
    level). Instance ``i`` of a copy of ``model`` gets the ``i % n_dense``-th dense instance's ``W`` with
    ``topk_fn(W, max(1, round(kept[i] * m * n)))`` applied, and its ``b_final``; the copy's per-instance loss
    is :func:`evaluate_loss` (a fixed evaluation batch). ``model`` is not changed.
    """
    dense_idx = [i for i, k in enumerate(kept) if k == max(kept)]
    pruned = copy.deepcopy(model)
    n_weights = model.cfg.d_hidden * model.cfg.n_features
    with torch.no_grad():
        for i, k in enumerate(kept):
            d = dense_idx[i % len(dense_idx)]
            pruned.W[i] = topk_fn(model.W[d : d + 1], max(1, round(k * n_weights)))[0]
            pruned.b_final[i] = model.b_final[d]
        return evaluate_loss(pruned)


def with_pruned_loss(rows: Sequence[dict[str, float]], kept: Sequence[float],
                     loss_pruned: torch.Tensor) -> list[dict[str, float]]:
    """The per-instance rows of :func:`course_lib.toy.metrics.summarize` with ``kept_fraction`` (``kept[i]``) and
    ``loss_pruned_after`` (``loss_pruned[i]``, from :func:`prune_dense_once`) added; new dicts, inputs unchanged."""
    return [{**r, "kept_fraction": k, "loss_pruned_after": lp} for r, k, lp in zip(rows, kept, loss_pruned.tolist())]


def weight_sparse_table(rows: Sequence[dict[str, float]], levels: Sequence[float]) -> tuple[WeightSparseLevel, ...]:
    """One :class:`WeightSparseLevel` per kept fraction in ``levels`` (in that order): the mean of each metric
    over the ``rows`` (of :func:`with_pruned_loss`) whose ``kept_fraction`` is that level, rounded."""
    table = []
    for lv in levels:
        rs = [r for r in rows if r["kept_fraction"] == lv]
        mean = {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]}
        table.append(WeightSparseLevel(
            kept_fraction=lv,
            nonzero_weights=round(mean["weight_nonzero_fraction"] * 100),
            features_represented=round(mean["features_represented"], 2),
            features_per_neuron=round(mean["features_per_neuron"], 2),
            interference=round(mean["interference"], 3),
            dims_per_feature=round(mean["dims_per_feature"], 3),
            loss=round(mean["loss"], 4),
            loss_pruned_after=round(mean["loss_pruned_after"], 4),
        ))
    return tuple(table)


def weight_sparse_records(table: Sequence[WeightSparseLevel]) -> list[dict[str, float]]:
    """The table as ``metrics.json`` records: one dict per level, keys in field order."""
    return [dataclasses.asdict(t) for t in table]


def weight_sparse_table_text(table: Sequence[WeightSparseLevel]) -> str:
    """The table as plain text: a header line of the field names joined by `` | ``, then one line per level
    with each value right-aligned to its column name's width."""
    records = weight_sparse_records(table)
    header = [f.name for f in dataclasses.fields(WeightSparseLevel)]
    lines = [" | ".join(header)]
    lines += [" | ".join(f"{t[h]:>{len(h)}}" for h in header) for t in records]
    return "\n".join(lines)


# --------------------------------------------------------------------------- section 2: the learner's loss


def orthogonal_baseline(feature_probability: torch.Tensor, d_hidden: int,
                        n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W [I, m, n], b_final [I, n])`` of the model without superposition: features ``0 .. m-1`` (the most
    important ones when importances decrease with the index) each on its own hidden axis (``W[:, f, f] = 1``), and
    for every other feature the bias outputs its mean ``p_i / 2`` (a present feature is uniform on [0, 1]), the best
    constant guess. Dense data is what the trained models do there; sparse data is where superposition beats it."""
    p = torch.as_tensor(feature_probability, dtype=torch.float32)
    n_inst = p.shape[0]
    W = torch.zeros(n_inst, d_hidden, n_features, device=p.device)
    k = min(d_hidden, n_features)
    W[:, torch.arange(k), torch.arange(k)] = 1.0
    b = (p / 2).unsqueeze(1).expand(n_inst, n_features).clone()
    b[:, :k] = 0.0
    return W, b


def loss_markdown(sparsities: Sequence[float], loss: torch.Tensor, loss_baseline: torch.Tensor,
                  batch_size: int, d_hidden: int) -> str:
    """Markdown: the trained models' loss (from the learner's ``forward_and_loss``) against the loss of
    :func:`orthogonal_baseline` on the same batch, at the densest and the sparsest setting, and the first sparsity
    where the trained model is at least 5% better."""
    loss, base = loss.detach().cpu().double(), loss_baseline.detach().cpu().double()
    ratio = (loss / base.clamp_min(1e-12)).tolist()
    text = (f"Your `forward_and_loss` on a fresh batch of {batch_size} inputs per model (drawn by your "
            f"`generate_batch`), lowest-loss model per sparsity, against the model without superposition (the "
            f"{d_hidden} most important features on their own axes, the bias guessing each other feature's mean): at "
            f"S = {sparsities[0]:.2f} the trained loss is {float(loss[0]):.4f} against {float(base[0]):.4f} "
            f"(ratio {ratio[0]:.2f}); at S = {sparsities[-1]:.3f} it is {float(loss[-1]):.4f} against "
            f"{float(base[-1]):.4f} (ratio {ratio[-1]:.2f}).")
    better = [i for i, r in enumerate(ratio) if r < 0.95]
    if better:
        every = better == list(range(better[0], len(ratio)))
        text += (f" From S = {sparsities[better[0]]:.2f} on{'' if every else ' (not at every sparser setting)'} the "
                 "trained model beats that baseline by 5% or more: that is the loss superposition saves.")
    else:
        text += " At no sparsity does the trained model beat that baseline by 5% or more in this run."
    return text
