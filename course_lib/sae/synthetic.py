"""Synthetic activations with known features: ground truth for the SAE code of notebook 03.

The toy-model picture of notebook 01 (Elhage et al. 2022), handed to an SAE. ``n_features`` unit
directions ``f_i`` live in ``d < n_features`` dimensions (superposition); each sample is a sparse,
non-negative combination of them plus a little isotropic noise:

    x = sum_i c_i f_i + noise          x [N, d], features F [n_features, d] (unit rows), codes c [N, n_features] >= 0

A feature that fires has magnitude ``c_i ~ U[magnitude_low, magnitude_high]``; one that does not has
``c_i = 0``. Three ways the features fire, all with the same expected number of active features per
sample, ``L0 = n_features * p_fire``:

* ``independent``: each feature fires with probability ``p_fire``, independently of the others.
* ``correlated``: the same marginals, but features in consecutive groups of ``group_size`` tend to fire
  together (a Gaussian copula): ``u_i = sqrt(rho) g_group + sqrt(1 - rho) e_i`` with ``g, e ~ N(0, 1)``,
  and feature ``i`` fires iff ``u_i > Phi^-1(1 - p_fire)``.
* ``hierarchical``: the first ``n_parents = n_features / (1 + children_per_parent)`` features are parents,
  the rest their children (parent ``j`` owns features ``n_parents + j * C ... + C - 1``, ``C =
  children_per_parent``). Parent ``j`` fires with probability ``p_parent``; when it fires, with
  probability ``child_given_parent`` exactly one of its children (uniform) fires too. A child never fires
  without its parent, so ``x`` then holds ``parent direction + child direction``: the structure that
  invites *feature absorption* (Chanin et al. 2024), a child latent that swallows the parent's direction
  so that the parent latent stays off whenever the child fires. ``p_parent`` is set so that the expected
  L0 matches the other kinds: ``n_parents * p_parent * (1 + child_given_parent) = n_features * p_fire``.

:func:`hierarchy` gives the parent/children index groups of any config (for ``independent`` and
``correlated`` they are the same groups with no dependence: the control for absorption metrics).
:func:`load_or_train_synthetic` trains the course's own SAE (:func:`course_lib.sae.train_sae`) on the data,
cached by config; :mod:`course_lib.sae.recovery` scores what it found.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from tqdm.auto import tqdm

from course_lib import cache, runtime
from course_lib.sae.evaluation import seed_summary
from course_lib.sae.model import SAEConfig, SparseAutoencoder
from course_lib.sae.recovery import recovery_metrics
from course_lib.sae.saelens_io import load_saelens, save_saelens
from course_lib.sae.training import SAETrainConfig, train_sae

DataKind = Literal["independent", "correlated", "hierarchical"]
DATA_KINDS: tuple[str, ...] = get_args(DataKind)
_VERSION = "synthetic-v2"


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    kind: DataKind = "independent"  # how features co-fire: "independent", "correlated", "hierarchical"
    d: int = 32  # dimension of the activation space
    n_features: int = 64  # true features (> d: superposition)
    p_fire: float = 0.03  # marginal firing probability per feature (expected L0 = n_features * p_fire)
    magnitude_low: float = 0.5  # an active feature's coefficient ~ U[magnitude_low, magnitude_high]
    magnitude_high: float = 1.5
    noise: float = 0.01  # std of isotropic Gaussian noise added to every coordinate
    group_size: int = 4  # correlated: features per co-firing group
    rho: float = 0.7  # correlated: copula correlation inside a group (0 = independent)
    children_per_parent: int = 3  # hierarchical: children of each parent (mutually exclusive)
    child_given_parent: float = 0.75  # hierarchical: P(one child fires | parent fires)
    n_train: int = 8_192  # training samples
    n_eval: int = 4_096  # held-out samples (same features, fresh codes)
    seed: int = 0  # feature directions and codes

    def __post_init__(self) -> None:
        runtime.check_choice("kind", self.kind, DATA_KINDS)
        if not 0 < self.p_fire < 1:
            raise runtime.ParameterError(f"p_fire={self.p_fire} must be in (0, 1)")
        if self.n_features % self.group_size or self.n_features % (1 + self.children_per_parent):
            raise runtime.ParameterError(
                f"n_features={self.n_features} must be a multiple of group_size={self.group_size} and of "
                f"1 + children_per_parent={1 + self.children_per_parent}")
        if self.kind == "hierarchical" and not 0 < self.p_parent <= 1:
            raise runtime.ParameterError(f"p_parent={self.p_parent:.3f} must be in (0, 1]: lower p_fire or "
                                         "raise child_given_parent")

    @property
    def n_parents(self) -> int:
        return self.n_features // (1 + self.children_per_parent)

    @property
    def p_parent(self) -> float:
        """Hierarchical: a parent's firing probability (matches the expected L0 of the other kinds)."""
        return self.n_features * self.p_fire / (self.n_parents * (1 + self.child_given_parent))

    @property
    def expected_l0(self) -> float:
        return self.n_features * self.p_fire


@dataclasses.dataclass(frozen=True)
class SyntheticData:
    """Samples with their ground truth: ``x = codes @ features + noise``."""

    cfg: SyntheticConfig
    features: torch.Tensor  # [n_features, d] unit rows, the true directions
    x_train: torch.Tensor  # [n_train, d]
    codes_train: torch.Tensor  # [n_train, n_features] >= 0
    x_eval: torch.Tensor  # [n_eval, d]
    codes_eval: torch.Tensor  # [n_eval, n_features] >= 0


def hierarchy(cfg: SyntheticConfig) -> list[tuple[int, list[int]]]:
    """``[(parent, [children...]), ...]``: the parent/children index groups (see the module docstring)."""
    p, c = cfg.n_parents, cfg.children_per_parent
    return [(j, list(range(p + j * c, p + (j + 1) * c))) for j in range(p)]


def _fires(cfg: SyntheticConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """Bool ``[n, n_features]``: which features fire in each sample."""
    f = cfg.n_features
    if cfg.kind == "independent":
        return torch.rand(n, f, generator=gen) < cfg.p_fire
    if cfg.kind == "correlated":
        shared = torch.randn(n, f // cfg.group_size, generator=gen).repeat_interleave(cfg.group_size, dim=1)
        u = math.sqrt(cfg.rho) * shared + math.sqrt(1 - cfg.rho) * torch.randn(n, f, generator=gen)
        return u > float(torch.special.ndtri(torch.tensor(1 - cfg.p_fire, dtype=torch.float64)))
    p, c = cfg.n_parents, cfg.children_per_parent
    parent = torch.rand(n, p, generator=gen) < cfg.p_parent
    child_on = parent & (torch.rand(n, p, generator=gen) < cfg.child_given_parent)
    pick = torch.randint(c, (n, p), generator=gen)
    children = torch.zeros(n, p, c, dtype=torch.bool)
    children.scatter_(2, pick.unsqueeze(-1), child_on.unsqueeze(-1))
    return torch.cat([parent, children.reshape(n, p * c)], dim=1)


def _sample(cfg: SyntheticConfig, features: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    on = _fires(cfg, n, gen)
    mags = cfg.magnitude_low + (cfg.magnitude_high - cfg.magnitude_low) * torch.rand(n, cfg.n_features, generator=gen)
    codes = torch.where(on, mags, torch.zeros(()))
    x = codes @ features + cfg.noise * torch.randn(n, cfg.d, generator=gen)
    return x, codes


def _data_seed(seed: int) -> int:
    """The data generator's seed for ``seed``: far from small integers, so that an SAE seeded with the same
    small integer (``torch.Generator().manual_seed(seed)`` draws its random decoder first) never starts
    with the true feature directions as its decoder."""
    return (0x5EED_DA7A_0000 + 1_000_003 * seed) % 2**62


def make_data(cfg: SyntheticConfig) -> SyntheticData:
    """Draw the feature directions (random unit vectors), then training and held-out samples (seeded)."""
    gen = torch.Generator().manual_seed(_data_seed(cfg.seed))
    features = torch.randn(cfg.n_features, cfg.d, generator=gen)
    features /= features.norm(dim=1, keepdim=True)
    x_train, codes_train = _sample(cfg, features, cfg.n_train, gen)
    x_eval, codes_eval = _sample(cfg, features, cfg.n_eval, gen)
    return SyntheticData(cfg, features, x_train, codes_train, x_eval, codes_eval)


def iter_batches(x: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled batches ``[batch_size, d]`` of ``x [N, d]`` (a fresh permutation each epoch)."""
    while True:
        perm = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[perm[start : start + batch_size]]


def load_or_train_synthetic(data_cfg: SyntheticConfig, sae_cfg: SAEConfig, train_cfg: SAETrainConfig,
                            data: SyntheticData | None = None) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train the course's SAE on ``make_data(data_cfg).x_train`` (cached): ``(autoencoder, history dict)``.

    The key is ``data_cfg``, ``sae_cfg`` and :meth:`SAETrainConfig.cache_key`; the folder is in SAELens
    layout, as for the SAEs on SmolLM2. ``data`` (``make_data(data_cfg)``) saves regenerating it.
    """
    if sae_cfg.d_in != data_cfg.d:
        raise runtime.ParameterError(f"sae_cfg.d_in={sae_cfg.d_in} must equal data_cfg.d={data_cfg.d}")
    key = {"data": data_cfg, "sae": sae_cfg, "train": train_cfg.cache_key()}

    def build(folder: Path) -> None:
        d = data if data is not None else make_data(data_cfg)
        batches = iter_batches(d.x_train, train_cfg.batch_size, torch.Generator().manual_seed(train_cfg.seed))
        autoencoder, hist = train_sae(sae_cfg, train_cfg, batches, d.x_train[:4_096], progress=False)
        save_saelens(autoencoder, folder, hook_name="synthetic", model_name=f"synthetic-{data_cfg.kind}")
        (folder / "history.json").write_text(json.dumps(hist.to_dict()))

    folder = cache.load_or_build("sae_synthetic", key, _VERSION, build)
    return load_saelens(folder), json.loads((folder / "history.json").read_text())


def train_and_score(data_cfgs: list[SyntheticConfig], sae_cfgs: dict[str, SAEConfig], train_cfg: SAETrainConfig,
                    seeds: list[int], progress: bool = True) -> list[dict[str, Any]]:
    """Train every SAE of ``sae_cfgs`` (``{label: SAEConfig}``) on every dataset and seed; score each one.

    For seed ``s`` the dataset is ``replace(data_cfg, seed=s)`` (new directions and codes) and the SAE's
    training seed is ``s`` (new init and batch order). Returns one row per run: ``data`` (kind), ``sae``
    (label), ``kind``, ``k``, ``l1_coef``, ``seed`` and :func:`course_lib.sae.recovery.recovery_metrics`
    on the held-out samples, absorption included (for the non-hierarchical kinds the groups of
    :func:`hierarchy` carry no dependence: the control).
    """
    rows = []
    with runtime.cpu_threads(1):  # these SAEs are tiny: a second thread only adds synchronisation
        _train_and_score(data_cfgs, sae_cfgs, train_cfg, seeds, progress, rows)
    return rows


def _train_and_score(data_cfgs: list[SyntheticConfig], sae_cfgs: dict[str, SAEConfig], train_cfg: SAETrainConfig,
                     seeds: list[int], progress: bool, rows: list[dict[str, Any]]) -> None:
    bar = tqdm(total=len(data_cfgs) * len(seeds) * len(sae_cfgs), desc="synthetic SAEs", disable=not progress)
    for base in data_cfgs:
        for seed in seeds:
            dc = dataclasses.replace(base, seed=seed)
            data = make_data(dc)
            for label, sc in sae_cfgs.items():
                autoencoder, _ = load_or_train_synthetic(dc, sc, dataclasses.replace(train_cfg, seed=seed), data=data)
                m = recovery_metrics(autoencoder, data.features, data.x_eval, data.codes_eval, hierarchy(dc))
                rows.append({"data": dc.kind, "sae": label, "kind": sc.kind, "k": sc.k, "l1_coef": sc.l1_coef,
                             "seed": seed, **m})
                bar.update(1)
    bar.close()


def table(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """``{(data kind, SAE label): {mean, std, min, max, n}}`` of ``metric`` over seeds (std ddof=1, 0 for one seed)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["sae"]), []).append(float(r[metric]))
    return {key: seed_summary(v) for key, v in groups.items()}
