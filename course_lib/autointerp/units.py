"""Units to explain, behind one interface: a *unit source* maps token windows to activations.

A :class:`UnitSource` turns token windows ``tokens [batch, pos]`` into unit activations
``acts [batch, pos, n_units]``. Three real kinds read one hook point of a transformer-lens bridge
(so that several sources at the same layer share one forward pass, see :func:`harvest`):

* ``"sae"``      SAE latents: ``z = sae.encode(resid)`` at ``blocks.{L}.hook_resid_post``;
* ``"neuron"``   MLP neurons: ``blocks.{L}.mlp.hook_post`` (the activations entering ``W_out``);
* ``"random"``   random unit directions ``d_j`` in the residual stream (a control):
  ``a_j = resid . d_j``.

A fourth, :class:`TokenSource`, needs no model: it fires ``1.0`` exactly on given token ids (the
known-answer unit of the tests).

Position 0 (BOS) and *massive-activation* tokens (residual norm above ``massive_factor`` x the
batch median, ~0.02% of SmolLM2's tokens at layer 15, left out of the SAE's training in notebook
03) get activation 0 for every unit: their values are artefacts of the norm, not of the text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from course_lib import activations

UNIT_KINDS: tuple[str, ...] = ("sae", "neuron", "random")


@dataclasses.dataclass
class UnitSource:
    """Activations of ``n_units`` units computed from one hook point.

    ``transform(hook_act [b, p, d]) -> acts [b, p, n_units]``; ``unit_ids[j]`` is the index of unit
    ``j`` in its family (latent, neuron or direction number).
    """

    kind: str  # "sae" | "neuron" | "random" | "token"
    hook_name: str | None  # hook point read (None: computed from the tokens alone)
    unit_ids: list[int]  # index of each unit in its family
    transform: Callable[[torch.Tensor], torch.Tensor]  # hook activation [b, p, d] -> [b, p, n_units]
    model: Any = None  # the bridge that runs the forward pass (None for token sources)

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    def unit_names(self) -> list[str]:
        return [f"{self.kind}/{i}" for i in self.unit_ids]

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [b, p] -> acts [b, p, n_units]`` (float32, BOS/massive positions zeroed)."""
        return harvest([self], tokens, batch_size=tokens.shape[0], progress=False)[0]


@dataclasses.dataclass
class TokenSource(UnitSource):
    """Units that fire ``1.0`` exactly on one token id each (a unit with a known answer)."""

    @classmethod
    def for_tokens(cls, token_ids: Sequence[int]) -> TokenSource:
        ids = torch.tensor(list(token_ids))
        return cls(kind="token", hook_name=None, unit_ids=[int(t) for t in token_ids],
                   transform=lambda tok: (tok[..., None] == ids.to(tok.device)).float())


def neuron_source(model: Any, layer: int, neurons: Sequence[int]) -> UnitSource:
    """MLP neurons ``neurons`` at ``blocks.{layer}.mlp.hook_post`` ``[b, p, d_mlp]``."""
    idx = torch.tensor(list(neurons))
    return UnitSource("neuron", f"blocks.{layer}.mlp.hook_post", [int(i) for i in neurons],
                      lambda h: h[..., idx.to(h.device)].float(), model)


def random_direction_source(model: Any, layer: int, n: int, generator: torch.Generator) -> UnitSource:
    """``n`` random unit directions ``D [d_model, n]`` in ``blocks.{layer}.hook_resid_post``."""
    d_model = int(model.cfg.d_model)
    directions = torch.randn(d_model, n, generator=generator)
    directions = directions / directions.norm(dim=0, keepdim=True)
    return UnitSource("random", f"blocks.{layer}.hook_resid_post", list(range(n)),
                      lambda h: h.float() @ directions.to(h.device), model)


def sae_source(model: Any, default_sae: Any, latents: Sequence[int]) -> UnitSource:
    """Latents ``latents`` of ``default_sae.sae`` (the :class:`course_lib.sae.DefaultSAE` contract)."""
    idx = torch.tensor(list(latents))
    sae = default_sae.sae

    def transform(h: torch.Tensor) -> torch.Tensor:
        z = sae.encode(h.float().to(next(sae.parameters()).device))
        return z[..., idx.to(z.device)].float().to(h.device)

    return UnitSource("sae", default_sae.hook_name, [int(i) for i in latents], transform, model)


def _layer_of(hook_name: str) -> int:
    return int(hook_name.split(".")[1])


@torch.no_grad()
def harvest(
    sources: Sequence[UnitSource],
    windows: torch.Tensor,
    batch_size: int = 16,
    massive_factor: float = 10.0,
    progress: bool = True,
) -> list[torch.Tensor]:
    """Activations of every source over ``windows [n, pos]`` (BOS first): a list of ``[n, pos, n_units]``.

    Sources on the same model share one forward pass per batch, which stops after the deepest
    hooked block. Position 0 and massive-norm positions (residual norm at the deepest resid hook
    ``> massive_factor x`` batch median) are set to 0.
    """
    models = {id(s.model): s.model for s in sources if s.model is not None}
    if len(models) > 1:
        raise ValueError("all model-backed sources must share one model")
    model = next(iter(models.values()), None)
    hooks = sorted({s.hook_name for s in sources if s.hook_name is not None})
    resid_hooks = [h for h in hooks if h.endswith("hook_resid_post")]
    outs: list[list[torch.Tensor]] = [[] for _ in sources]
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    n_layers = int(model.cfg.n_layers) if model is not None else 0
    stop_at = max(_layer_of(h) for h in hooks) + 1 if hooks else None
    if stop_at is not None and stop_at >= n_layers:
        stop_at = None
    starts = range(0, windows.shape[0], batch_size)
    grabbed: dict[str, torch.Tensor] = {}

    def grabber(name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def grab(x: torch.Tensor, hook: Any) -> torch.Tensor:
            grabbed[name] = x.detach()
            return x

        return grab

    for start in tqdm(starts, desc="harvest", disable=not progress):
        tok = windows[start : start + batch_size].to(device)
        grabbed.clear()
        if hooks:
            model.run_with_hooks(tok, fwd_hooks=[(h, grabber(h)) for h in hooks], stop_at_layer=stop_at,
                                 return_type=None)
        if resid_hooks:
            keep = activations.keep_positions(grabbed[resid_hooks[-1]], massive_factor)
        else:
            keep = torch.ones(tok.shape, dtype=torch.bool, device=device)
            keep[:, 0] = False
        for j, s in enumerate(sources):
            a = s.transform(grabbed[s.hook_name] if s.hook_name is not None else tok)
            outs[j].append((a * keep[..., None].to(a.device)).float().cpu())
    return [torch.cat(o, dim=0) for o in outs]


def choose_alive_units(acts: torch.Tensor, n: int, generator: torch.Generator, min_frac: float = 1e-3,
                       max_frac: float = 0.5) -> list[int]:
    """``n`` unit indices drawn at random among units that are neither dead nor always on.

    ``acts [n_windows, pos, n_units]`` (a pilot harvest); alive = fraction of positive positions
    in ``[min_frac, max_frac]``. Random choice, as in Bills et al. (no cherry-picking).
    """
    frac = (acts[:, 1:] > 0).float().mean(dim=(0, 1))
    alive = torch.nonzero((frac >= min_frac) & (frac <= max_frac)).flatten()
    if alive.numel() == 0:
        alive = torch.nonzero(frac > 0).flatten()
    perm = alive[torch.randperm(alive.numel(), generator=generator)]
    return sorted(int(i) for i in perm[:n])
