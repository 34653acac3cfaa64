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
import json
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from course_lib import corpus, runtime, weight_sparsity

VERSION = "sparse-transformer-v1"


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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # windows per step
    lr: float = 3e-3  # peak Adam learning rate (warmup, then linear decay to 10%)
    warmup_frac: float = 0.01  # fraction of steps of linear warmup
    betas: tuple[float, float] = (0.9, 0.95)  # Adam betas (as in the paper's public script)
    grad_clip: float = 1.0  # clip the global gradient norm to this
    target_fraction: float = 1.0  # kept fraction of every sparsified tensor at the end (1.0 = dense)
    anneal_start: float = 0.01  # fraction of training where the kept fraction starts to fall
    anneal_end: float = 0.5  # fraction of training where it reaches target_fraction
    seed: int = 0  # init and batch order
    eval_windows: int = 64  # validation windows for the final validation loss


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h, e = self.cfg.n_heads, self.cfg.d_head
        q = self.hook_q((x @ self.W_Q).view(b, s, h, e))
        k = self.hook_k((x @ self.W_K).view(b, s, h, e))
        v = self.hook_v((x @ self.W_V).view(b, s, h, e))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(e)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        if self.sink is not None:
            sink = self.sink.view(1, h, 1, 1).expand(b, h, s, 1)
            scores = torch.cat([scores, sink], dim=-1)
        pattern = self.hook_pattern(scores.softmax(-1)[..., :s])
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return z.reshape(b, s, h * e) @ self.W_O + self.b_O


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cfg.act_topk_fraction
        x = self.hook_resid_pre(x)
        a_in = self.hook_attn_in(abstopk(self.ln1(x), f))
        x = self.hook_resid_mid(x + self.hook_attn_out(abstopk(self.attn(a_in), f)))
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

    def forward(self, tokens: torch.Tensor, return_type: str = "logits") -> torch.Tensor:
        s = tokens.shape[1]
        x = self.hook_embed(self.W_E[tokens])
        if self.W_pos is not None:
            x = x + self.W_pos[:s]
        for block in self.blocks:
            x = block(x)
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


# --------------------------------------------------------------------------- training


def lr_at(step: int, tcfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_frac`` of training, then linear decay to 10% of the peak."""
    warm = max(1, int(tcfg.warmup_frac * tcfg.steps))
    if step < warm:
        return tcfg.lr * (step + 1) / warm
    u = (step - warm) / max(1, tcfg.steps - warm)
    return tcfg.lr * (1.0 - 0.9 * u)


@torch.no_grad()
def eval_loss(model: SparseTransformer, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy over ``windows [n, seq_len + 1]``."""
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch_size):
        w = windows[i : i + batch_size].to(dev)
        logits = model(w[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum"))
        count += w[:, 1:].numel()
    return total / max(count, 1)


def train(
    model: SparseTransformer,
    stream: torch.Tensor,
    tcfg: TrainConfig,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train on random windows of ``stream [n_tokens]``; project weights to top-k after each step.

    Returns ``{"step": [...], "loss": [...], "kept_fraction": [...]}`` (logged every few steps).
    """
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(tcfg.seed)
    batches = corpus.random_batches(stream, model.cfg.n_ctx, tcfg.batch_size, gen)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=tcfg.betas)
    sched = weight_sparsity.SparsitySchedule(tcfg.target_fraction, tcfg.anneal_start, tcfg.anneal_end)
    sparse = list(model.sparsified_parameters().values())
    log: dict[str, list[float]] = {"step": [], "loss": [], "kept_fraction": []}
    every = max(1, tcfg.steps // 100)
    bar = tqdm(range(tcfg.steps), desc=f"train (keep {tcfg.target_fraction:g})", disable=not progress)
    ema = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tcfg)
        batch = next(batches).to(dev)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        frac = sched.fraction_at(step, tcfg.steps)
        weight_sparsity.project_topk_(sparse, frac)
        lv = float(loss.detach())
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if step % every == 0 or step == tcfg.steps - 1:
            log["step"].append(step)
            log["loss"].append(lv)
            log["kept_fraction"].append(frac)
            bar.set_postfix(loss=f"{ema:.3f}", keep=f"{frac:.3f}")
    return log


@dataclasses.dataclass
class TrainedModel:
    """A trained (or freshly initialised) model with what the notebook reports about it."""

    name: str  # e.g. "dense", "sparse 0.1", "random init"
    model: SparseTransformer
    val_loss: float  # next-token cross-entropy on held-out files
    nonzero_fraction: float  # measured over the sparsified tensors of the weights
    log: dict[str, list[float]]  # training curve
    folder: Path | None  # cache folder holding model.safetensors (None: not cached)


def data_streams(profile: str) -> tuple[object, torch.Tensor, torch.Tensor]:
    """(tokenizer, train stream, val stream) of the default corpus for ``profile``."""
    ccfg = corpus.config_for(profile)
    tok = corpus.train_tokenizer(ccfg)
    train_stream = corpus.encode_texts(tok, corpus.load_texts(ccfg, "train"))
    val_stream = corpus.encode_texts(tok, corpus.load_texts(ccfg, "val"))
    return tok, train_stream, val_stream


def val_windows(val_stream: torch.Tensor, seq_len: int, n: int) -> torch.Tensor:
    """The first ``n`` consecutive windows ``[n, seq_len + 1]`` of the validation stream."""
    w = corpus.windows(val_stream, seq_len + 1)
    return w[:n]


def load_or_train(
    name: str,
    mcfg: SparseTransformerConfig,
    tcfg: TrainConfig,
    train_stream: torch.Tensor,
    val_stream: torch.Tensor,
    data_key: object,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> TrainedModel:
    """Train (or load from the cache) one model; the cache key is (configs, data_key, VERSION).

    The cache folder holds ``model.safetensors`` (weights) and ``train_log.json`` (curve, losses).
    ``tcfg.steps == 0`` gives the randomly initialised model (the pruning control).
    """
    from safetensors.torch import load_file, save_file

    def build(folder: Path) -> None:
        torch.manual_seed(tcfg.seed)
        model = SparseTransformer(mcfg).to(device)
        log = train(model, train_stream, tcfg, progress) if tcfg.steps > 0 else {}
        vloss = eval_loss(model, val_windows(val_stream, mcfg.n_ctx, tcfg.eval_windows))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "train_log.json").write_text(json.dumps({"log": log, "val_loss": vloss}))

    key = {"model": mcfg, "train": tcfg, "data": data_key}
    folder = runtime.load_or_build("sparse_transformer", key, VERSION, build)
    model = SparseTransformer(mcfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.to(device).eval()
    meta = json.loads((folder / "train_log.json").read_text())
    nz = weight_sparsity.nonzero_fraction(model.sparsified_parameters().values())
    return TrainedModel(name, model, float(meta["val_loss"]), nz, meta["log"], folder)


def checkpoint_nonzero_fraction(folder: Path) -> float:
    """Fraction of nonzero entries of the sparsified tensors, read from ``model.safetensors``."""
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / "model.safetensors"))
    skip = ("ln", "sink", "W_bigram")
    return weight_sparsity.nonzero_fraction(v for k, v in state.items() if not any(s in k for s in skip))


def iter_node_hooks(cfg: SparseTransformerConfig) -> Iterator[tuple[str, str, int]]:
    """The pruning's node sites in forward order: ``(kind, hook_name, n_channels)``.

    Kinds: ``attn_in``/``mlp_in``/``final_in`` (residual read channels), ``q``/``k``/``v``
    (attention channels, ``n_heads * d_head``), ``attn_out``/``mlp_out`` (residual write
    channels), ``neuron`` (MLP neurons).
    """
    d, hd = cfg.d_model, cfg.n_heads * cfg.d_head
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        yield "attn_in", f"{p}.hook_attn_in", d
        yield "q", f"{p}.attn.hook_q", hd
        yield "k", f"{p}.attn.hook_k", hd
        yield "v", f"{p}.attn.hook_v", hd
        yield "attn_out", f"{p}.hook_attn_out", d
        yield "mlp_in", f"{p}.hook_mlp_in", d
        yield "neuron", f"{p}.mlp.hook_post", cfg.d_mlp
        yield "mlp_out", f"{p}.hook_mlp_out", d
    yield "final_in", "hook_final_in", d
