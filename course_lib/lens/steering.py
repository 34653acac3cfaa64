"""Steering: add a vector to the residual stream at one position and one layer, and read the answer.

Two prompts that differ in one token (``"The capital of France is"`` / ``"... Italy is"``) give, at that
position ``p`` and after block ``l``, residuals ``x_l^from[p]`` and ``x_l^to[p]``. Adding
``v_l = x_l^to[p] - x_l^from[p]`` to the *from* run at ``blocks.l.hook_resid_post``, position ``p``, makes
that one position look like the *to* prompt from layer ``l`` on; later positions keep what they read from
it before layer ``l``. Sweeping ``l`` shows until which depth the answer still depends on that position
(while the country still sits there) and from which depth it has been moved on (the steer stops working).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def steering_hook(resid: torch.Tensor, hook, vector: torch.Tensor, position: int) -> torch.Tensor:  # noqa: ARG001
    """``resid [batch, pos, d_model]`` with ``vector [d_model]`` added at ``position`` only, as a new tensor."""
    out = resid.clone()
    out[:, position] = out[:, position] + vector.to(out.dtype)
    return out


def differing_position(a: torch.Tensor, b: torch.Tensor) -> int:
    """The one position where token rows ``a [1, pos]`` and ``b [1, pos]`` differ; ValueError otherwise."""
    if a.shape != b.shape:
        raise ValueError(f"the two prompts tokenize to different lengths {tuple(a.shape)} and {tuple(b.shape)}; "
                         "use prompts that differ in exactly one token")
    diff = torch.nonzero(a[0] != b[0]).flatten()
    if len(diff) != 1:
        raise ValueError(f"the two prompts differ at {len(diff)} positions; they must differ in exactly one token")
    return int(diff[0])


@torch.no_grad()
def resid_at(model, tokens: torch.Tensor, position: int) -> torch.Tensor:
    """``resid_post`` of every block at ``position`` of ``tokens [1, pos]``: ``[n_layers, d_model]``."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[name][0, position] for name in names])


@torch.no_grad()
def steering_sweep(
    model, tokens: torch.Tensor, vectors: torch.Tensor, position: int, token_ids: Sequence[int],
    layers: Sequence[int], hook_fn: Callable = steering_hook,
) -> torch.Tensor:
    """For each layer in ``layers``, add ``vectors[layer]`` at ``position`` with ``hook_fn`` and return the
    last position's probabilities of ``token_ids``: ``[len(layers), len(token_ids)]``."""
    ids = torch.tensor(list(token_ids))
    rows = []
    for layer in layers:
        hook = (f"blocks.{layer}.hook_resid_post",
                lambda resid, hook, v=vectors[layer]: hook_fn(resid, hook, v, position))
        logits = model.run_with_hooks(tokens, fwd_hooks=[hook])
        rows.append(logits[0, -1].float().softmax(-1)[ids].cpu())
    return torch.stack(rows)
