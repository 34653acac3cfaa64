"""Metrics of toy models of superposition (Elhage et al., 2022): how features share the hidden space.

Metrics (``W_f`` is feature f's column of ``W``, the direction it is embedded along)
-------------------------------------------------------------------------------------
* dimensions per feature ``D* = H / ||W||_F^2`` (1 when features have orthogonal unit directions;
  0.4 for a pentagon of 5 features in 2 dimensions; 0.5 for antipodal pairs);
* feature dimensionality ``D_f = ||W_f||^2 / sum_g (W_f_hat . W_g)^2`` (the fraction of a
  dimension feature f owns);
* features represented: ``#{f : ||W_f|| > threshold}``;
* superposition of feature f: ``sum_{g != f} (W_f_hat . W_g)^2`` (how much other features overlap
  with f's direction), interference = its mean over represented features;
* features per neuron: for each hidden neuron n, ``#{f represented : W[n, f]^2 >= share * ||W_f||^2}``
  (the features that put at least ``share`` of their squared norm on that neuron).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from course_lib.runtime import Headline
from course_lib.toy.model import ToyModel, evaluate_loss

# --------------------------------------------------------------------------- metrics


def dimensions_per_feature(W: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Dimensions per feature per instance: W [I, H, F] -> [I].

    ``clip=False`` is the paper's ``D* = H / ||W||_F^2 = H / sum_f ||W_f||^2``. With sparse features
    the trained model stretches each feature to a norm a little above 1 (about 1.15 for the 5 -> 2
    pentagon) and uses a negative bias to filter interference, which pulls ``D*`` below the
    geometric value (0.30 instead of 0.4). ``clip=True`` (default) counts each feature at most
    once, ``D* = H / sum_f min(||W_f||^2, 1)``: equal to the paper's value whenever no norm exceeds 1,
    and 2/5 = 0.4 for a pentagon of any size.
    """
    sq = W.pow(2).sum(1)
    if clip:
        sq = sq.clamp_max(1.0)
    return W.shape[1] / sq.sum(-1).clamp_min(1e-12)


def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """``||W_f||`` per instance and feature: [I, H, F] -> [I, F]."""
    return W.norm(dim=1)


def _overlaps(W: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(W_f_hat . W_g)^2``, shape [I, F(f), F(g)]."""
    W_hat = W / (W.norm(dim=1, keepdim=True) + eps)
    return torch.bmm(W_hat.transpose(1, 2), W).pow(2)


def feature_dimensionality(W: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``D_f = ||W_f||^2 / sum_g (W_f_hat . W_g)^2``: [I, H, F] -> [I, F] (0 for unrepresented features)."""
    return W.pow(2).sum(1) / (_overlaps(W, eps).sum(-1) + eps)


def superposition(W: torch.Tensor) -> torch.Tensor:
    """``sum_{g != f} (W_f_hat . W_g)^2``: [I, H, F] -> [I, F]."""
    ov = _overlaps(W)
    return ov.sum(-1) - torch.diagonal(ov, dim1=1, dim2=2)


def features_represented(W: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``#{f : ||W_f|| > threshold}``: [I, H, F] -> [I] (float)."""
    return (feature_norms(W) > threshold).float().sum(-1)


def interference(W: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Mean superposition over represented features: [I, H, F] -> [I] (0 when none is represented)."""
    rep = (feature_norms(W) > threshold).float()
    return (superposition(W) * rep).sum(-1) / rep.sum(-1).clamp_min(1)


def neuron_feature_membership(W: torch.Tensor, threshold: float = 0.5, share: float = 0.1) -> torch.Tensor:
    """Bool [I, H, F]: neuron n carries feature f (f represented and ``W[n,f]^2 >= share ||W_f||^2``)."""
    sq = W.pow(2)
    rep = feature_norms(W) > threshold
    return (sq >= share * sq.sum(1, keepdim=True)) & rep.unsqueeze(1)


def features_per_neuron(W: torch.Tensor, threshold: float = 0.5, share: float = 0.1) -> torch.Tensor:
    """Mean over neurons that carry any feature of how many features each carries: [I, H, F] -> [I]."""
    counts = neuron_feature_membership(W, threshold, share).float().sum(-1)  # [I, H]
    active = (counts > 0).float()
    return (counts * active).sum(-1) / active.sum(-1).clamp_min(1)


def polysemantic_fraction(W: torch.Tensor, threshold: float = 0.5, share: float = 0.1) -> torch.Tensor:
    """Fraction of feature-carrying neurons that carry two or more features: [I]."""
    counts = neuron_feature_membership(W, threshold, share).float().sum(-1)
    active = (counts > 0).float()
    return ((counts >= 2).float()).sum(-1) / active.sum(-1).clamp_min(1)


def antipodal_pairs(W: torch.Tensor, threshold: float = 0.5, cos: float = -0.9) -> torch.Tensor:
    """Number of pairs of represented features whose directions have cosine below ``cos``: [I]."""
    norms = feature_norms(W)
    W_hat = W / (norms.unsqueeze(1) + 1e-8)
    c = torch.bmm(W_hat.transpose(1, 2), W_hat)
    rep = norms > threshold
    both = rep.unsqueeze(1) & rep.unsqueeze(2)
    return ((c < cos) & both).float().sum(dim=(1, 2)) / 2


def neuron_antipodal_pairs(W: torch.Tensor, threshold: float = 0.3, cos: float = -0.9) -> torch.Tensor:
    """Pairs of neurons (rows of W [I, H, F]) reading (nearly) opposite input directions: [I].

    For the |x| model such a pair computes ``ReLU(w.x) + ReLU(-w.x) = |w.x|``.
    """
    return antipodal_pairs(W.transpose(1, 2), threshold, cos)


def dead_dimensions(W: torch.Tensor) -> torch.Tensor:
    """Hidden dimensions whose weights are all exactly zero (rows of W that carry nothing): [I, H, F] -> [I] (float)."""
    return (W == 0).all(-1).float().sum(-1)


def summarize(model: ToyModel, threshold: float = 0.5) -> list[dict[str, float]]:
    """One dict of metrics per instance (plain floats, ready for metrics.json)."""
    W = model.W_embed.detach()
    loss = evaluate_loss(model)
    cols = {
        "feature_probability": model.feature_probability,
        "loss": loss,
        "dims_per_feature": dimensions_per_feature(W),
        "dims_per_feature_frobenius": dimensions_per_feature(W, clip=False),
        "features_represented": features_represented(W, threshold),
        "interference": interference(W, threshold),
        "features_per_neuron": features_per_neuron(W, threshold),
        "polysemantic_fraction": polysemantic_fraction(W, threshold),
        "weight_nonzero_fraction": (W != 0).float().mean(dim=(1, 2)),
        "dead_dimensions": dead_dimensions(W),
    }
    return [{k: float(v[i]) for k, v in cols.items()} for i in range(model.cfg.n_instances)]


def phase_grid(
    sparsities: Sequence[float], relative_importances: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature probabilities [I] and importances [I, 2] for the 2 -> 1 phase diagram, I = len(S) * len(r).

    Instance ``a * len(r) + b`` has sparsity ``S[a]`` and importances ``(1, r[b])``.
    """
    S = torch.tensor(list(sparsities), dtype=torch.float32)
    r = torch.tensor(list(relative_importances), dtype=torch.float32)
    p = (1 - S).repeat_interleave(len(r))
    imp = torch.stack([torch.ones(len(S) * len(r)), r.repeat(len(S))], dim=1)
    return p, imp


def classify_phase(W: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """For 2 features -> 1 hidden: 0 = only feature 2 ignored (feature 1 kept), 1 = feature 2 gets
    the dimension (feature 1 dropped), 2 = both, in superposition (antipodal). W [I, 1, 2] -> [I] long."""
    rep = feature_norms(W) > threshold  # [I, 2]
    phase = torch.zeros(W.shape[0], dtype=torch.long, device=W.device)
    phase[~rep[:, 0] & rep[:, 1]] = 1
    phase[rep[:, 0] & rep[:, 1]] = 2
    return phase


PHASE_NAMES: tuple[str, ...] = ("feature 2 ignored", "feature 2 gets the dimension", "superposition (antipodal)")


def headline(metrics: dict) -> list[Headline]:
    """Notebook 01's headline claims for the report, from its ``metrics`` (pentagon, antipodal pairs)."""
    d = metrics.get("five_two_dims_per_feature_sparsest")
    half = metrics.get("big_sweep_instances_near_one_half")
    return [
        Headline("5 features in 2 dimensions, sparsest data: dimensions per feature (a pentagon stores 5 in 2)",
                 "0.4 (= 2/5)", None if d is None else f"{d:.3g}"),
        Headline("100 -> 20 sweep: sparsities whose dimensions per feature sit within 0.05 of 1/2 (antipodal pairs)",
                 "a plateau at 1/2", None if half is None else str(half)),
    ]
