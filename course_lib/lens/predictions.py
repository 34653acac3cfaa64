"""Looking inside a real LM: next-token predictions, the logit lens, residual norms, ablations.

All functions take a transformer-lens model (``TransformerBridge`` or ``HookedRootModule``) with
``to_tokens``, ``run_with_cache``, ``run_with_hooks``, ``ln_final``, ``unembed`` and ``cfg``.

Logit lens (nostalgebraist, 2020): read the residual stream after block ``l`` as if it were the
last layer, ``logits_l = W_U · RMSNorm_final(resid_post_l)``, to see when the model "knows" its
answer. Per-token loss: ``-log softmax(logits)[t, token_{t+1}]``, averaged over positions 1..T-1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Prediction:
    token: str  # decoded token, leading spaces kept
    token_id: int
    prob: float


@dataclass(frozen=True)
class LensTrace:
    answer: Prediction  # the model's own top next token (its last layer)
    top: list[list[Prediction]]  # top-k tokens read at each layer, most likely first
    answer_prob: torch.Tensor  # [n_layers]: P(answer) read at each layer
    answer_rank: torch.Tensor  # [n_layers]: rank of the answer at each layer (1 = top)


def is_wordlike(token: str) -> bool:
    """True if the token has a letter or a digit (not only punctuation or whitespace)."""
    return any(ch.isalnum() for ch in token)


def top_wordlike(preds: Sequence[Prediction]) -> Prediction | None:
    """The most likely prediction with a letter or digit in it, or None."""
    return next((p for p in preds if is_wordlike(p.token)), None)


def _tokens(model, prompt: str | torch.Tensor) -> torch.Tensor:
    return model.to_tokens(prompt) if isinstance(prompt, str) else prompt


@torch.no_grad()
def top_next_tokens(model, prompt: str, k: int = 10) -> list[Prediction]:
    """The ``k`` most probable next tokens after ``prompt`` with their probabilities."""
    logits = model(_tokens(model, prompt))[0, -1].float()
    probs = logits.softmax(-1)
    top = probs.topk(k)
    return [
        Prediction(model.to_string(int(i)), int(i), float(p))
        for p, i in zip(top.values, top.indices, strict=True)
    ]


@torch.no_grad()
def logit_lens(
    model, prompt: str, k: int = 1, probs_fn: Callable | None = None
) -> tuple[list[list[Prediction]], torch.Tensor]:
    """Top-``k`` predictions at the last position read from every layer's ``resid_post``.

    Returns ``(per_layer, final_token_prob)``: ``per_layer[l]`` is the top-k list after block ``l``
    and ``final_token_prob[l]`` the probability, at layer ``l``, of the model's final top token.
    ``probs_fn(resid [n_layers, d_model], ln_final, unembed) -> [n_layers, d_vocab]`` replaces
    :func:`logit_lens_probs` (notebook 00's exercise).
    """
    toks = _tokens(model, prompt)
    n = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(n)]
    logits, cache = model.run_with_cache(toks, names_filter=lambda name: name in names)
    final_top = int(logits[0, -1].argmax())
    resid = torch.stack([cache[name][0, -1] for name in names])  # [n_layers, d_model]
    probs = (probs_fn or logit_lens_probs)(resid, model.ln_final, model.unembed).float()  # [n_layers, vocab]
    per_layer = []
    for layer in range(n):
        top = probs[layer].topk(k)
        per_layer.append(
            [Prediction(model.to_string(int(i)), int(i), float(p)) for p, i in zip(top.values, top.indices, strict=True)]
        )
    return per_layer, probs[:, final_top].cpu()


@torch.no_grad()
def logit_lens_trace(model, prompt: str, k: int = 10, probs_fn: Callable | None = None) -> LensTrace:
    """:func:`logit_lens` with the rank of the final answer at each layer:
    ``rank_l = 1 + #{v : p_l[v] > p_l[answer]}``."""
    toks = _tokens(model, prompt)
    n = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(n)]
    logits, cache = model.run_with_cache(toks, names_filter=lambda name: name in names)
    final = logits[0, -1].float().softmax(-1)
    answer_id = int(final.argmax())
    resid = torch.stack([cache[name][0, -1] for name in names])  # [n_layers, d_model]
    probs = (probs_fn or logit_lens_probs)(resid, model.ln_final, model.unembed).float()  # [n_layers, vocab]
    p_answer = probs[:, answer_id]
    rank = (probs > p_answer[:, None]).sum(-1) + 1
    top = []
    for layer in range(n):
        t = probs[layer].topk(k)
        top.append([Prediction(model.to_string(int(i)), int(i), float(p)) for p, i in zip(t.values, t.indices, strict=True)])
    answer = Prediction(model.to_string(answer_id), answer_id, float(final[answer_id]))
    return LensTrace(answer, top, p_answer.cpu(), rank.cpu())


def logit_lens_probs(resid: torch.Tensor, ln_final: Callable, unembed: Callable) -> torch.Tensor:
    """``softmax(unembed(ln_final(resid)))``: ``resid [n_layers, d_model] -> [n_layers, d_vocab]``."""
    return unembed(ln_final(resid[:, None, :]))[:, 0].float().softmax(-1)


def zero_ablation_hook(activation: torch.Tensor, hook) -> torch.Tensor:  # noqa: ARG001 - hook signature
    """A transformer-lens hook that replaces the activation by zeros."""
    return torch.zeros_like(activation)


def head_ablation_hook(z: torch.Tensor, hook, head: int) -> torch.Tensor:  # noqa: ARG001 - hook signature
    """Zero one attention head's output ``z [batch, pos, head_index, d_head]`` (use with functools.partial)."""
    z = z.clone()
    z[:, :, head] = 0
    return z


@torch.no_grad()
def residual_norms(model, tokens: torch.Tensor) -> torch.Tensor:
    """L2 norm of ``resid_post`` per layer and position: ``[n_layers, batch, pos]``."""
    n = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(n)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[name].float().norm(dim=-1) for name in names]).cpu()


def token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: ``logits [batch, pos, vocab]``, ``tokens [batch, pos]``."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None]).mean()


@torch.no_grad()
def ablation_losses(
    model, tokens: torch.Tensor, layers: Sequence[int], components: Sequence[str] = ("attn", "mlp"),
    hook: Callable = zero_ablation_hook, loss_fn: Callable = token_loss, progress: bool = True,
) -> dict[str, list[float]]:
    """Loss after ablating each component's output (``hook_attn_out`` / ``hook_mlp_out``) with ``hook``.

    Returns ``{"clean": [loss], "attn": [loss per layer], "mlp": [...]}`` for the given layers.
    ``hook`` (default: zero-ablation) and ``loss_fn`` can be the learner's own (notebook 00's exercises).
    One forward per (component, layer), counted by a progress bar.
    """
    out: dict[str, list[float]] = {"clean": [float(loss_fn(model(tokens), tokens))]}
    bar = tqdm(total=len(components) * len(layers), desc="ablations", unit="forward", disable=not progress)
    for comp in components:
        losses = []
        for layer in layers:
            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{comp}_out", hook)])
            losses.append(float(loss_fn(logits, tokens)))
            bar.update(1)
        out[comp] = losses
    bar.close()
    return out


def zero_except_bos_hook(activation: torch.Tensor, hook) -> torch.Tensor:  # noqa: ARG001 - hook signature
    """Zero the activation ``[batch, pos, ...]`` at every position but BOS (position 0)."""
    out = torch.zeros_like(activation)
    out[:, 0] = activation[:, 0]
    return out


def ranked_costs(losses: dict[str, list[float]], layers: Sequence[int]) -> list[tuple[str, int, float]]:
    """``(component, layer, loss - clean)`` for every ablated component, costliest first."""
    clean = losses["clean"][0]
    rows = [(c, layer, v - clean) for c in losses if c != "clean" for layer, v in zip(layers, losses[c], strict=True)]
    return sorted(rows, key=lambda r: -r[2])
