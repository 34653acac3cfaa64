"""Evaluating SAEs: reconstruction (FVU / NMSE, explained variance), sparsity (L0, dead, density), and
downstream loss with the reconstruction spliced into the model.

Definitions (``x [N, d]`` raw activations, ``x_hat`` the SAE's reconstruction, ``z [N, n]`` latents):

* ``nmse`` (= FVU) ``= sum ||x_hat - x||^2 / sum ||x - mean(x)||^2`` over all tokens (0 perfect,
  1 = no better than predicting the mean).
* ``explained_variance`` (SAELens's): mean over tokens of ``1 - ||x - x_hat||^2 / ||x - mean(x)||^2``.
* ``l0``: mean number of non-zero latents per token; ``density[i]``: share of tokens where latent ``i``
  fires; ``dead_fraction``: share of latents that never fire on the evaluation tokens.
* Downstream (on held-out windows): ``CE_clean`` (model as is), ``CE_sae`` (hook replaces the residual
  with ``x_hat``), ``CE_zero`` (hook replaces it with 0). ``ce_loss_score = (CE_zero - CE_sae) /
  (CE_zero - CE_clean)`` (1 = as good as clean), ``delta_ce = CE_sae - CE_clean`` (nats/token). BOS and
  massive-activation tokens (norm > ``massive_factor`` x median), which the SAE never saw, are left
  as they are in both ablations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.sae import SparseAutoencoder


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained ``sum ||x_hat - x||^2 / sum ||x - mean x||^2`` for ``[N, d]``."""
    x, x_hat = x.double(), x_hat.double()
    return float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-30))


@torch.no_grad()
def reconstruction_metrics(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> dict[str, Any]:
    """Metrics of ``sae`` on held-out raw activations ``x [N, d_in]`` (encoded in batches).

    Returns nmse, explained_variance, l0, dead_fraction, ``density [n_latents]`` (numpy), n_tokens.
    """
    dev = sae.W_dec.device
    mean = x.double().mean(0).to(dev)
    err_sum = tot_sum = 0.0
    ev_sum = 0.0
    l0_sum = 0.0
    fires = torch.zeros(sae.cfg.n_latents, dtype=torch.float64, device=dev)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(dev, torch.float32)
        z = sae.encode(xb)
        x_hat = sae.decode(z)
        err = (x_hat - xb).double().pow(2).sum(1)
        tot = (xb.double() - mean).pow(2).sum(1)
        err_sum += float(err.sum())
        tot_sum += float(tot.sum())
        ev_sum += float((1 - err / tot.clamp_min(1e-30)).sum())
        active = z > 0
        fires += active.double().sum(0)
        l0_sum += float(active.sum())
    n = x.shape[0]
    density = (fires / n).cpu().numpy()
    return {
        "nmse": err_sum / max(tot_sum, 1e-30),
        "explained_variance": ev_sum / n,
        "l0": l0_sum / n,
        "dead_fraction": float((density == 0).mean()),
        "density": density,
        "n_tokens": n,
    }


def log10_density(density: np.ndarray, floor: float | None = None) -> np.ndarray:
    """``log10`` of the non-zero densities (dead latents are dropped; count them separately)."""
    d = np.asarray(density, dtype=np.float64)
    d = d[d > 0]
    return np.log10(d if floor is None else np.maximum(d, floor))


# --------------------------------------------------------------------------- downstream loss


def _ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE over predictions made at positions >= 1 (after BOS): sum and count."""
    pred = logits[:, 1:-1].float()
    tgt = tokens[:, 2:]
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), tgt.reshape(-1), reduction="sum")


@torch.no_grad()
def downstream_ce(
    model: Any,
    sae: SparseAutoencoder,
    tokens: torch.Tensor,
    hook_name: str,
    batch_size: int = 8,
    massive_factor: float = 10.0,
    progress: bool = False,
) -> dict[str, float]:
    """CE of ``model`` on ``tokens [n_seq, seq_len]`` (BOS first): clean, SAE-spliced, zero-ablated.

    Returns ``ce_clean``, ``ce_sae``, ``ce_zero``, ``ce_loss_score``, ``delta_ce``, ``n_predictions``,
    ``n_massive_kept`` (massive tokens left unspliced).
    """
    from tqdm.auto import tqdm

    dev = next(model.parameters()).device
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n_pred = 0
    n_massive = 0

    def splice(mode: str):
        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
            nonlocal n_massive
            body = x[:, 1:]
            norms = body.float().norm(dim=-1)
            keep = norms <= massive_factor * norms.median()
            if mode == "sae":
                new = sae(body.float()).to(x.dtype)
                n_massive += int((~keep).sum())
            else:
                new = torch.zeros_like(body)
            body = torch.where(keep.unsqueeze(-1), new, body)
            return torch.cat([x[:, :1], body], dim=1)

        return hook

    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="downstream CE", disable=not progress):
        batch = tokens[start : start + batch_size].to(dev)
        sums["clean"] += float(_ce(model(batch, return_type="logits"), batch))
        for mode in ("sae", "zero"):
            logits = model.run_with_hooks(batch, fwd_hooks=[(hook_name, splice(mode))], return_type="logits")
            sums[mode] += float(_ce(logits, batch))
        n_pred += batch.shape[0] * (batch.shape[1] - 2)
    ce = {k: v / max(n_pred, 1) for k, v in sums.items()}
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_loss_score": (ce["zero"] - ce["sae"]) / denom if abs(denom) > 1e-12 else math.nan,
        "delta_ce": ce["sae"] - ce["clean"],
        "n_predictions": n_pred,
        "n_massive_kept": n_massive,
    }


def power_law_fit(x: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """Least-squares fit ``y = a * x^b`` in log-log space; returns ``(a, b)`` (``b`` the exponent)."""
    lx, ly = np.log(np.asarray(list(x), float)), np.log(np.asarray(list(y), float))
    b, log_a = np.polyfit(lx, ly, 1)
    return float(math.exp(log_a)), float(b)


# --------------------------------------------------------------------------- figures


def _fig(figsize: tuple[float, float] = (6, 4)) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def _thousands(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))


def plot_token_norms(norms: torch.Tensor, massive_factor: float = 10.0, title: str = "") -> Any:
    """Histogram (log x) of residual norms ``[b, s]``: BOS (position 0) vs the rest, massive cut marked."""
    fig, ax = _fig()
    body = norms[:, 1:].flatten().float().numpy()
    bos = norms[:, 0].float().numpy()
    med = float(np.median(body))
    bins = np.logspace(np.log10(max(body.min(), 1e-3)), np.log10(max(bos.max(), body.max()) * 1.1), 60)
    ax.hist(body, bins=bins, label="tokens after BOS", color="tab:blue")
    ax.hist(bos, bins=bins, label="BOS (position 0)", color="tab:red")
    ax.axvline(massive_factor * med, color="k", ls="--", label=f"{massive_factor:g} x median: massive cut")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("residual-stream norm ||x||")
    ax.set_ylabel("tokens")
    ax.set_title(title or "Residual norms: BOS and massive tokens are left out")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_training(history: dict[str, Any], title: str = "") -> Any:
    """NMSE (training batches) and dead fraction against training tokens."""
    fig, ax = _fig()
    ax.plot(history["tokens"], history["nmse"], color="tab:blue", label="NMSE (train batch)")
    _thousands(ax)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("NMSE")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(history["tokens"], history["dead_fraction"], color="tab:red", label="dead fraction")
    ax2.set_ylabel("dead fraction (window)")
    ax2.set_ylim(0, max(0.05, 1.1 * max(history["dead_fraction"], default=0.0)))
    ax.set_title(title or "Training the main TopK SAE")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    fig.tight_layout()
    return fig


def plot_frontier(topk: list[dict[str, Any]], relu: list[dict[str, Any]], width: int) -> Any:
    """NMSE against L0 for TopK (label k) and ReLU+L1 (label L1 coefficient) SAEs of one width."""
    fig, ax = _fig()
    for rows, name, key, style in ((topk, "TopK", "k", "o-"), (relu, "ReLU + L1", "l1_coef", "s--")):
        rows = sorted(rows, key=lambda r: r["l0"])
        ax.plot([r["l0"] for r in rows], [r["nmse"] for r in rows], style, label=name)
        for r in rows:
            ax.annotate(f"{key}={r[key]:g}", (r["l0"], r["nmse"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("NMSE (held-out)")
    ax.set_title(f"Sparsity-reconstruction frontier, {width} latents")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_nmse_vs_width(rows: list[dict[str, Any]], k: int) -> tuple[Any, float]:
    """NMSE against number of latents at fixed ``k`` with a power-law fit; returns ``(fig, exponent)``."""
    fig, ax = _fig()
    n = np.array([r["n_latents"] for r in rows], float)
    y = np.array([r["nmse"] for r in rows], float)
    a, b = power_law_fit(n, y)
    ax.plot(n, y, "o", label="TopK SAEs")
    grid = np.logspace(np.log10(n.min()), np.log10(n.max()), 50)
    ax.plot(grid, a * grid**b, "--", label=f"fit NMSE = {a:.2f} n^{b:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of latents n")
    ax.set_ylabel("NMSE (held-out)")
    ax.set_title(f"Scaling the dictionary at fixed k={k}")
    ax.legend()
    fig.tight_layout()
    return fig, b


def plot_nmse_vs_k(rows: list[dict[str, Any]], width: int) -> Any:
    """NMSE against k at a fixed width."""
    fig, ax = _fig()
    rows = sorted(rows, key=lambda r: r["k"])
    ax.plot([r["k"] for r in rows], [r["nmse"] for r in rows], "o-")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("k (active latents per token)")
    ax.set_ylabel("NMSE (held-out)")
    ax.set_title(f"NMSE against k, {width} latents")
    fig.tight_layout()
    return fig


def plot_dead_over_training(histories: dict[str, dict[str, Any]]) -> Any:
    """Dead fraction (latents not fired within the window) against training tokens, one line per run."""
    fig, ax = _fig()
    for name, h in histories.items():
        ax.plot(h["tokens"], h["dead_fraction"], label=name)
    _thousands(ax)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("dead fraction")
    ax.set_title("Dead latents during training")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_density_histogram(density: np.ndarray, title: str = "") -> Any:
    """Histogram of log10 feature density (dead latents counted in the title)."""
    fig, ax = _fig()
    ld = log10_density(density)
    n_dead = int((np.asarray(density) == 0).sum())
    ax.hist(ld, bins=40, color="tab:green")
    ax.set_xlabel("log10 feature density (share of tokens where the latent fires)")
    ax.set_ylabel("latents")
    ax.set_title(title or f"Feature density ({n_dead} of {len(density)} latents dead on held-out tokens)")
    fig.tight_layout()
    return fig
