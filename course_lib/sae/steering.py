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
from course_lib.sae.dashboards import next_token_hits
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


# --------------------------------------------------------------------------- which latent to steer, and does it steer


@dataclasses.dataclass(frozen=True)
class SteeringPick:
    """The latent chosen for steering, and why."""

    latent: int  # the chosen latent
    hit_share: float  # share of its strongest contexts whose next token is among its `top` promoted tokens
    n_contexts: int  # contexts that share is over
    top: int  # size of the promoted set
    n_candidates: int  # latents scored
    density: float  # the chosen latent's density on the store


def pick_steering_latent(codes: Any, autoencoder: SparseAutoencoder, w_u: torch.Tensor, n_candidates: int = 300,
                         density_range: tuple[float, float] = (1e-3, 3e-2), n: int = 20, top: int = 50) -> SteeringPick:
    """Among up to ``n_candidates`` latents whose density lies in ``density_range`` (evenly spaced in density order),
    the one whose decoder direction best predicts what follows it: the highest share of its ``n`` strongest contexts
    whose next token is among its ``top`` promoted tokens on the direct path
    (:func:`~course_lib.sae.dashboards.next_token_hits`); ties go to the denser latent."""
    density = codes.density()
    ok = [int(i) for i in density.argsort() if density_range[0] <= density[i] <= density_range[1]]
    if not ok:
        ok = [int(i) for i in density.argsort() if density[i] > 0]
    cands = [ok[int(j)] for j in torch.linspace(0, len(ok) - 1, min(n_candidates, len(ok))).round().long().unique()]
    scored = [(next_token_hits(codes, autoencoder, w_u, c, n, top), c) for c in cands]
    (share, n_ctx), best = max(scored, key=lambda t: (t[0][0] if t[0][0] == t[0][0] else -1.0, density[t[1]]))
    return SteeringPick(latent=best, hit_share=float(share), n_contexts=int(n_ctx), top=top, n_candidates=len(cands),
                        density=float(density[best]))


def promoted_tokens(autoencoder: SparseAutoencoder, w_u: torch.Tensor, latent: int, top: int = 50) -> set[int]:
    """The ``top`` token ids the latent's decoder direction promotes most on the direct path (``w_dec @ W_U``)."""
    return set((autoencoder.W_dec.detach().float().cpu()[latent] @ w_u).topk(top).indices.tolist())


def _greedy_ids(model: Any, prompt: str, max_new_tokens: int, fwd_hooks: list | None = None) -> list[int]:
    tokens = model.to_tokens(prompt)
    with model.hooks(fwd_hooks=fwd_hooks or []):
        out = model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False, verbose=False,
                             use_past_kv_cache=True, return_type="tokens")
    return out[0, tokens.shape[1]:].tolist()


@dataclasses.dataclass(frozen=True)
class SteeringEffect:
    """How often the latent's promoted tokens appear in greedy continuations, without and with steering."""

    latent: int
    strength: float  # multiples of the latent's max activation
    prompts: tuple[str, ...]
    before: tuple[str, ...]  # continuation per prompt, unsteered
    after: tuple[str, ...]  # continuation per prompt, steered
    rate_before: tuple[float, ...]  # share of continuation tokens in the target set, per prompt, unsteered
    rate_after: tuple[float, ...]  # the same, steered
    n_targets: int  # size of the target set
    seconds: float  # wall time of all generations


def steering_effect(model: Any, autoencoder: SparseAutoencoder, hook_name: str, latent: int, strength: float,
                    max_act: float, prompts: tuple[str, ...] | list[str], targets: set[int],
                    max_new_tokens: int = 16, random_seed: int | None = None) -> SteeringEffect:
    """Greedy continuations of each prompt without and with the latent's direction added at ``strength * max_act``
    (as :func:`steer`), and the share of continuation tokens that belong to ``targets`` (token ids).

    ``random_seed``: the control. Add a random direction of the same norm instead (Gaussian, seeded), scored
    against the same ``targets``: what any push of that size does to the rate."""
    t0 = time.perf_counter()
    vec = steering_vector(autoencoder, latent, strength * max_act)
    if random_seed is not None:
        g = torch.Generator().manual_seed(random_seed)
        rnd = torch.randn(vec.shape, generator=g)
        vec = (rnd / rnd.norm() * vec.float().norm()).to(vec.dtype)
    before, after, rb, ra = [], [], [], []
    for p in prompts:
        ids0 = _greedy_ids(model, p, max_new_tokens)
        ids1 = _greedy_ids(model, p, max_new_tokens, [(hook_name, _add_hook(vec))])
        before.append(model.tokenizer.decode(ids0, skip_special_tokens=True))
        after.append(model.tokenizer.decode(ids1, skip_special_tokens=True))
        rb.append(sum(t in targets for t in ids0) / max(len(ids0), 1))
        ra.append(sum(t in targets for t in ids1) / max(len(ids1), 1))
    return SteeringEffect(int(latent), float(strength), tuple(prompts), tuple(before), tuple(after), tuple(rb), tuple(ra),
                          len(targets), time.perf_counter() - t0)
