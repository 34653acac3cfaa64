"""Reading a real LM's activations: the one BOS/massive-token rule and the stop-early grab.

The rule (:func:`keep_positions`): position 0 (BOS) and *massive* tokens are left out of SAE
training, normalisation statistics, the SAE splice of the downstream loss and the units explained
in notebook 04. SmolLM2's residual stream has norm ~23,000 at BOS against ~180 elsewhere, and a
few other tokens (~0.02% at layer 15) are far above the rest: their values are artefacts of the
norm, not of the text. A token is massive when its norm exceeds ``massive_factor`` times the
median norm of the batch's non-BOS positions.

The grab (:func:`grab`): one forward pass with a hook on each wanted hook point that stores the
activation, stopped after the deepest hooked block (``stop_at_layer``), so reading layer 15 of 30
costs half a forward pass.

Shapes: ``tokens [batch, pos]``; ``resid [batch, pos, d_model]``; ``keep [batch, pos]`` bool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

MASSIVE_FACTOR = 10.0  # default: massive = norm > 10 x the median non-BOS norm


def resid_hook(layer: int) -> str:
    """The residual stream after block ``layer``: ``blocks.{layer}.hook_resid_post``."""
    return f"blocks.{layer}.hook_resid_post"


def layer_of(hook_name: str) -> int:
    """Block index of a ``blocks.{l}....`` hook name."""
    return int(hook_name.split(".")[1])


def keep_positions(resid: torch.Tensor, massive_factor: float = MASSIVE_FACTOR) -> torch.Tensor:
    """Which positions of ``resid [b, p, d]`` to use: ``[b, p]`` bool.

    False at BOS (position 0) and at *massive* tokens, whose norm exceeds ``massive_factor`` times
    the median norm of the batch's non-BOS positions. The one rule for SAE training (notebook 03),
    the SAE splice of the downstream loss, and the units explained in notebook 04.
    """
    norms = resid.float().norm(dim=-1)
    keep = norms <= massive_factor * norms[:, 1:].median()
    keep[:, 0] = False
    return keep


def stop_layer(model: Any, hook_names: Sequence[str]) -> int | None:
    """``stop_at_layer`` for a forward pass that only needs ``hook_names`` (None: run every block)."""
    if not hook_names:
        return None
    stop = max(layer_of(h) for h in hook_names) + 1
    return stop if stop < int(model.cfg.n_layers) else None


@torch.no_grad()
def grab(model: Any, tokens: torch.Tensor, hook_names: Sequence[str], stop_early: bool = True
         ) -> dict[str, torch.Tensor]:
    """``{hook name: activation}`` of one forward pass over ``tokens`` (moved to the model's device).

    The pass stops after the deepest hooked block when ``stop_early``; a hook that does not fire
    is an error.
    """
    grabbed: dict[str, torch.Tensor] = {}

    def grabber(name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
            grabbed[name] = x.detach()
            return x

        return hook

    names = list(dict.fromkeys(hook_names))
    dev = next(model.parameters()).device
    model.run_with_hooks(tokens.to(dev), fwd_hooks=[(h, grabber(h)) for h in names],
                         stop_at_layer=stop_layer(model, names) if stop_early else None, return_type=None)
    missing = [h for h in names if h not in grabbed]
    if missing:
        raise RuntimeError(f"hook(s) {missing} did not fire")
    return grabbed


@torch.no_grad()
def token_norms(model: Any, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual norms ``[b, s]`` at ``blocks.{layer}.hook_resid_post`` (BOS and massive tokens included)."""
    name = resid_hook(layer)
    return grab(model, tokens, [name])[name].float().norm(dim=-1).cpu()
