"""Checkers for notebook 01's exercises: each runs the learner's function and says what is wrong.

A checker returns a short success message, returns a "not attempted" message when the function
still raises ``NotImplementedError``, and raises :class:`ExerciseError` (an ``AssertionError``)
with a diagnosis otherwise: the likely mistake when the answer matches a known wrong variant, else
the first place where the answer and the reference differ.

Notebook 01 (toy models of superposition): :func:`check_generate_batch`, :func:`check_forward_and_loss`,
:func:`check_dimensions_per_feature`, :func:`check_feature_dimensionality`,
:func:`check_topk_per_instance`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_lib import weight_sparsity
from course_lib.exercises import NOT_ATTEMPTED, ExerciseError, close, diagnose, tensor_of
from course_lib.toy import metrics, model

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "check_dimensions_per_feature", "check_feature_dimensionality",
           "check_forward_and_loss", "check_generate_batch", "check_topk_per_instance"]


def _sample_W(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 4, 7, generator=g) * torch.tensor([0.3, 1.0, 2.0]).view(3, 1, 1)


# --------------------------------------------------------------------------- exercise 1


def check_generate_batch(fn: Callable[..., torch.Tensor]) -> str:
    """``fn(feature_probability [I], n_features, batch_size, generator) -> x [I, B, F]``.

    Each entry is present with probability ``p_i`` and then uniform on [0, 1]; else exactly 0.
    """
    p = torch.tensor([1.0, 0.5, 0.1])
    F, B = 6, 4000
    try:
        x = fn(p, F, B, torch.Generator().manual_seed(0))
    except NotImplementedError:
        return NOT_ATTEMPTED
    x = tensor_of("generate_batch", x, (3, B, F), "[n_instances, batch_size, n_features]")
    if x.min() < 0 or x.max() > 1:
        raise ExerciseError(f"values must lie in [0, 1]; found min {float(x.min()):.3f}, max {float(x.max()):.3f}")
    frac = (x != 0).float().mean(dim=(1, 2))
    for i in range(3):
        if abs(float(frac[i]) - float(p[i])) > 0.03:
            raise ExerciseError(
                f"instance {i} has p = {float(p[i])} but {float(frac[i]):.3f} of its entries are nonzero: "
                "each feature must be present with probability p_i (compare torch.rand < p, with p "
                "broadcast over the batch and feature dimensions)"
            )
    nz = x[x != 0]
    if abs(float(nz.mean()) - 0.5) > 0.03:
        raise ExerciseError(
            f"present features should be uniform on [0, 1] (mean 0.5); their mean is {float(nz.mean()):.3f}. "
            "Did you use the same random number for 'present?' and the value, without rescaling?"
        )
    same_rows = (x[1, :, 0] != 0) == (x[1, :, 1] != 0)
    if bool(same_rows.all()):
        raise ExerciseError("features are present or absent together; each (sample, feature) needs its own draw")
    return "generate_batch: correct (shapes, sparsity per instance and the uniform values all check out)"


# --------------------------------------------------------------------------- exercise 2 (the model's core)


def _forward_case(H: int, F: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Small inputs for :func:`check_forward_and_loss`: W [3, H, F], b [3, F] (some negative), imp [3, F], x [3, 6, F]."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(3, H, F, generator=g)
    b = torch.randn(3, F, generator=g) * 0.5
    imp = 0.8 ** torch.arange(F, dtype=torch.float32).expand(3, F) * torch.tensor([1.0, 0.5, 2.0]).view(3, 1)
    x = torch.rand(3, 6, F, generator=g) * (torch.rand(3, 6, F, generator=g) < 0.6)
    return W, b, imp.contiguous(), x


def check_forward_and_loss(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> str:
    """``fn(W [I, m, n], b_final [I, n], importance [I, n], x [I, B, n]) -> (x' [I, B, n], loss [I])``.

    ``x' = ReLU(W^T W x + b)`` per sample and instance; ``loss_i = mean_b sum_f imp[i, f] (x - x')^2``.
    Runs a non-square case (m != n) first, then a square one, where ``W`` and ``W^T`` swapped still runs.
    """
    for H, F, seed in ((2, 5, 0), (4, 4, 1)):
        W, b, imp, x = _forward_case(H, F, seed)
        try:
            out = fn(W.clone(), b.clone(), imp.clone(), x.clone())
        except NotImplementedError:
            return NOT_ATTEMPTED
        except RuntimeError as e:
            raise ExerciseError(
                f"forward_and_loss raised {type(e).__name__} for W of shape {tuple(W.shape)} = [I, m, n] and x of "
                f"shape {tuple(x.shape)} = [I, batch, n]: check which side of each product W or W^T goes on "
                "(h = torch.bmm(x, W.transpose(1, 2)) is [I, batch, m]; then torch.bmm(h, W) is [I, batch, n])"
            ) from e
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ExerciseError("forward_and_loss should return two things: (x_hat, loss)")
        x_hat = tensor_of("forward_and_loss: x_hat", out[0], tuple(x.shape), "[n_instances, batch, n_features]")
        if isinstance(out[1], torch.Tensor) and out[1].dim() == 0:
            raise ExerciseError("forward_and_loss: the loss is one number per instance, shape [I]; you summed (or "
                                "averaged) over the instances too: reduce over the batch and feature dimensions only")
        loss = tensor_of("forward_and_loss: loss", out[1], (3,), "one loss per instance")
        ref_hat, ref_loss = model.forward_and_loss(W, b, imp, x)
        pre = torch.bmm(torch.bmm(x, W.transpose(1, 2)), W)
        wrong_hat = {
            "x_hat is missing the ReLU: x' = ReLU(W^T W x + b), so it is never negative": pre + b.unsqueeze(1),
            "x_hat is missing the bias b_final: x' = ReLU(W^T W x + b)": torch.relu(pre),
            "x_hat is missing both the ReLU and the bias": pre,
        }
        if H == F:
            wrong_hat["W and W^T are swapped: the hidden vector is h = W x (torch.bmm(x, W.transpose(1, 2))), and "
                      "the output is W^T h (torch.bmm(h, W))"] = torch.relu(
                torch.bmm(torch.bmm(x, W), W.transpose(1, 2)) + b.unsqueeze(1))
        diagnose("forward_and_loss: x_hat", x_hat, ref_hat, wrong_hat)
        err = (x - ref_hat).pow(2)
        diagnose("forward_and_loss: loss", loss, ref_loss, {
            "the importance is not applied: weight each feature's squared error by importance[i, f]":
                err.sum(-1).mean(-1),
            "the importance is applied squared: the loss is sum_f I_f (x_f - x'_f)^2, with I_f itself":
                (err * imp.pow(2).unsqueeze(1)).sum(-1).mean(-1),
            "you summed over the batch: average over the batch (mean over dim 1), sum over the features":
                (err * imp.unsqueeze(1)).sum(-1).sum(-1),
            "you averaged over the features: sum over the features (dim -1), average over the batch":
                (err * imp.unsqueeze(1)).mean(-1).mean(-1),
            "the error is not squared: (x - x_hat).pow(2)":
                ((x - ref_hat).abs() * imp.unsqueeze(1)).sum(-1).mean(-1),
        })
    return "forward_and_loss: correct (x_hat and the importance-weighted loss match on m < n and m = n)"


# --------------------------------------------------------------------------- exercise 3 (dimensions per feature)


def check_dimensions_per_feature(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """``fn(W [I, H, F]) -> [I]``: the paper's ``D* = H / ||W||_F^2``."""
    W = _sample_W()
    try:
        got = fn(W.clone())
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("dimensions_per_feature", got, (3,), "one number per instance")
    ref = metrics.dimensions_per_feature(W, clip=False)
    fro2 = W.pow(2).sum(dim=(1, 2))
    diagnose("dimensions_per_feature", got, ref, {
        "you divided by ||W||_F, not by its square ||W||_F^2": W.shape[1] / fro2.sqrt(),
        "you used n_features (W.shape[2]) where the number of hidden dimensions (W.shape[1]) belongs":
            W.shape[2] / fro2,
        "you returned ||W||_F^2 / H, the inverse (features per dimension)": fro2 / W.shape[1],
        "you summed over the instance dimension too: reduce over dims (1, 2) only":
            W.shape[1] / fro2.sum().expand(3),
        "that is the clipped variant (min(||W_f||^2, 1)); this exercise asks for the paper's plain formula":
            metrics.dimensions_per_feature(W, clip=True),
    })
    return "dimensions_per_feature: correct"


# --------------------------------------------------------------------------- exercise 4 (feature dimensionality)


def check_feature_dimensionality(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """``fn(W [I, H, F]) -> [I, F]``: ``D_f = ||W_f||^2 / sum_g (W_f_hat . W_g)^2``."""
    W = _sample_W(1)
    try:
        got = fn(W.clone())
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("feature_dimensionality", got, (3, 7), "[n_instances, n_features]")
    ref = metrics.feature_dimensionality(W)
    sq = W.pow(2).sum(1)
    gram = torch.bmm(W.transpose(1, 2), W)
    W_hat = W / W.norm(dim=1, keepdim=True)
    ov = torch.bmm(W_hat.transpose(1, 2), W)
    diagnose("feature_dimensionality", got, ref, {
        "the denominator must use the unit vector W_f_hat = W_f / ||W_f||, not W_f itself": sq / gram.pow(2).sum(-1),
        "the sum over g must include g = f (the feature's own ||W_f||^2 term)":
            sq / (ov.pow(2).sum(-1) - torch.diagonal(ov, dim1=1, dim2=2).pow(2)),
        "square the dot products: sum_g (W_f_hat . W_g)^2": sq / ov.sum(-1),
        "you normalised over the feature dimension; W_f is a column, its norm runs over dim 1 (hidden)":
            sq / torch.bmm((W / W.norm(dim=2, keepdim=True)).transpose(1, 2), W).pow(2).sum(-1),
    })
    return "feature_dimensionality: correct"


# --------------------------------------------------------------------------- exercise 5 (top-k)


def check_topk_per_instance(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """``fn(W [I, H, F], k) -> W'``: per instance, keep the k entries of largest |W|, zero the rest."""
    W = _sample_W(2)
    k = 5
    try:
        got = fn(W.clone(), k)
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("topk_per_instance", got, tuple(W.shape), "same shape as W")
    counts = (got != 0).flatten(1).sum(1)
    ref = W * weight_sparsity.topk_mask(W, k, instance_dim=0)
    if close(got, ref):
        return "topk_per_instance: correct (exactly k nonzeros per instance, the largest by magnitude)"
    if int(counts.sum()) == k:
        raise ExerciseError("you kept k entries over all instances together; keep k per instance "
                            "(flatten each instance: W.flatten(1), then topk along dim 1)")
    if bool((counts != k).any()):
        raise ExerciseError(f"each instance must keep exactly k={k} nonzeros; yours keep {counts.tolist()}")
    signed = W * torch.zeros_like(W).flatten(1).scatter_(1, W.flatten(1).topk(k, 1).indices, 1).view_as(W)
    if close(got, signed):
        raise ExerciseError("you kept the largest values, not the largest magnitudes: use W.abs() to rank")
    raise ExerciseError("right number of nonzeros, but not the entries of largest |W| (or their values changed)")
