"""The attention sink and the BOS norm outlier, measured per layer on the same tokens.

With ``A_l [batch, head, query, key]`` the attention pattern of block ``l`` and ``x_l [batch, pos, d_model]``
its ``resid_post``:

- attention share to BOS of head ``h``: ``s_{l,h} = mean_{b, q>=1} A_l[b, h, q, 0]`` (queries after BOS);
- previous-token share of head ``h``: ``p_{l,h} = mean_{b, q>=2} A_l[b, h, q, q-1]`` (from ``q = 2``, so that
  the previous token is never BOS);
- BOS norm ratio: ``r_l = mean_b ||x_l[b, 0]|| / median_{b, p>=1} ||x_l[b, p]||``.

If the sink (``mean_h s_{l,h}`` large) appears at layers where ``r_l`` is still small, the norm outlier is
not what builds the sink.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SinkProfile:
    bos_share: torch.Tensor  # [n_layers, n_heads]: attention from queries 1.. to key 0, per head
    prev_share: torch.Tensor  # [n_layers, n_heads]: attention from query q to key q-1, per head
    norms: torch.Tensor  # [n_layers, batch, pos]: L2 norm of resid_post

    @property
    def layer_bos_share(self) -> torch.Tensor:
        """``[n_layers]``: the BOS share averaged over heads."""
        return self.bos_share.mean(1)

    @property
    def norm_ratio(self) -> torch.Tensor:
        """``[n_layers]``: BOS norm over the median norm of the other positions."""
        return bos_norm_ratio(self.norms)


def bos_norm_ratio(norms: torch.Tensor) -> torch.Tensor:
    """``norms [n_layers, batch, pos] -> [n_layers]``: mean BOS norm over the median norm of positions 1.."""
    return norms[:, :, 0].mean(1) / norms[:, :, 1:].flatten(1).median(1).values


def pattern_shares(pattern: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pattern [batch, head, query, key] -> (bos [head], prev [head])``: BOS share over queries 1.., previous-token
    share over queries 2.. (needs at least 3 positions), both averaged over the batch."""
    p = pattern.float()
    bos = p[:, :, 1:, 0].mean((0, 2))
    prev = torch.diagonal(p, offset=-1, dim1=2, dim2=3)[..., 1:].mean((0, 2))  # A[q, q-1] for q = 2..T-1
    return bos, prev


@torch.no_grad()
def sink_profile(model, tokens: torch.Tensor) -> SinkProfile:
    """One forward pass over ``tokens [batch, pos]``: per-head BOS and previous-token shares, residual norms."""
    n = model.cfg.n_layers
    pat = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n)]
    res = [f"blocks.{layer}.hook_resid_post" for layer in range(n)]
    wanted = set(pat) | set(res)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    shares = [pattern_shares(cache[name]) for name in pat]
    return SinkProfile(
        bos_share=torch.stack([b for b, _ in shares]).cpu(),
        prev_share=torch.stack([p for _, p in shares]).cpu(),
        norms=torch.stack([cache[name].float().norm(dim=-1) for name in res]).cpu(),
    )


def first_layer_at_least(values: torch.Tensor, threshold: float) -> int | None:
    """The first index ``l`` with ``values[l] >= threshold``, or None."""
    hits = torch.nonzero(values >= threshold).flatten()
    return int(hits[0]) if len(hits) else None


def uniform_bos_share(n_pos: int) -> float:
    """BOS share if every query ``q = 1..n_pos-1`` attended uniformly to its ``q + 1`` keys: ``mean_q 1/(q+1)``."""
    return float(sum(1.0 / (q + 1) for q in range(1, n_pos)) / max(1, n_pos - 1))


def sink_onset(profile: SinkProfile, factor: float = 3.0) -> int | None:
    """First layer whose head-averaged BOS share is at least ``factor`` times the uniform share."""
    return first_layer_at_least(profile.layer_bos_share, factor * uniform_bos_share(profile.norms.shape[-1]))


def norm_jump(profile: SinkProfile) -> int:
    """First layer whose BOS norm ratio reaches half its largest value over all layers."""
    ratio = profile.norm_ratio
    return int(first_layer_at_least(ratio, 0.5 * float(ratio.max())))
