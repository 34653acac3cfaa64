"""Checkers for notebook 00's exercises: each runs the learner's function on small tensors and names the mistake.

Same contract as :mod:`course_lib.toy.exercises`: a checker returns a success message, returns
:data:`~course_lib.exercises.NOT_ATTEMPTED` while the function still raises ``NotImplementedError``,
and raises :class:`~course_lib.exercises.ExerciseError` with a diagnosis otherwise (the likely
mistake when the answer matches a known wrong variant). No model is needed: the checkers use
random activations and small stand-ins for the final norm and the unembedding.

- :func:`check_zero_ablation_hook`: ``hook(activation, hook) -> zeros`` (a zero-ablation).
- :func:`check_head_ablation_hook`: ``hook(z [batch, pos, head, d_head], hook, head) -> z`` with one head zeroed.
- :func:`check_token_loss`: mean next-token cross-entropy, ``logits [batch, pos, vocab]``, ``tokens [batch, pos]``.
- :func:`check_logit_lens_probs`: ``softmax(unembed(ln_final(resid)))`` per layer.
- :func:`check_steering_hook`: ``hook(resid [batch, pos, d_model], hook, vector, position)`` -> a new tensor with
  ``vector`` added at ``position`` only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_lib.exercises import NOT_ATTEMPTED, ExerciseError, close, diagnose, tensor_of
from course_lib.lens import predictions

__all__ = ["NOT_ATTEMPTED", "ExerciseError", "check_head_ablation_hook", "check_logit_lens_probs",
           "check_steering_hook", "check_token_loss", "check_zero_ablation_hook"]


class _Hook:  # stands in for transformer-lens' HookPoint argument
    name = "blocks.0.hook_test"


# --------------------------------------------------------------------------- exercise 1


def check_zero_ablation_hook(fn: Callable[[torch.Tensor, object], torch.Tensor]) -> str:
    """``fn(activation, hook) -> torch.zeros_like(activation)``."""
    act = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    original = act.clone()
    try:
        got = fn(act, _Hook())
    except NotImplementedError:
        return NOT_ATTEMPTED
    if got is None and bool((act == 0).all()):
        raise ExerciseError("zero_ablation_hook zeroed the activation in place and returned None: that happens "
                            "to work in transformer-lens, but return the new tensor (torch.zeros_like)")
    got = tensor_of("zero_ablation_hook", got, tuple(act.shape), "the activation's own shape")
    if close(got, original):
        raise ExerciseError("zero_ablation_hook returned the activation unchanged: nothing was ablated")
    if bool((got[..., 0] == 0).all()) and not bool((got == 0).all()):
        raise ExerciseError("zero_ablation_hook zeroed only part of the activation; zero every entry")
    if not bool((got == 0).all()):
        raise ExerciseError("zero_ablation_hook must return all zeros (torch.zeros_like(activation))")
    return "zero_ablation_hook: correct"


# --------------------------------------------------------------------------- exercise 2


def check_head_ablation_hook(fn: Callable[[torch.Tensor, object, int], torch.Tensor]) -> str:
    """``fn(z [batch, pos, head_index, d_head], hook, head)``: ``z`` with head ``head`` zeroed, the rest unchanged."""
    z = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(1)) + 2.0  # no exact zeros
    head = 2
    try:
        got = fn(z.clone(), _Hook(), head)
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("head_ablation_hook", got, tuple(z.shape), "[batch, pos, head_index, d_head], like z")
    ref = z.clone()
    ref[:, :, head] = 0
    pos = z.clone()
    pos[:, head] = 0
    last = z.clone()
    last[..., head] = 0
    batch = z.clone()
    batch[head % z.shape[0]] = 0
    diagnose("head_ablation_hook", got, ref, {
        "you zeroed a position (dim 1), not a head: hook_z is [batch, pos, head_index, d_head], heads are dim 2":
            pos,
        "you zeroed one entry of d_head in every head (z[..., head]); zero the head's whole slice z[:, :, head]":
            last,
        "you zeroed a batch element (dim 0); heads are dim 2": batch,
        "you zeroed every head; only head `head` should be ablated": torch.zeros_like(z),
        "nothing was ablated: set z[:, :, head] = 0 and return z": z,
    })
    return "head_ablation_hook: correct"


# --------------------------------------------------------------------------- exercise 3


def check_token_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(logits [batch, pos, vocab], tokens [batch, pos]) -> scalar`` mean next-token cross-entropy."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 11, generator=g) * 3
    tokens = torch.randint(0, 11, (2, 6), generator=g)
    try:
        got = fn(logits.clone(), tokens.clone())
    except NotImplementedError:
        return NOT_ATTEMPTED
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"token_loss should return a torch.Tensor, got {type(got).__name__}")
    if got.numel() != 1:
        raise ExerciseError(f"token_loss returned shape {tuple(got.shape)}: average over batch and positions "
                            "to one number (.mean())")
    got = got.reshape(())
    ref = predictions.token_loss(logits, tokens)
    logp = logits.float().log_softmax(-1)
    diagnose("token_loss", got, ref, {
        "no shift: the logits at position t predict token t+1; compare logits[:, :-1] with tokens[:, 1:]":
            -logp.gather(-1, tokens[..., None]).mean(),
        "shifted the wrong way: logits[:, :-1] (positions 0..T-2) predict tokens[:, 1:]":
            -logp[:, 1:].gather(-1, tokens[:, :-1, None]).mean(),
        "the sign: cross-entropy is the *negative* log-probability of the right token":
            logp[:, :-1].gather(-1, tokens[:, 1:, None]).mean(),
        "you used raw logits; take log_softmax over the vocabulary first":
            -logits[:, :-1].gather(-1, tokens[:, 1:, None]).mean(),
        "you summed; average over batch and positions (.mean())":
            -logp[:, :-1].gather(-1, tokens[:, 1:, None]).sum(),
    })
    return "token_loss: correct"


# --------------------------------------------------------------------------- exercise 4


def _stand_ins(d_model: int = 6, d_vocab: int = 9) -> tuple[Callable, Callable]:
    g = torch.Generator().manual_seed(3)
    scale = torch.rand(d_model, generator=g) + 0.5
    W_U = torch.randn(d_model, d_vocab, generator=g)
    b_U = torch.randn(d_vocab, generator=g) * 0.1

    def ln_final(x: torch.Tensor) -> torch.Tensor:  # RMSNorm with a learned scale, like SmolLM2's
        return x / x.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * scale

    def unembed(x: torch.Tensor) -> torch.Tensor:
        return x @ W_U + b_U

    return ln_final, unembed


def check_logit_lens_probs(fn: Callable[[torch.Tensor, Callable, Callable], torch.Tensor]) -> str:
    """``fn(resid [n_layers, d_model], ln_final, unembed) -> probs [n_layers, d_vocab]``."""
    ln_final, unembed = _stand_ins()
    resid = torch.randn(4, 6, generator=torch.Generator().manual_seed(4)) * torch.tensor([1.0, 5, 20, 80])[:, None]
    try:
        got = fn(resid.clone(), ln_final, unembed)
    except NotImplementedError:
        return NOT_ATTEMPTED
    got = tensor_of("logit_lens_probs", got, (4, 9), "[n_layers, d_vocab]")
    logits = unembed(ln_final(resid))
    diagnose("logit_lens_probs", got, logits.softmax(-1), {
        "you skipped the final norm: apply ln_final before unembed, as the model does after its last block":
            unembed(resid).softmax(-1),
        "you returned logits; the lens reads probabilities (softmax over the vocabulary)": logits,
        "softmax over the wrong dimension: normalise over the vocabulary (dim -1), not over layers":
            logits.softmax(0),
        "you returned log-probabilities; take softmax, not log_softmax": logits.log_softmax(-1),
    })
    return "logit_lens_probs: correct"


# --------------------------------------------------------------------------- exercise 5


def check_steering_hook(fn: Callable[[torch.Tensor, object, torch.Tensor, int], torch.Tensor]) -> str:
    """``fn(resid [batch, pos, d_model], hook, vector [d_model], position)``: ``resid`` with ``vector`` added at
    ``position`` (every batch row), returned as a new tensor; ``resid`` itself left unchanged."""
    g = torch.Generator().manual_seed(5)
    resid = torch.randn(2, 5, 7, generator=g)
    vector = torch.randn(7, generator=g) + 3.0
    position = 2
    original = resid.clone()
    try:
        got = fn(resid, _Hook(), vector.clone(), position)
    except NotImplementedError:
        return NOT_ATTEMPTED
    ref = original.clone()
    ref[:, position] += vector
    changed = not close(resid, original)
    if got is None:
        if changed:
            raise ExerciseError("steering_hook changed resid in place and returned None: return the result. "
                                "Build a new tensor (resid.clone(), then add) rather than changing resid in place")
        raise ExerciseError("steering_hook returned None: return the steered residual stream (a missing `return`?)")
    got = tensor_of("steering_hook", got, tuple(resid.shape), "[batch, pos, d_model], like resid")
    if changed:
        raise ExerciseError("steering_hook modified resid in place: the same tensor may be held by a cache or by "
                            "another hook, which would then see the steered values too. Clone it first "
                            "(out = resid.clone()) and add to the clone")
    every = original + vector
    last = original.clone()
    last[:, -1] += vector
    first = original.clone()
    first[:, 0] += vector
    batch = original.clone()
    batch[position % original.shape[0]] += vector
    replaced = original.clone()
    replaced[:, position] = vector
    minus = original.clone()
    minus[:, position] -= vector
    diagnose("steering_hook", got, ref, {
        "you added the vector at every position; add it at `position` only (out[:, position] += vector)": every,
        "you added the vector at the last position; add it at `position` (dim 1 of resid)": last,
        "you added the vector at position 0 (BOS); add it at `position`": first,
        "you indexed the batch dimension (dim 0); positions are dim 1: out[:, position]": batch,
        "you replaced the residual by the vector; steering *adds* it to what is there": replaced,
        "you subtracted the vector; steering adds it": minus,
        "nothing changed: add the vector at `position` and return the new tensor": original,
    })
    return "steering_hook: correct"
