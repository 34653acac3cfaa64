"""The four unit classes of the comparison, read from one of notebook 02's small transformers.

Sites (``L`` the last block)::

    neurons   n = GELU(m_in W_in + b_in)          blocks.L.mlp.hook_post   [batch, pos, d_mlp]
    channels  m_in = RMSNorm_2(resid_mid)          blocks.L.hook_mlp_in     [batch, pos, d_model]

``channels`` are the residual stream in its own basis, as the last MLP reads it (one of 02's pruning node
sites). **Random directions** ``D [d_model, n]`` (unit columns) read the same site, ``m_in D``; **SAE latents**
are a TopK SAE's ``z = TopK(W_enc (s m_in - b_pre) + b_enc)`` on the dense model's channels
(:mod:`course_lib.capstone.dictionary`).

**Polarity.** Channels and random directions are signed, and the records keep ``max(a, 0)``: each such unit
is read with the sign whose strong tail is larger, ``a -> sign * a`` with

    sign = +1 if quantile_q(a) >= quantile_q(-a) else -1        (q = 0.999, on the selection split)

(:func:`orient`); neurons (GELU) and SAE latents are already one-sided. Position 0 of every window has no
context and is left out (the records drop it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from course_lib.circuits import SparseTransformer

OrientFn = Callable[[torch.Tensor], int]  # activations of one unit (any shape) -> +1 or -1

CLASSES: tuple[str, ...] = ("dense neuron", "sparse neuron", "dense channel", "sparse channel", "sae latent",
                            "dense random", "sparse random")  # every unit class, in the figures' order
COLORS = {"dense neuron": "tab:orange", "sparse neuron": "tab:red", "dense channel": "gold",
          "sparse channel": "tab:purple", "sae latent": "tab:blue", "dense random": "silver",
          "sparse random": "tab:gray"}
ORIENT_QUANTILE = 0.999  # the tail compared by orient()


def neuron_hook(model: SparseTransformer) -> str:
    """The last block's MLP neurons, ``blocks.L.mlp.hook_post``."""
    return f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"


def channel_hook(model: SparseTransformer) -> str:
    """The residual stream as the last MLP reads it, ``blocks.L.hook_mlp_in``."""
    return f"blocks.{model.cfg.n_layers - 1}.hook_mlp_in"


@torch.no_grad()
def harvest(model: SparseTransformer, windows: torch.Tensor, hooks: Sequence[str], batch_size: int = 64
            ) -> dict[str, torch.Tensor]:
    """``{hook: activations [n_windows, pos, channels]}`` (float32, CPU) of ``model`` over ``windows [n, pos]``."""
    dev = next(model.parameters()).device
    outs: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for i in range(0, windows.shape[0], batch_size):
        _, cache = model.run_with_cache(windows[i:i + batch_size].to(dev), names_filter=list(hooks))
        for h in hooks:
            outs[h].append(cache[h].float().cpu())
    return {h: torch.cat(v) for h, v in outs.items()}


def orient(acts: torch.Tensor, q: float = ORIENT_QUANTILE) -> int:
    """The polarity of one signed unit: +1 when the ``q``-quantile of ``acts`` is at least that of ``-acts``."""
    a = acts.flatten().float()
    if a.numel() > 1_000_000:  # torch.quantile's size limit: a strided subsample
        a = a[:: a.numel() // 1_000_000 + 1]
    return 1 if float(torch.quantile(a, q)) >= float(torch.quantile(-a, q)) else -1


def random_directions(d_model: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``D [d_model, n]``: ``n`` directions drawn uniformly on the sphere."""
    d = torch.randn(d_model, n, generator=generator)
    return d / d.norm(dim=0, keepdim=True)


@dataclasses.dataclass(frozen=True)
class UnitSet:
    """Units of one class in one model: ``acts(h) [.., pos, n]`` from the site's activation ``h``."""

    cls: str  # one of CLASSES
    model: str  # the model's name (the dense model's for SAE latents)
    ids: tuple[int, ...]  # index of each unit in its family (neuron, channel, latent or direction)
    signs: tuple[int, ...]  # polarity of each unit (+1 for one-sided units)
    hook: str  # the site it reads
    directions: torch.Tensor | None = None  # [d_model, n] for random directions
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None  # site -> latents [.., n_latents] (SAE)

    def names(self) -> list[str]:
        """``"<class>/<model>/<id>"`` with ``-`` appended for a flipped unit."""
        return [f"{self.cls}/{self.model}/{i}" + ("-" if s < 0 else "") for i, s in zip(self.ids, self.signs)]

    def family(self, h: torch.Tensor) -> torch.Tensor:
        """Every unit of the family (before choosing): ``[.., pos, n_family]``."""
        if self.directions is not None:
            return h @ self.directions
        if self.encoder is not None:
            return self.encoder(h)
        return h

    def acts(self, h: torch.Tensor) -> torch.Tensor:
        """The chosen, oriented units: ``[.., pos, len(ids)]``."""
        a = self.family(h)[..., list(self.ids)]
        return a * torch.tensor(self.signs, dtype=a.dtype)


def choose(cls: str, model: str, hook: str, h_select: torch.Tensor, n: int, generator: torch.Generator,
           signed: bool, orient_fn: OrientFn = orient, directions: torch.Tensor | None = None,
           encoder: Callable[[torch.Tensor], torch.Tensor] | None = None) -> UnitSet:
    """``n`` units of a family drawn at random among the alive ones (positive, after orientation, on at least 0.1%
    of the positions of the selection split ``h_select [n_windows, pos, d]``, position 0 left out), as Bills et
    al. draw neurons (no cherry-picking); each oriented with ``orient_fn`` when ``signed``."""
    from_family = UnitSet(cls, model, (), (), hook, directions, encoder).family(h_select)[:, 1:]
    oriented = from_family
    signs_all: list[int] = [1] * from_family.shape[-1]
    if signed:
        signs_all = [int(orient_fn(from_family[..., j])) for j in range(from_family.shape[-1])]
        oriented = from_family * torch.tensor(signs_all, dtype=from_family.dtype)
    frac = (oriented > 0).float().mean(dim=(0, 1))
    alive = torch.nonzero(frac >= 1e-3).flatten()
    pick = sorted(int(i) for i in alive[torch.randperm(alive.numel(), generator=generator)[:n]])
    return UnitSet(cls, model, tuple(pick), tuple(signs_all[i] for i in pick), hook, directions, encoder)
