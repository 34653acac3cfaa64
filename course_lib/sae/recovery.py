"""Did the SAE find the true features? Recovery and absorption metrics against a known ground truth.

Inputs: true feature directions ``F [n_features, d]``, the SAE's decoder rows ``W_dec [n_latents, d]``,
true codes ``c [N, n_features]`` and latent activations ``z [N, n_latents]`` on the same samples.

* **Mean max cosine (MMCS)**: ``mean_i max_j cos(F_i, W_dec_j)``; each true feature's best decoder row,
  latents may be reused (so it forgives duplicates).
* **MCC** (mean correlation coefficient, as in the ICA / identifiability literature): an optimal
  one-to-one matching of features to latents (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`)
  maximising the summed similarity, then the mean similarity over matched pairs. Two similarities:
  ``decoder_mcc`` uses ``cos(F_i, W_dec_j)`` (SAELens's ``mean_correlation_coefficient``, there with
  ``|cos|``; signed here, since codes and latents are both non-negative, a latent pointing along
  ``-F_i`` does not represent feature ``i``), ``activation_mcc`` uses the Pearson correlation over samples
  between ``c[:, i]`` and ``z[:, j]`` (0 for a latent or feature that never varies).
  1 = every feature has its own latent, exactly; with more latents than features the extra ones go
  unmatched.
* **Absorption** (Chanin et al. 2024, *A is for absorption*), for hierarchical features (a child never
  fires without its parent): with each feature's latent from the decoder matching, pooled over parents,

      absorption = #{parent on, a child on, parent's latent off, an active child's latent on}
                   / #{parent on, a child on}

  i.e. how often the child's latent does the parent's job. Read it with ``parent_recall_alone`` (the
  parent's latent fires when the parent fires alone) and ``parent_recall_with_child``: absorption means
  the first is high and the second low.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from course_lib.sae.evaluation import fvu
from course_lib.sae.model import SparseAutoencoder


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n_a, n_b]`` cosine similarities between the rows of ``a [n_a, d]`` and ``b [n_b, d]``."""
    a = a.double() / a.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b.double() / b.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.t()


def correlation_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n_a, n_b]`` Pearson correlations over samples between the columns of ``a [N, n_a]`` and ``b [N, n_b]``.

    A column with zero variance correlates 0 with everything.
    """
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    corr = (a.t() @ b) / (na[:, None] * nb[None, :]).clamp_min(1e-12)
    return corr.masked_fill((na[:, None] < 1e-12) | (nb[None, :] < 1e-12), 0.0)


def match(similarity: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of rows to columns maximising the summed ``similarity [n_rows, n_cols]``.

    Returns ``(rows, cols)`` index arrays (``min(n_rows, n_cols)`` pairs; rows sorted).
    """
    rows, cols = linear_sum_assignment(similarity.detach().cpu().numpy(), maximize=True)
    return rows, cols


def matched_mean(similarity: torch.Tensor) -> float:
    """MCC: the mean of ``similarity`` over the optimal one-to-one matching (see :func:`match`)."""
    rows, cols = match(similarity)
    return float(similarity[rows, cols].mean())


def mean_max_cosine(features: torch.Tensor, decoder: torch.Tensor) -> float:
    """MMCS: ``mean_i max_j cos(features_i, decoder_j)`` for ``features [n_f, d]``, ``decoder [n_l, d]``."""
    return float(cosine_matrix(features, decoder).max(dim=1).values.mean())


def decoder_mcc(features: torch.Tensor, decoder: torch.Tensor) -> float:
    """MCC of decoder directions: the matched mean of ``cos(features_i, decoder_j)``."""
    return matched_mean(cosine_matrix(features, decoder))


def activation_mcc(codes: torch.Tensor, latents: torch.Tensor) -> float:
    """MCC of activations: the matched mean of ``corr(codes[:, i], latents[:, j])`` over samples."""
    return matched_mean(correlation_matrix(codes, latents))


def feature_to_latent(features: torch.Tensor, decoder: torch.Tensor) -> np.ndarray:
    """``[n_features]``: each feature's latent under the decoder-cosine matching (-1 when unmatched)."""
    rows, cols = match(cosine_matrix(features, decoder))
    out = np.full(features.shape[0], -1, dtype=np.int64)
    out[rows] = cols
    return out


def absorption(codes: torch.Tensor, latents: torch.Tensor, groups: list[tuple[int, list[int]]],
               latent_of: np.ndarray) -> dict[str, Any]:
    """Absorption of parents by their children (definitions in the module docstring).

    ``codes [N, n_features]`` and ``latents [N, n_latents]`` on the same samples; ``groups`` =
    ``[(parent, [children])]`` feature indices; ``latent_of [n_features]`` each feature's latent.
    Returns ``absorption``, ``parent_recall_alone``, ``parent_recall_with_child`` (pooled over parents;
    NaN when the denominator is empty), ``per_parent`` (absorption of each parent, NaN when its
    parent-and-child events never occur), and the event counts ``n_with_child``, ``n_alone``.
    """
    on = codes > 0
    lat_on = latents > 0
    absorbed = with_child = alone = alone_hit = with_hit = 0
    per_parent = []
    for parent, children in groups:
        p_on = on[:, parent]
        kids_on = on[:, children]  # [N, C]
        kids_lat_on = lat_on[:, latent_of[children]]  # [N, C]
        p_lat_on = lat_on[:, latent_of[parent]]
        both = p_on & kids_on.any(1)
        solo = p_on & ~kids_on.any(1)
        eaten = both & ~p_lat_on & (kids_on & kids_lat_on).any(1)
        n_both = int(both.sum())
        absorbed += int(eaten.sum())
        with_child += n_both
        with_hit += int((both & p_lat_on).sum())
        alone += int(solo.sum())
        alone_hit += int((solo & p_lat_on).sum())
        per_parent.append(int(eaten.sum()) / n_both if n_both else float("nan"))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"absorption": ratio(absorbed, with_child), "parent_recall_alone": ratio(alone_hit, alone),
            "parent_recall_with_child": ratio(with_hit, with_child), "per_parent": np.array(per_parent),
            "n_with_child": with_child, "n_alone": alone}


@torch.no_grad()
def recovery_metrics(autoencoder: SparseAutoencoder, features: torch.Tensor, x: torch.Tensor, codes: torch.Tensor,
                     groups: list[tuple[int, list[int]]] | None = None) -> dict[str, Any]:
    """Everything above for one SAE on held-out samples ``x [N, d]`` with true ``codes [N, n_features]``.

    Returns ``mmcs``, ``decoder_mcc``, ``activation_mcc``, ``nmse``, ``l0``, ``dead_fraction`` and, with
    ``groups``, the :func:`absorption` entries plus ``child_parent_cosine``: the mean cosine between each
    child's latent's decoder row and its parent's true direction (absorbed children lean toward the
    parent; the true child directions' mean cosine with their parents is ``true_child_parent_cosine``).
    """
    z = autoencoder.encode(x.float())
    w = autoencoder.W_dec.detach()
    out: dict[str, Any] = {
        "mmcs": mean_max_cosine(features, w),
        "decoder_mcc": decoder_mcc(features, w),
        "activation_mcc": activation_mcc(codes, z),
        "nmse": fvu(x, autoencoder(x.float())),
        "l0": float((z > 0).sum(1).float().mean()),
        "dead_fraction": float(((z > 0).sum(0) == 0).float().mean()),
    }
    if groups is not None:
        latent_of = feature_to_latent(features, w)
        out.update(absorption(codes, z, groups, latent_of))
        cos = cosine_matrix(w, features)
        true_cos = cosine_matrix(features, features)
        pairs = [(c, p) for p, kids in groups for c in kids]
        out["child_parent_cosine"] = float(np.mean([float(cos[latent_of[c], p]) for c, p in pairs]))
        out["true_child_parent_cosine"] = float(np.mean([float(true_cos[c, p]) for c, p in pairs]))
    return out
