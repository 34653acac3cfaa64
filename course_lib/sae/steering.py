"""Use an SAE latent on the live model: steer generation with its decoder direction, and read which latents
fire on any text (what SAE users do first, as in Neuronpedia and ARENA's SAE chapter).

Steering: the decoder row ``w_i`` (unit norm in the SAE's normalised space) is a direction in the residual
stream. At ``hook_name`` every position after BOS gets ``x + s * m_i * w_i / scale``, where ``m_i`` is the
latent's largest activation on the store (so ``s = 1`` adds the direction as strongly as the latent itself
ever writes it) and ``scale`` the SAE's input normalisation. Generation is greedy (argmax, deterministic)
with the bridge's KV cache, the hook adding the vector to each new position as it is computed.

Text: the activations at ``hook_name`` of the text's tokens, encoded by the SAE; BOS and massive-norm tokens
(:func:`course_lib.hooks.keep_positions`) are left out, as in training.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from course_lib import hooks
from course_lib.sae.model import SparseAutoencoder


def steering_vector(autoencoder: SparseAutoencoder, latent: int, amount: float) -> torch.Tensor:
    """``amount * w_latent / scale`` ``[d_in]``: the residual-stream (raw scale) write of the latent at
    activation ``amount``."""
    return (amount * autoencoder.W_dec[latent] / autoencoder.scale).detach()


def _add_hook(vector: torch.Tensor):
    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
        out = x.clone()
        first = 1 if x.shape[1] > 1 else 0  # the prompt's pass: BOS keeps its own activation; later steps: 1 new token
        out[:, first:] += vector.to(x.device, x.dtype)
        return out

    return hook


@torch.no_grad()
def greedy_generate(model: Any, prompt: str, max_new_tokens: int = 24, fwd_hooks: list | None = None,
                    use_cache: bool = True) -> tuple[str, torch.Tensor]:
    """Greedy continuation of ``prompt`` with ``fwd_hooks`` active, and the next-token logits ``[vocab]`` at the
    prompt's end.

    ``use_cache=True``: the bridge's ``generate`` with its KV cache (each step computes one new position, which
    the hooks see alone). ``use_cache=False``: a full recompute of the whole sequence at every step (the hooks
    see every position each time; the same text, at about twice the cost for 24 tokens). The KV-cached path
    depends on transformers passing its cache where transformer-lens's attention reads it: transformers 5.24
    renamed that argument and transformer-lens 4.3 then never fills the cache, so later tokens attend only to
    themselves and the text turns to garbage. The lock pins a working pair; the tests compare both paths.
    """
    tokens = model.to_tokens(prompt)
    with model.hooks(fwd_hooks=fwd_hooks or []):
        first = model(tokens, return_type="logits")[0, -1].float()
        if use_cache:
            out = model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False, verbose=False,
                                 use_past_kv_cache=True, return_type="tokens")
        else:
            out, eos = tokens, model.tokenizer.eos_token_id
            for _ in range(max_new_tokens):
                nxt = model(out, return_type="logits")[0, -1].argmax()
                out = torch.cat([out, nxt.view(1, 1).to(out.device)], dim=1)
                if eos is not None and int(nxt) == eos:
                    break
    return model.tokenizer.decode(out[0, tokens.shape[1]:].tolist(), skip_special_tokens=True), first


@dataclasses.dataclass(frozen=True)
class SteerResult:
    prompt: str
    latent: int
    strength: float  # multiples of the latent's max activation
    before: str  # greedy continuation without steering
    after: str  # with the latent's direction added
    promoted: list[tuple[str, float]]  # next-token logit changes at the prompt's last position, largest first
    suppressed: list[tuple[str, float]]
    seconds: float  # wall time of both generations


def steer(model: Any, autoencoder: SparseAutoencoder, hook_name: str, latent: int, strength: float, max_act: float,
          prompt: str, max_new_tokens: int = 24, n_tokens: int = 6) -> SteerResult:
    """Generate from ``prompt`` without and with the latent's direction added at ``strength * max_act``."""
    t0 = time.perf_counter()
    before, logits0 = greedy_generate(model, prompt, max_new_tokens)
    vec = steering_vector(autoencoder, latent, strength * max_act)
    after, logits1 = greedy_generate(model, prompt, max_new_tokens, [(hook_name, _add_hook(vec))])
    diff = logits1 - logits0
    dec = model.tokenizer.decode
    up = [(dec([int(i)]), float(diff[i])) for i in diff.topk(n_tokens).indices]
    down = [(dec([int(i)]), float(diff[i])) for i in (-diff).topk(n_tokens).indices]
    return SteerResult(prompt, int(latent), float(strength), before, after, up, down, time.perf_counter() - t0)


@dataclasses.dataclass(frozen=True)
class TokenLatents:
    token: str
    latents: list[tuple[int, float]]  # the token's strongest latents (id, activation), largest first
    skipped: bool  # BOS or a massive-norm token: not encoded


@torch.no_grad()
def latents_on_text(model: Any, autoencoder: SparseAutoencoder, hook_name: str, text: str, top: int = 3,
                    massive_factor: float = hooks.MASSIVE_FACTOR) -> list[TokenLatents]:
    """Per token of ``text`` (BOS first), the ``top`` latents with the largest activations."""
    tokens = model.to_tokens(text)
    _, cache = model.run_with_cache(tokens, names_filter=hook_name)
    resid = cache[hook_name]
    keep = hooks.keep_positions(resid, massive_factor)[0]
    z = autoencoder.encode(resid[0].float())
    out = []
    for p, tid in enumerate(tokens[0].tolist()):
        tok = model.tokenizer.decode([tid])
        if not keep[p]:
            out.append(TokenLatents(tok, [], True))
            continue
        v, i = z[p].topk(top)
        out.append(TokenLatents(tok, [(int(a), float(b)) for a, b in zip(i, v) if b > 0], False))
    return out
