"""Units to explain, behind one interface: a *unit source* maps token windows to activations.

A :class:`UnitSource` turns token windows ``tokens [batch, pos]`` into unit activations
``acts [batch, pos, n_units]``. Three real kinds read one hook point of a transformer-lens bridge
(so that several sources at the same layer share one forward pass, see :func:`harvest`):

* ``"sae"``      SAE latents: ``z = autoencoder.encode(resid)`` at ``blocks.{L}.hook_resid_post``;
* ``"neuron"``   MLP neurons: ``blocks.{L}.mlp.hook_post`` (the activations entering ``W_out``);
* ``"random"``   random unit directions ``d_j`` in the residual stream (a control):
  ``a_j = resid . d_j``.

A fourth, :class:`TokenSource`, needs no model: it fires ``1.0`` exactly on given token ids (the
known-answer unit of the tests). Notebook 04's *planted* units, whose true explanation is known, are
linear probes in the residual stream (:mod:`course_lib.autointerp.planted`): graded, context-dependent
units, a :class:`UnitSource` of kind ``"planted"`` on the SAE's hook.

Position 0 (BOS) and *massive-activation* tokens (the rule of :func:`course_lib.hooks.keep_positions`,
which also left them out of the SAE's training in notebook 03) get activation 0 for every unit:
their values are artefacts of the norm, not of the text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from course_lib import hooks
from course_lib.autointerp.records import UnitKind
from course_lib.sae.default import DefaultSAE

UNIT_KINDS: tuple[str, ...] = ("sae", "neuron", "random")  # the model-backed kinds


@dataclasses.dataclass
class UnitSource:
    """Activations of ``n_units`` units computed from one hook point.

    ``transform(hook_act [b, p, d]) -> acts [b, p, n_units]``; ``unit_ids[j]`` is the index of unit
    ``j`` in its family (latent, neuron or direction number).
    """

    kind: UnitKind  # which family the units belong to
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


def sae_source(model: Any, default_sae: DefaultSAE, latents: Sequence[int]) -> UnitSource:
    """Latents ``latents`` of ``default_sae.sae`` (the course's default SAE, :class:`course_lib.sae.default.DefaultSAE`)."""
    idx = torch.tensor(list(latents))
    autoencoder = default_sae.sae

    def transform(h: torch.Tensor) -> torch.Tensor:
        z = autoencoder.encode(h.float().to(next(autoencoder.parameters()).device))
        return z[..., idx.to(z.device)].float().to(h.device)

    return UnitSource("sae", default_sae.hook_name, [int(i) for i in latents], transform, model)


@torch.no_grad()
def harvest(
    sources: Sequence[UnitSource],
    windows: torch.Tensor,
    batch_size: int = 16,
    massive_factor: float = hooks.MASSIVE_FACTOR,
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
    hook_names = sorted({s.hook_name for s in sources if s.hook_name is not None})
    resid_hooks = [h for h in hook_names if h.endswith("hook_resid_post")]
    outs: list[list[torch.Tensor]] = [[] for _ in sources]
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    for start in tqdm(range(0, windows.shape[0], batch_size), desc="harvest", disable=not progress):
        tok = windows[start : start + batch_size].to(device)
        grabbed = hooks.grab(model, tok, hook_names) if hook_names else {}
        if resid_hooks:
            keep = hooks.keep_positions(grabbed[resid_hooks[-1]], massive_factor)
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
