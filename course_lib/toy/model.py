"""Toy models of superposition (Elhage et al., Anthropic, 2022), many instances as one tensor program.

Models
------
Every tensor carries a leading *instance* dimension ``I``: instance ``i`` is an independent model
with its own feature probability ``p_i`` and feature importances ``imp[i, :]``. All instances are
trained together by one batched program (``torch.bmm`` over the instance dimension). Because Adam
is per-parameter and the loss is a sum over instances, this is exactly the same as training each
instance on its own, only much cheaper.

``"relu_output"`` (the classic model, ``W``: [I, H, F], ``b_final``: [I, F])::

    h  = W x                       # [I, B, H]
    x' = ReLU(W^T h + b_final)     # [I, B, F]

``"relu_hidden"`` (privileged basis: the hidden ReLU makes the neuron basis special)::

    h  = ReLU(W x)
    x' = ReLU(W^T h + b_final)

``"abs"`` (computation in superposition: untied ``W_in``: [I, H, F], ``W_out``: [I, F, H])::

    x ~ sparse, uniform on [-1, 1];   target y = |x|
    h  = ReLU(W_in x)
    y' = ReLU(W_out h + b_final)

Data: each feature is present independently with probability ``p_i`` (sparsity ``S = 1 - p``);
a present feature is uniform on [0, 1] (or [-1, 1] for ``"abs"``), an absent one is 0.

Loss: ``L = sum_i mean_b sum_f imp[i, f] * (y[i, b, f] - y'[i, b, f])^2`` (per-instance losses summed).

Metrics of the trained weights live in :mod:`course_lib.toy.metrics`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from course_lib import cache, runtime, weight_sparsity

ToyKind = Literal["relu_output", "relu_hidden", "abs"]
KINDS: tuple[str, ...] = get_args(ToyKind)

# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    n_features: int = 5  # F: number of input features
    d_hidden: int = 2  # H: hidden dimensions (neurons for the relu_hidden / abs kinds)
    n_instances: int = 10  # I: independent models trained together
    kind: ToyKind = "relu_output"  # one of KINDS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; valid values: {', '.join(KINDS)}")
        for name in ("n_features", "d_hidden", "n_instances"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclasses.dataclass(frozen=True)
class ToyTrainConfig:
    steps: int = 5_000  # optimizer steps
    batch_size: int = 1024  # samples per instance per step
    lr: float = 1e-3  # Adam learning rate (constant)
    # kept fraction of each weight matrix per instance (1.0 = dense); a tuple gives one per instance
    weight_sparsity: float | tuple[float, ...] = 1.0
    anneal_start: float = 0.01  # fraction of training at which the kept fraction starts to fall
    anneal_end: float = 0.5  # fraction of training at which it reaches weight_sparsity
    sparsify_bias: bool = False  # also keep only the top-k entries of b_final
    progress: bool = False  # show a tqdm progress bar
    # torch CPU threads while training; None: 1 or all, whichever PROBE_STEPS training steps (on a copy) run
    # faster here (measured once per model shape by runtime.faster_thread_count: most toy programs are too
    # small to gain from threads; one forward and backward alone misled the choice, the step's many small
    # operations are what threads slow down)
    cpu_threads: int | None = None


# --------------------------------------------------------------------------- data


def feature_probabilities(n_instances: int, low: float = 1 / 20, device: torch.device | str = "cpu"):
    """``p_i = low ** linspace(0, 1, I)``: from dense (p=1) to sparse (p=low), shape [I]."""
    return low ** torch.linspace(0, 1, n_instances, device=device)


def importances(n_features: int, decay: float, n_instances: int = 1, device: torch.device | str = "cpu"):
    """``imp[i, f] = decay ** f`` repeated over instances, shape [I, F]."""
    imp = decay ** torch.arange(n_features, dtype=torch.float32, device=device)
    return imp.expand(n_instances, n_features).contiguous()


def generate_batch(
    feature_probability: torch.Tensor,
    n_features: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """Sparse features, shape [I, B, F]: present w.p. ``p_i``, then uniform on [0,1] ([-1,1] if symmetric)."""
    p = feature_probability.reshape(-1, 1, 1)
    # One uniform draw v per entry: the feature is present iff v < p, and then v / p is uniform on
    # [0, 1] (conditioned on v < p); half the random numbers of drawing mask and value separately.
    v = torch.rand((p.shape[0], batch_size, n_features), device=p.device, generator=generator)
    u = v / p
    if symmetric:
        u = 2 * u - 1
    return u * (v < p)


# --------------------------------------------------------------------------- model


class ToyModel(nn.Module):
    """``I`` toy models at once. Parameters: ``W`` (tied kinds) or ``W_in``/``W_out`` (abs), ``b_final``.

    ``feature_probability``: [I]; ``importance``: [I, F] (buffers, so ``.to(device)`` moves them).
    Initialisation: Xavier-normal weights per instance, zero bias. ``data_fn`` (same signature as
    :func:`generate_batch` without ``symmetric``; not for the ``abs`` kind) replaces the data
    generator, e.g. by the one a learner wrote in notebook 01.
    """

    def __init__(
        self,
        cfg: ToyConfig,
        feature_probability: torch.Tensor,
        importance: torch.Tensor,
        generator: torch.Generator | None = None,
        data_fn: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if data_fn is not None and cfg.kind == "abs":
            raise ValueError("data_fn draws features in [0, 1]; the abs kind needs [-1, 1] (leave data_fn None)")
        self.cfg = cfg
        self.data_fn = data_fn
        n_inst, F, H = cfg.n_instances, cfg.n_features, cfg.d_hidden
        fp = torch.as_tensor(feature_probability, dtype=torch.float32).reshape(-1)
        imp = torch.as_tensor(importance, dtype=torch.float32)
        if imp.dim() == 1:
            imp = imp.expand(n_inst, F)
        if fp.shape != (n_inst,) or imp.shape != (n_inst, F):
            raise ValueError(f"need feature_probability [{n_inst}] and importance [{n_inst}, {F}]; got "
                             f"{tuple(fp.shape)} and {tuple(imp.shape)}")
        self.register_buffer("feature_probability", fp.clone())
        self.register_buffer("importance", imp.clone())
        std = math.sqrt(2.0 / (F + H))  # Xavier-normal for a [H, F] matrix
        if cfg.kind == "abs":
            self.W_in = nn.Parameter(torch.randn(n_inst, H, F, generator=generator) * std)
            self.W_out = nn.Parameter(torch.randn(n_inst, F, H, generator=generator) * std)
        else:
            self.W = nn.Parameter(torch.randn(n_inst, H, F, generator=generator) * std)
        self.b_final = nn.Parameter(torch.zeros(n_inst, F))

    # -- views used by the metrics: the embedding matrix [I, H, F]
    @property
    def W_embed(self) -> torch.Tensor:
        return self.W_in if self.cfg.kind == "abs" else self.W

    def weight_matrices(self) -> list[nn.Parameter]:
        return [self.W_in, self.W_out] if self.cfg.kind == "abs" else [self.W]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """[I, B, F] -> [I, B, H]."""
        h = torch.bmm(x, self.W_embed.transpose(1, 2))
        return h if self.cfg.kind == "relu_output" else torch.relu(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[I, B, F] -> reconstruction (or |x| estimate) [I, B, F]."""
        h = self.hidden(x)
        W_out_t = self.W_out.transpose(1, 2) if self.cfg.kind == "abs" else self.W  # [I, H, F]
        return torch.relu(torch.bmm(h, W_out_t) + self.b_final.unsqueeze(1))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs() if self.cfg.kind == "abs" else x

    def loss(self, x: torch.Tensor, per_instance: bool = False) -> torch.Tensor:
        """Importance-weighted squared error; [I] if ``per_instance`` else its sum (a scalar)."""
        err = (self.target(x) - self(x)).pow(2)
        per = (err * self.importance.unsqueeze(1)).sum(-1).mean(-1)
        return per if per_instance else per.sum()

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.data_fn is not None:
            return self.data_fn(self.feature_probability, self.cfg.n_features, batch_size, generator)
        return generate_batch(self.feature_probability, self.cfg.n_features, batch_size,
                              symmetric=self.cfg.kind == "abs", generator=generator)


def forward_and_loss(
    W: torch.Tensor, b_final: torch.Tensor, importance: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"relu_output"`` toy model's forward pass and its importance-weighted loss, one value per instance.

    Shapes: ``W`` [I, H, F], ``b_final`` [I, F], ``importance`` [I, F], ``x`` [I, B, F]::

        h  = x W^T                    # [I, B, H]   (h = W x for each sample)
        x' = ReLU(h W + b_final)      # [I, B, F]   (x' = ReLU(W^T W x + b))
        L_i = mean_b sum_f imp[i, f] * (x[i, b, f] - x'[i, b, f])^2    # [I]

    Returns ``(x', L)``; the same numbers as :meth:`ToyModel.forward` and ``ToyModel.loss(x, per_instance=True)``.
    """
    h = torch.bmm(x, W.transpose(1, 2))
    x_hat = torch.relu(torch.bmm(h, W) + b_final.unsqueeze(1))
    loss = ((x - x_hat).pow(2) * importance.unsqueeze(1)).sum(-1).mean(-1)
    return x_hat, loss


@torch.enable_grad()  # trains even where a caller (or a library it loaded) turned gradients off globally
def train(model: ToyModel, tc: ToyTrainConfig, generator: torch.Generator | None = None) -> list[float]:
    """Train all instances together with Adam; return the summed loss every ~1% of training.

    With ``tc.weight_sparsity < 1`` every weight matrix keeps, per instance, only its top-k entries
    by magnitude after each step (:func:`course_lib.weight_sparsity.project_topk_` with
    ``instance_dim=0``); the kept fraction anneals from 1 to ``weight_sparsity`` between
    ``anneal_start`` and ``anneal_end`` of training (:class:`~course_lib.weight_sparsity.SparsitySchedule`).
    """
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    groups = _sparsity_groups(tc, model.cfg.n_instances)
    constrained = model.weight_matrices() + ([model.b_final] if tc.sparsify_bias else [])
    threads = tc.cpu_threads
    if threads is None and model.b_final.device.type == "cpu":
        def probe() -> None:  # a few real steps (sampling, Adam, projection) on a copy: the model is untouched
            twin = copy.deepcopy(model)
            twin_opt = torch.optim.Adam(twin.parameters(), lr=tc.lr)
            twin_constrained = twin.weight_matrices() + ([twin.b_final] if tc.sparsify_bias else [])
            probe_tc = dataclasses.replace(tc, steps=PROBE_STEPS, progress=False)
            _train_loop(twin, probe_tc, twin_opt, groups, twin_constrained, torch.Generator().manual_seed(0))

        threads = runtime.faster_thread_count(("toy", model.cfg, tc.batch_size, bool(groups)), probe)
    with runtime.cpu_threads(threads if model.b_final.device.type == "cpu" else None):
        return _train_loop(model, tc, opt, groups, constrained, generator)


def _train_loop(
    model: ToyModel,
    tc: ToyTrainConfig,
    opt: torch.optim.Optimizer,
    groups: list[tuple[int, int, weight_sparsity.SparsitySchedule]],
    constrained: list[nn.Parameter],
    generator: torch.Generator | None,
) -> list[float]:
    log_every = max(1, tc.steps // 100)
    history: list[float] = []
    for step in tqdm(range(tc.steps), disable=not tc.progress, desc="toy models", leave=False):
        x = model.sample(tc.batch_size, generator)
        loss = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for lo, hi, schedule in groups:  # contiguous instances sharing one target fraction
            views = [p.data[lo:hi] for p in constrained]
            weight_sparsity.project_topk_(views, schedule.fraction_at(step, tc.steps), instance_dim=0)
        if step % log_every == 0 or step == tc.steps - 1:
            history.append(float(loss.detach()))
    return history


def _sparsity_groups(
    tc: ToyTrainConfig, n_instances: int
) -> list[tuple[int, int, weight_sparsity.SparsitySchedule]]:
    """Runs ``(lo, hi, schedule)`` of contiguous instances with the same target (dense ones left out)."""
    ws = tc.weight_sparsity
    fractions = [float(ws)] * n_instances if isinstance(ws, (int, float)) else [float(f) for f in ws]
    if len(fractions) != n_instances:
        raise ValueError(f"weight_sparsity has {len(fractions)} entries for {n_instances} instances")
    groups = []
    lo = 0
    for i in range(1, n_instances + 1):
        if i == n_instances or fractions[i] != fractions[lo]:
            if fractions[lo] < 1.0:
                sched = weight_sparsity.SparsitySchedule(fractions[lo], tc.anneal_start, tc.anneal_end)
                groups.append((lo, i, sched))
            lo = i
    return groups


PROBE_STEPS = 8  # training steps timed per thread count by the thread choice


# Bump when training changes what a trained toy model is: cached models are then retrained.
TOY_CACHE_VERSION = "toy-v1"


def _fresh(cfg: ToyConfig, feature_probability: torch.Tensor, importance: torch.Tensor, tc: ToyTrainConfig,
           seed: int, device: torch.device, data_fn: Callable[..., torch.Tensor] | None) -> ToyModel:
    init_gen = torch.Generator().manual_seed(seed)
    model = ToyModel(cfg, feature_probability, importance, generator=init_gen, data_fn=data_fn).to(device)
    data_gen = torch.Generator(device=device).manual_seed(seed + 1)
    train(model, tc, generator=data_gen)
    return model.eval()


def train_new(
    cfg: ToyConfig,
    feature_probability: torch.Tensor,
    importance: torch.Tensor,
    tc: ToyTrainConfig,
    seed: int = 0,
    device: torch.device | str = "cpu",
    data_fn: Callable[..., torch.Tensor] | None = None,
    use_cache: bool = True,
) -> ToyModel:
    """Build a :class:`ToyModel` from ``seed`` on ``device``, train it, return it (in eval mode).

    ``data_fn``: the training data generator (default :func:`generate_batch`), see :class:`ToyModel`.
    With ``use_cache`` the trained weights are cached (:func:`course_lib.cache.load_or_build`) under
    everything that decides them: both configs, probabilities, importances, seed, device type, and the
    source code of the data generator (:func:`course_lib.cache.code_id`, the library's or ``data_fn``'s); a ``data_fn``
    whose source cannot be read is never cached. A rerun then loads instead of training.
    """
    device = torch.device(device)
    data_code = cache.code_id(generate_batch if data_fn is None else data_fn)
    if not use_cache or data_code is None:
        return _fresh(cfg, feature_probability, importance, tc, seed, device, data_fn)
    key = {"cfg": cfg, "train": dataclasses.replace(tc, progress=False), "seed": seed, "device": device.type,
           "p": torch.as_tensor(feature_probability, dtype=torch.float32).tolist(),
           "imp": torch.as_tensor(importance, dtype=torch.float32).tolist(),
           "data": data_code, "library_data": data_fn is None}

    def build(folder):
        model = _fresh(cfg, feature_probability, importance, tc, seed, device, data_fn)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(folder / "model.safetensors"))

    folder = cache.load_or_build("toy", key, TOY_CACHE_VERSION, build)
    model = ToyModel(cfg, feature_probability, importance, data_fn=data_fn)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device).eval()


@torch.no_grad()
def evaluate_loss(model: ToyModel, batch_size: int = 8192, seed: int = 1234) -> torch.Tensor:
    """Per-instance loss on a fresh batch, shape [I]."""
    gen = torch.Generator(device=model.b_final.device).manual_seed(seed)
    return model.loss(model.sample(batch_size, gen), per_instance=True)


def best_of_replicates(model: ToyModel, n_replicates: int, batch_size: int = 8192) -> torch.Tensor:
    """Index [I / n_replicates] of the lowest-loss instance in each run of ``n_replicates`` consecutive ones.

    Toy models sometimes settle in a local optimum (4 features in a square instead of a pentagon);
    training a few replicates per setting and keeping the best is the usual remedy.
    """
    loss = evaluate_loss(model, batch_size).view(-1, n_replicates)
    offsets = torch.arange(loss.shape[0], device=loss.device) * n_replicates
    return (loss.argmin(1) + offsets).cpu()
