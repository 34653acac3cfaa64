"""A small GPT-style transformer trained with weight sparsity (after Gao et al., OpenAI, 2025).

Architecture (one block, ``x`` the residual stream ``[batch, seq, d_model]``)::

    a_in  = RMSNorm_1(x)                                   hook_attn_in   (residual read channels)
    q, k, v = a_in W_Q, a_in W_K, a_in W_V                 attn.hook_q/k/v [batch, seq, n_heads, d_head]
    p     = softmax([q.k / sqrt(d_head), sink_h])[:seq]    attn.hook_pattern (causal; sink = dummy slot)
    a_out = (p v) W_O + b_O                                hook_attn_out  (residual write channels)
    x     = x + a_out
    m_in  = RMSNorm_2(x)                                   hook_mlp_in    (residual read channels)
    n     = GELU(m_in W_in + b_in)                         mlp.hook_post  (neurons) [batch, seq, d_mlp]
    m_out = n W_out + b_out                                hook_mlp_out   (residual write channels)
    x     = x + m_out

and at the end ``logits = RMSNorm_f(x) W_U + b_U (+ bigram[token])`` with the normalised final
residual at ``hook_final_in`` (the unembedding's read channels). The paper's choices kept here:
RMSNorm, head size 16, an attention sink (a learnable per-head logit for a slot whose value is
zero, so a head can attend "nowhere"), untied embedding and unembedding, no positional embedding
by default (causal attention still sees order), an optional dense bigram table added to the
logits, and optional AbsTopK activation sparsity (keep the entries of largest ``|a|``).

Weight sparsity: after every optimizer step every weight matrix, bias and embedding keeps its
top-k entries by magnitude (:mod:`course_lib.weight_sparsity`); the kept fraction anneals
linearly from 1 to ``target_fraction``. RMSNorm gains, the attention-sink logits and the bigram
table stay dense (they are per-channel scales / lookup tables, not wiring between nodes).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint


@dataclasses.dataclass(frozen=True)
class SparseTransformerConfig:
    d_vocab: int = 2048  # vocabulary size (the course BPE)
    d_model: int = 64  # residual stream width
    n_layers: int = 2  # transformer blocks
    d_head: int = 16  # head size (the paper uses 16); n_heads = d_model // d_head
    d_mlp: int = 256  # MLP neurons per block
    n_ctx: int = 64  # maximum sequence length
    attention_sink: bool = True  # learnable per-head logit on a dummy key with value 0
    use_bigram: bool = False  # dense learnable [d_vocab, d_vocab] table added to the logits
    use_pos_emb: bool = False  # learned absolute positions (the paper effectively has none)
    act_topk_fraction: float | None = None  # AbsTopK: keep this fraction of |activations| (None: off)
    init_std: float = 0.02  # std of the normal init of weight matrices

    def __post_init__(self) -> None:
        if self.d_model % self.d_head:
            raise ValueError(f"d_model={self.d_model} must be a multiple of d_head={self.d_head}")
        if self.act_topk_fraction is not None and not 0 < self.act_topk_fraction <= 1:
            raise ValueError("act_topk_fraction must be in (0, 1] or None")

    @property
    def n_heads(self) -> int:
        return self.d_model // self.d_head


def abstopk(x: torch.Tensor, fraction: float | None) -> torch.Tensor:
    """AbsTopK along the last dim: keep the ``ceil(fraction * d)`` entries of largest ``|x|``."""
    if fraction is None or fraction >= 1:
        return x
    k = max(1, math.ceil(fraction * x.shape[-1]))
    idx = x.abs().topk(k, dim=-1).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * w`` over the last dim."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


class Attention(nn.Module):
    """Causal multi-head attention with an optional sink. Weights ``W_Q/K/V: [d_model, n_heads*d_head]``."""

    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.d_model, cfg.n_heads * cfg.d_head
        self.W_Q = nn.Parameter(torch.randn(d, hd) * cfg.init_std)
        self.W_K = nn.Parameter(torch.randn(d, hd) * cfg.init_std)
        self.W_V = nn.Parameter(torch.randn(d, hd) * cfg.init_std)
        self.W_O = nn.Parameter(torch.randn(hd, d) * cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.sink = nn.Parameter(torch.zeros(cfg.n_heads)) if cfg.attention_sink else None
        self.hook_q = HookPoint()  # [batch, seq, n_heads, d_head]
        self.hook_k = HookPoint()  # [batch, seq, n_heads, d_head]
        self.hook_v = HookPoint()  # [batch, seq, n_heads, d_head]
        self.hook_pattern = HookPoint()  # [batch, n_heads, query, key]
        self.hook_z = HookPoint()  # [batch, seq, n_heads, d_head]

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """``x [b, s, d] -> [b, s, d]``; with ``last [b]`` only the query at position ``last[i]`` of row ``i``
        is computed (keys and values at every position): ``-> [b, 1, d]``, the same numbers as the full
        output at those positions."""
        b, s, _ = x.shape
        h, e = self.cfg.n_heads, self.cfg.d_head
        rows = torch.arange(b, device=x.device)
        xq = x if last is None else x[rows, last][:, None]
        sq = xq.shape[1]
        q = self.hook_q((xq @ self.W_Q).view(b, sq, h, e))
        k = self.hook_k((x @ self.W_K).view(b, s, h, e))
        v = self.hook_v((x @ self.W_V).view(b, s, h, e))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(e)
        if last is None:
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        else:  # key positions after each row's query position: [b, 1, 1, s]
            causal = (torch.arange(s, device=x.device)[None, :] > last[:, None])[:, None, None, :]
        scores = scores.masked_fill(causal, float("-inf"))
        if self.sink is not None:
            sink = self.sink.view(1, h, 1, 1).expand(b, h, sq, 1)
            scores = torch.cat([scores, sink], dim=-1)
        pattern = self.hook_pattern(scores.softmax(-1)[..., :s])
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return z.reshape(b, sq, h * e) @ self.W_O + self.b_O


class MLP(nn.Module):
    """``GELU(x W_in + b_in) W_out + b_out`` with the neurons at ``hook_post``."""

    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_in = nn.Parameter(torch.randn(cfg.d_model, cfg.d_mlp) * cfg.init_std)
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.randn(cfg.d_mlp, cfg.d_model) * cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()  # [batch, seq, d_mlp]
        self.hook_post = HookPoint()  # [batch, seq, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        post = self.hook_post(abstopk(F.gelu(pre), self.cfg.act_topk_fraction))
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ln1 = RMSNorm(cfg.d_model)
        self.ln2 = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        for name in ("resid_pre", "attn_in", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post"):
            setattr(self, f"hook_{name}", HookPoint())  # each [batch, seq, d_model]

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """``[b, s, d] -> [b, s, d]``; with ``last [b]``, everything after the attention's keys and values only
        at position ``last[i]`` of row ``i``: ``-> [b, 1, d]``."""
        f = self.cfg.act_topk_fraction
        x = self.hook_resid_pre(x)
        a_in = self.hook_attn_in(abstopk(self.ln1(x), f))
        attn = self.attn(a_in, last)
        if last is not None:
            x = x[torch.arange(x.shape[0], device=x.device), last][:, None]
        x = self.hook_resid_mid(x + self.hook_attn_out(abstopk(attn, f)))
        m_in = self.hook_mlp_in(abstopk(self.ln2(x), f))
        return self.hook_resid_post(x + self.hook_mlp_out(abstopk(self.mlp(m_in), f)))


class SparseTransformer(HookedRootModule):
    """The course's small transformer. ``forward(tokens [batch, seq]) -> logits [batch, seq, d_vocab]``.

    ``return_type="final"`` returns the normalised final residual ``[batch, seq, d_model]`` (after
    ``hook_final_in``); :meth:`unembed_columns` turns it into the logits of a few tokens only.
    """

    def __init__(self, cfg: SparseTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * 0.1)
        self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.01) if cfg.use_pos_emb else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = RMSNorm(cfg.d_model)
        self.W_U = nn.Parameter(torch.randn(cfg.d_model, cfg.d_vocab) * cfg.init_std)
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        self.W_bigram = nn.Parameter(torch.zeros(cfg.d_vocab, cfg.d_vocab)) if cfg.use_bigram else None
        self.hook_embed = HookPoint()  # [batch, seq, d_model]
        self.hook_final_in = HookPoint()  # [batch, seq, d_model]
        self.hook_bigram = HookPoint()  # [batch, seq, d_vocab] (only with use_bigram)
        self.setup()

    def forward(self, tokens: torch.Tensor, return_type: str = "logits", last: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``last [batch]`` (only with ``return_type="final"``): the final residual at position ``last[i]`` of
        row ``i`` only, ``[batch, 1, d_model]``; the last block then computes just those positions (the
        pruning's task loss reads nothing else; bench/bench_pruning_forward.py times it)."""
        if last is not None and return_type != "final":
            raise ValueError("last= needs return_type='final'")
        s = tokens.shape[1]
        x = self.hook_embed(self.W_E[tokens])
        if self.W_pos is not None:
            x = x + self.W_pos[:s]
        for i, block in enumerate(self.blocks):
            x = block(x, last if i == len(self.blocks) - 1 else None)
        final = self.hook_final_in(self.ln_final(x))
        if return_type == "final":
            return final
        logits = final @ self.W_U + self.b_U
        if self.W_bigram is not None:
            logits = logits + self.hook_bigram(self.W_bigram[tokens])
        return logits

    def unembed_columns(self, final: torch.Tensor, prev_tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits of a few tokens per row: ``final [n, d_model]``, ``prev_tokens [n]``, ``ids [n, k]`` -> ``[n, k]``.

        Same numbers as ``forward(...)[..., ids]`` at those positions, without the full unembedding.
        """
        out = torch.einsum("nd,nkd->nk", final, self.W_U.T[ids]) + self.b_U[ids]
        if self.W_bigram is not None:
            out = out + self.W_bigram[prev_tokens[:, None], ids]
        return out

    def sparsified_parameters(self) -> dict[str, nn.Parameter]:
        """Every weight matrix, bias and embedding (what the top-k projection constrains)."""
        skip = ("ln", "sink", "W_bigram")
        return {n: p for n, p in self.named_parameters() if not any(s in n for s in skip)}
