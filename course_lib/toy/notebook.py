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
from course_lib.toy import metrics
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



# --------------------------------------------------------------------------- section 4: which fractions stick


PAPER_FRACTIONS: tuple[tuple[float, str], ...] = (
    (1.0, "1"), (3 / 4, "3/4"), (2 / 3, "2/3"), (1 / 2, "1/2"), (2 / 5, "2/5"), (3 / 8, "3/8"),
)  # the fractions at which the paper reports that dimensions per feature and D_f stick (the figure's grey lines)


@dataclasses.dataclass(frozen=True)
class FractionCount:
    """How often one reference value is the nearest, within tolerance, to the sweep's ``D*`` and ``D_f`` values."""

    label: str  # "1/2", or "m/n" for the floor
    value: float  # the fraction itself
    sparsities_near: int  # sparsities whose D* is nearest to this value and within the curve tolerance
    longest_run: int  # longest run of consecutive such sparsities (2 or more: a plateau)
    inverse_densities: tuple[float, ...]  # 1/(1-S) of those sparsities
    dots_near: int  # represented features, over all sparsities, whose D_f is nearest to this value, within tolerance
    sparsities_piled: int  # sparsities where at least half of the represented features' D_f are near this value


@dataclasses.dataclass(frozen=True)
class StickyReading:
    """What the n -> m sweep of section 4 shows: which fractions its curve and its dots sit at, and the floor."""

    n_features: int  # n
    d_hidden: int  # m
    n_sparsities: int  # instances of the sweep, one model each
    steps: int  # training steps of the sweep
    batch_size: int  # samples per instance per step
    spacing: float  # ratio of consecutive 1/(1-S) values
    curve_tolerance: float  # |D* - value| counted as near
    dot_tolerance: float  # |D_f - value| counted as near
    dots_total: int  # represented features (norm > 0.5) over all sparsities
    fractions: tuple[FractionCount, ...]  # the paper's fractions, largest first
    floor: FractionCount  # the value m/n (label "m/n")
    dense_dims_per_feature: float  # D* at the densest sparsity
    dense_represented: int  # features represented there
    dense_median_dimensionality: float  # median D_f of those features
    sparsest_represented: int  # features represented at the sparsest sparsity
    sparsest_min_norm: float  # smallest ||W_f|| there
    sparsest_dims_per_feature: float  # clipped D* there
    sparsest_dims_per_feature_raw: float  # the paper's unclipped m / ||W||_F^2 there
    sparsest_dimensionality_sum: float  # sum over features of D_f there
    sparsest_median_dimensionality: float  # median D_f of the represented features there


def _runs(flags: Sequence[bool]) -> int:
    best = cur = 0
    for f in flags:
        cur = cur + 1 if f else 0
        best = max(best, cur)
    return best


def sticky_reading(feature_probability: torch.Tensor, W: torch.Tensor, train: ToyTrainConfig,
                   feature_dimensionality: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   curve_tolerance: float = 0.05, dot_tolerance: float = 0.02,
                   threshold: float = 0.5) -> StickyReading:
    """Count, per reference value, the sparsities whose ``D*`` and the features whose ``D_f`` sit near it.

    ``feature_probability``: [I], densest first; ``W``: [I, m, n]. The reference values are
    :data:`PAPER_FRACTIONS` and the floor ``m / n``; each ``D*`` (clipped, :func:`metrics.dimensions_per_feature`)
    and each represented feature's ``D_f`` (norm > ``threshold``) counts for the nearest value only, and only
    within its tolerance. ``feature_dimensionality`` defaults to :func:`metrics.feature_dimensionality`.
    """
    fd = feature_dimensionality or metrics.feature_dimensionality
    W = W.detach().float().cpu()
    p = torch.as_tensor(feature_probability, dtype=torch.float32).cpu()
    n_inst, m, n = W.shape
    dpf = metrics.dimensions_per_feature(W)
    raw = metrics.dimensions_per_feature(W, clip=False)
    Df = fd(W).detach().float()
    norms = metrics.feature_norms(W)
    rep = norms > threshold
    refs = [*PAPER_FRACTIONS, (m / n, "m/n")]
    values = torch.tensor([v for v, _ in refs])

    def nearest(x: torch.Tensor, tol: float) -> torch.Tensor:  # index into refs, -1 when none is within tol
        d = (x.unsqueeze(-1) - values).abs()
        best = d.argmin(-1)
        return torch.where(d.gather(-1, best.unsqueeze(-1)).squeeze(-1) <= tol, best, torch.full_like(best, -1))

    curve = nearest(dpf, curve_tolerance)
    dots = nearest(Df, dot_tolerance)
    counts = []
    for j, (value, label) in enumerate(refs):
        on = [bool(c == j) for c in curve]
        near_dots = (dots == j) & rep
        piled = sum(int(near_dots[i].sum()) * 2 >= int(rep[i].sum()) > 0 for i in range(n_inst))
        counts.append(FractionCount(label, value, sum(on), _runs(on),
                                    tuple(round(1 / float(p[i]), 2) for i in range(n_inst) if on[i]),
                                    int(near_dots.sum()), piled))
    last = rep[-1]
    ratios = (p[:-1] / p[1:]).tolist()
    return StickyReading(
        n_features=n, d_hidden=m, n_sparsities=n_inst, steps=train.steps, batch_size=train.batch_size,
        spacing=round(sum(ratios) / len(ratios), 2) if ratios else 1.0,
        curve_tolerance=curve_tolerance, dot_tolerance=dot_tolerance, dots_total=int(rep.sum()),
        fractions=tuple(counts[:-1]), floor=counts[-1],
        dense_dims_per_feature=round(float(dpf[0]), 3), dense_represented=int(rep[0].sum()),
        dense_median_dimensionality=round(float(Df[0][rep[0]].median()), 2) if bool(rep[0].any()) else 0.0,
        sparsest_represented=int(last.sum()), sparsest_min_norm=round(float(norms[-1].min()), 2),
        sparsest_dims_per_feature=round(float(dpf[-1]), 3),
        sparsest_dims_per_feature_raw=round(float(raw[-1]), 3),
        sparsest_dimensionality_sum=round(float(Df[-1].sum()), 2),
        sparsest_median_dimensionality=round(float(Df[-1][last].median()), 2) if bool(last.any()) else 0.0,
    )


def sticky_records(r: StickyReading) -> dict[str, dict[str, int]]:
    """``metrics.json`` record: per reference value, the sparsities near it, its longest run and the dots near it."""
    return {c.label: {"sparsities_near": c.sparsities_near, "longest_run": c.longest_run, "dots_near": c.dots_near,
                      "sparsities_piled": c.sparsities_piled} for c in (*r.fractions, r.floor)}


def _names(cs: Sequence[FractionCount]) -> str:
    names = [c.label for c in cs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def sticky_markdown(r: StickyReading) -> str:
    """The sweep's reading as Markdown: a table of the counts, which fractions stick and which do not, the floor
    ``m/n`` and what it is, and why the sweep may miss finer plateaus (stated as untested possibilities)."""
    rows = [f"| value | sparsities with D* nearest it (within {r.curve_tolerance}) | longest run "
            f"| dots nearest it (within {r.dot_tolerance}) | sparsities with half their dots there |",
            "| --- | --- | --- | --- | --- |"]
    for c in (*r.fractions, r.floor):
        label = f"m/n = {c.value:.2g}" if c is r.floor else c.label
        rows.append(f"| {label} | {c.sparsities_near} of {r.n_sparsities} | {c.longest_run} | "
                    f"{c.dots_near} of {r.dots_total} | {c.sparsities_piled} |")
    plateaus = [c for c in r.fractions if c.longest_run >= 2]
    crossed = [c for c in r.fractions if c.sparsities_near and c.longest_run < 2]
    absent = [c for c in r.fractions if not c.sparsities_near]
    piled = [c for c in r.fractions if c.sparsities_piled]
    out = ["**What this run shows.** Each `D*` on the black curve and each orange dot is counted for the value "
           "it is nearest to, if it is within the tolerance:", "", *rows, ""]
    if plateaus:
        out.append("* **Plateaus** (the curve near the same value at 2 or more sparsities in a row): "
                   + "; ".join(f"{c.label}, {c.longest_run} sparsities in a row (1/(1-S) = "
                               f"{', '.join(f'{x:g}' for x in c.inverse_densities)})" for c in plateaus) + ".")
    else:
        out.append("* **No plateau** at any of the paper's fractions: the curve is never near the same one at "
                   "2 sparsities in a row.")
    if crossed:
        out.append(f"* **Passed, not held:** the curve comes near {_names(crossed)} at a single sparsity; one "
                   "point of the sweep cannot tell a plateau from a crossing.")
    if absent:
        out.append(f"* **Not seen:** the curve is never within {r.curve_tolerance} of {_names(absent)}.")
    if piled:
        out.append(f"* **Dots on a grey line:** at least half of one sparsity's dots sit at {_names(piled)} ("
                   + ", ".join(f"{c.label}: {c.sparsities_piled} sparsities" for c in piled) + "). At the other "
                   "fractions the dots do not pile up in this run.")
    else:
        out.append("* **Dots:** at no sparsity do half of the dots sit at one of the paper's fractions.")
    f = r.floor
    floor = (f"* **The floor m/n = {r.d_hidden}/{r.n_features} = {f.value:.2g}** (the dotted line; the curve is "
             f"nearest it at {f.sparsities_near} sparsities). It is not one of the paper's geometric fractions. "
             f"`D* = m / Σ_f min(‖W_f‖², 1)` and each feature adds at most 1 to the denominator, so `D*` can never "
             f"fall below m/n: the value it takes when all n features are stored with norm 1 or more. ")
    if r.sparsest_represented == r.n_features and r.sparsest_min_norm >= 1:
        floor += (f"At the sparsest setting that is what happens: all {r.n_features} features are represented "
                  f"(smallest norm {r.sparsest_min_norm:.2f}), so `D*` = {r.sparsest_dims_per_feature:.3g}; the "
                  "sweep has run out of features to add. ")
    else:
        floor += (f"At the sparsest setting {r.sparsest_represented} of {r.n_features} features are represented "
                  f"(smallest norm {r.sparsest_min_norm:.2f}) and `D*` = {r.sparsest_dims_per_feature:.3g}. ")
    floor += (f"The paper's unclipped `m / ‖W‖_F²` (blue) there is {r.sparsest_dims_per_feature_raw:.3g}: it can "
              "go below m/n when norms exceed 1.")
    if f.sparsities_piled:
        floor += (f" The dots sit at m/n too (at {f.sparsities_piled} sparsities at least half of them; at the "
                  f"sparsest, median `D_f` {r.sparsest_median_dimensionality:.2f}, and the {r.n_features} `D_f` sum "
                  f"to {r.sparsest_dimensionality_sum:.2f}, against m = {r.d_hidden}): the m dimensions shared about "
                  "equally among all n features.")
    floor += " With more features the floor is lower (`BIG_SWEEP_FEATURES = 200`: m/n = 0.1)."
    out.append(floor)
    left = (f"* **Far left:** `D*` = {r.dense_dims_per_feature:.3g} at the densest setting, with "
            f"{r.dense_represented} features represented, median `D_f` {r.dense_median_dimensionality:.2f}")
    if r.dense_represented > r.d_hidden:
        left += (f": more features than the m = {r.d_hidden} dimensions, the median one owning "
                 f"{r.dense_median_dimensionality:.2f} of a dimension. With dense, equally important features there "
                 "is no unique top m, so the model spreads its dimensions over more features than m.")
    out.append(left + ("" if left.endswith(".") else "."))
    out.append(
        f"* **Why finer plateaus may be missing here** (possibilities this run does not test): the sweep has "
        f"{r.n_sparsities} sparsities, each 1/(1-S) about {r.spacing:g} times the previous one, so a plateau "
        f"narrower than that is hit at most once; each sparsity is a single model from one seed (no best of "
        f"several as in section 2), trained {r.steps} steps with batches of {r.batch_size}; a model that "
        "settles in a local optimum stays there. `PROFILE = \"full\"` trains longer on more sparsities.")
    return "\n".join(out)


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


def _trend(values: Sequence[float], up: str, down: str) -> str:
    steps = [b - a for a, b in zip(values, values[1:])]
    if all(d > 0 for d in steps):
        return f"{up} at every step"
    if all(d < 0 for d in steps):
        return f"{down} at every step"
    if values[-1] > values[0]:
        return f"{up} overall, not at every step"
    if values[-1] < values[0]:
        return f"{down} overall, not at every step"
    return "ends where it starts"


def weight_sparse_markdown(table: Sequence[WeightSparseLevel], rows: Sequence[dict[str, float]], d_hidden: int,
                           n_features: int) -> str:
    """The weight-sparse table's reading, as Markdown, from its own numbers (densest level first): features
    represented, interference, features per neuron, what ``dims_per_feature`` means once the weight budget is at
    most ``d_hidden`` weights, the loss of training sparse against pruning once, and empty hidden dimensions
    (``dead_dimensions`` of the per-instance ``rows`` of :func:`with_pruned_loss`)."""
    dense, sparse = table[0], table[-1]

    def col(name: str) -> list[float]:
        return [float(getattr(t, name)) for t in table]

    def dead(level: float) -> float:
        rs = [r["dead_dimensions"] for r in rows if r["kept_fraction"] == level]
        return sum(rs) / len(rs)

    k = round(sparse.nonzero_weights / 100 * d_hidden * n_features)
    out = [f"**What this run's table says** (means per kept fraction, dense {dense.kept_fraction:g} to sparsest "
           f"{sparse.kept_fraction:g}):", ""]
    out.append(f"* **Features represented** {dense.features_represented:g} → {sparse.features_represented:g} "
               f"({_trend(col('features_represented'), 'rises', 'falls')}); **interference** "
               f"{dense.interference:g} → {sparse.interference:g} ({_trend(col('interference'), 'rises', 'falls')}).")
    fpn = (f"* **Features per neuron** {dense.features_per_neuron:g} → {sparse.features_per_neuron:g} "
           f"({_trend(col('features_per_neuron'), 'rises', 'falls')})")
    if sparse.features_per_neuron > 1:
        fpn += ": above 1 even at the sparsest level, so some hidden dimensions there still carry two or more features."
    out.append(fpn + ("" if fpn.endswith(".") else "."))
    if k <= d_hidden:
        interf = (f"is {sparse.interference:g} there: represented features still share directions, so superposition "
                  "is reduced, not gone." if sparse.interference > 0.01 else
                  f"is {sparse.interference:g} there: the represented features are (nearly) orthogonal.")
        out.append(
            f"* **`dims_per_feature` at the sparsest level ({sparse.dims_per_feature:g}) is set by the weight "
            f"budget.** About {k} nonzero weights for m = {d_hidden} dimensions: each nonzero weight adds at most 1 to "
            f"`Σ_f min(‖W_f‖², 1)`, so `D* = m / Σ_f min(‖W_f‖², 1)` is at least m/{k} = {d_hidden / k:g} by "
            "construction, whatever the model learns. That number measures the budget, not an absence of "
            "superposition. The "
            "`interference` column (mean over represented features of `Σ_(g≠f) (Ŵ_f · W_g)²`, 0 only for "
            f"orthogonal features) {interf}")
    else:
        out.append(f"* **`dims_per_feature`** {dense.dims_per_feature:g} → {sparse.dims_per_feature:g} "
                   f"({_trend(col('dims_per_feature'), 'rises', 'falls')}).")
    better = sum(t.loss < t.loss_pruned_after for t in table[1:])
    out.append(
        f"* **Loss** of the models trained sparse {dense.loss:g} → {sparse.loss:g} "
        f"({_trend(col('loss'), 'rises', 'falls')}). Pruning the dense models once after training (the last "
        f"column, `loss_pruned_after`) gives a higher loss than training sparse at {better} of the "
        f"{len(table) - 1} sparser levels.")
    out.append(f"* **Empty hidden dimensions** (all weights zero): {dead(dense.kept_fraction):g} per model dense, "
               f"{dead(sparse.kept_fraction):g} at the sparsest level.")
    return "\n".join(out)
