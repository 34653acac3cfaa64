"""Evaluating SAEs (figures in :mod:`course_lib.sae.plots`): reconstruction (FVU / NMSE, explained variance), sparsity (L0, dead, density), and
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
* Convergence (:func:`late_fall`): the relative fall of a kind's training objective between two stretches
  of the constant-learning-rate phase; an SAE whose objective still falls there is not converged, and a
  frontier that compares it with a converged one is not a fair comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from course_lib import hooks
from course_lib.runtime import Headline
from course_lib.sae.model import ARCHITECTURES, SparseAutoencoder, nmse


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained ``sum ||x_hat - x||^2 / sum ||x - mean x||^2`` for ``[N, d]``."""
    return float(nmse(x.double(), x_hat.double()))


@torch.no_grad()
def reconstruction_metrics(autoencoder: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> dict[str, Any]:
    """Metrics of ``autoencoder`` on held-out raw activations ``x [N, d_in]`` (encoded in batches).

    Returns nmse, explained_variance, l0, dead_fraction, ``density [n_latents]`` (numpy), n_tokens.
    """
    dev = autoencoder.W_dec.device
    mean = x.double().mean(0).to(dev)
    err_sum = tot_sum = 0.0
    ev_sum = 0.0
    l0_sum = 0.0
    fires = torch.zeros(autoencoder.cfg.n_latents, dtype=torch.float64, device=dev)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(dev, torch.float32)
        z = autoencoder.encode(xb)
        x_hat = autoencoder.decode(z)
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


def _logp(logits: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities ``[b, T-2, vocab]`` of the predictions made at positions 1 .. T-2 (after
    BOS, each with a next token to score)."""
    return logits[:, 1:-1].float().log_softmax(-1)


SPLICES = ("sae", "zero", "mean")  # what replaces the activation at the hook in downstream_ce


@torch.no_grad()
def downstream_ce(
    model: Any,
    autoencoder: SparseAutoencoder,
    tokens: torch.Tensor,
    hook_name: str,
    batch_size: int = 8,
    massive_factor: float = hooks.MASSIVE_FACTOR,
    progress: bool = False,
    mean_act: torch.Tensor | None = None,
) -> dict[str, float]:
    """CE and KL of ``model`` on ``tokens [n_seq, seq_len]`` (BOS first) with the hook's activation spliced.

    Splices at ``hook_name`` on every position after BOS except massive-norm tokens: ``sae`` (the SAE's
    reconstruction), ``zero`` (zeros) and, when ``mean_act [d_in]`` (the raw activation's mean over a
    store) is given, ``mean`` (mean ablation: the activation carries no information about the token
    but keeps its typical offset, so it is the gentler, more honest floor).

    Returns ``ce_clean`` and per splice ``ce_<splice>`` and ``kl_<splice>`` (mean over predictions of
    ``KL(p_clean || p_splice)`` in nats: how far the next-token distribution moves, not only the loss on
    the true token); ``delta_ce = ce_sae - ce_clean``; ``ce_loss_score = (ce_zero - ce_sae) / (ce_zero -
    ce_clean)`` and, with ``mean_act``, ``ce_loss_score_mean`` (the same with the mean-ablation floor);
    ``n_predictions`` and ``n_massive_kept`` (massive tokens left unspliced).
    """
    dev = next(model.parameters()).device
    splices = [m for m in SPLICES if m != "mean" or mean_act is not None]
    ce_sums = dict.fromkeys(["clean", *splices], 0.0)
    kl_sums = dict.fromkeys(splices, 0.0)
    n_pred = 0
    n_massive = 0

    def splice(mode: str):
        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
            nonlocal n_massive
            body = x[:, 1:]
            keep = hooks.keep_positions(x, massive_factor)[:, 1:]
            if mode == "sae":
                new = autoencoder(body.float()).to(x.dtype)
                n_massive += int((~keep).sum())
            elif mode == "mean":
                new = mean_act.to(x.device, x.dtype).expand_as(body)
            else:
                new = torch.zeros_like(body)
            body = torch.where(keep.unsqueeze(-1), new, body)
            return torch.cat([x[:, :1], body], dim=1)

        return hook

    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="downstream CE", disable=not progress):
        batch = tokens[start : start + batch_size].to(dev)
        target = batch[:, 2:, None]
        logp_clean = _logp(model(batch, return_type="logits"))
        p_clean = logp_clean.exp()
        ce_sums["clean"] -= float(logp_clean.gather(-1, target).sum())
        for mode in splices:
            logp = _logp(model.run_with_hooks(batch, fwd_hooks=[(hook_name, splice(mode))], return_type="logits"))
            ce_sums[mode] -= float(logp.gather(-1, target).sum())
            kl_sums[mode] += float((p_clean * (logp_clean - logp)).sum())  # KL(p_clean || p_splice)
        n_pred += batch.shape[0] * (batch.shape[1] - 2)
    ce = {k: v / max(n_pred, 1) for k, v in ce_sums.items()}

    def score(floor: str) -> float:
        denom = ce[floor] - ce["clean"]
        return (ce[floor] - ce["sae"]) / denom if abs(denom) > 1e-12 else math.nan

    out = {f"ce_{k}": v for k, v in ce.items()}
    out.update({f"kl_{k}": v / max(n_pred, 1) for k, v in kl_sums.items()})
    out["ce_loss_score"] = score("zero")
    if mean_act is not None:
        out["ce_loss_score_mean"] = score("mean")
    out.update({"delta_ce": ce["sae"] - ce["clean"], "n_predictions": n_pred, "n_massive_kept": n_massive})
    return out


def power_law_fit(x: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """Least-squares fit ``y = a * x^b`` in log-log space; returns ``(a, b)`` (``b`` the exponent)."""
    lx, ly = np.log(np.asarray(list(x), float)), np.log(np.asarray(list(y), float))
    b, log_a = np.polyfit(lx, ly, 1)
    return float(math.exp(log_a)), float(b)


def training_objective(history: dict[str, Any], cfg: Any) -> np.ndarray:
    """The objective each architecture minimises, per logged step: ``NMSE + c * penalty`` with the
    architecture's coefficient (:data:`~course_lib.sae.model.ARCHITECTURES`): NMSE alone for ``topk`` and
    ``batchtopk`` (AuxK only revives dead latents), ``+ l1_coef * L1`` for ``relu``, ``+ l0_coef * L0`` for
    ``jumprelu``."""
    nm = np.asarray(history["nmse"], float)
    return nm + ARCHITECTURES[cfg.kind].penalty_coef(cfg) * np.asarray(history["penalty"], float)


def late_fall(values: Iterable[float], early: tuple[float, float] = (0.3, 0.5),
              late: tuple[float, float] = (0.6, 0.8)) -> float:
    """Relative fall ``(mean_early - mean_late) / mean_late`` of a logged series between two stretches
    (fractions of its length; the defaults lie in the constant-learning-rate phase, before the final decay
    that flattens every curve). About 0 (or below, noise): converged at this learning rate; clearly above 0:
    still learning. NaN when a stretch is empty."""
    v = np.asarray(list(values), float)
    n = len(v)

    def stretch(a: float, b: float) -> np.ndarray:
        return v[int(a * n):max(int(a * n) + 1, int(b * n))] if n else v

    e, l_ = stretch(*early), stretch(*late)
    if not len(e) or not len(l_):
        return float("nan")
    return float((e.mean() - l_.mean()) / l_.mean())


def nmse_at_l0(rows: Iterable[dict[str, Any]], l0: float) -> float:
    """NMSE of a frontier curve (``rows`` with ``l0`` and ``nmse``) at ``l0``, interpolated linearly in
    log-log space between its two nearest points; NaN outside the curve's L0 range (no extrapolation)."""
    pts = sorted((float(r["l0"]), float(r["nmse"])) for r in rows)
    if not pts or not pts[0][0] <= l0 <= pts[-1][0]:
        return float("nan")
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    return float(np.exp(np.interp(math.log(l0), lx, ly)))


def power_law_fit_ci(x: Iterable[float], y: Iterable[float], level: float = 0.95) -> dict[str, Any]:
    """:func:`power_law_fit` with a confidence interval on the exponent ``b``.

    Ordinary least squares of ``log y = log a + b log x``; the interval is ``b +- t_{n-2} * se(b)`` with
    ``se(b) = sqrt(RSS / (n - 2) / sum (log x - mean)^2)``: how well ``n`` points pin the slope, given how far
    they sit off the line (not the seed-to-seed spread of each point). Needs ``n >= 3`` points; returns
    ``{"a", "b", "ci": (lo, hi), "n"}`` (``ci`` NaN for 2 points).
    """
    from scipy import stats  # only here: the rest of the module does not need scipy

    lx, ly = np.log(np.asarray(list(x), float)), np.log(np.asarray(list(y), float))
    n = len(lx)
    b, log_a = np.polyfit(lx, ly, 1)
    if n < 3:
        return {"a": float(math.exp(log_a)), "b": float(b), "ci": (float("nan"), float("nan")), "n": n}
    resid = ly - (log_a + b * lx)
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(((lx - lx.mean()) ** 2).sum()))
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
    return {"a": float(math.exp(log_a)), "b": float(b), "ci": (float(b - half), float(b + half)), "n": n}

def seed_summary(values: Iterable[float]) -> dict[str, float]:
    """``{mean, std, min, max, n}`` of one metric over seeds (``std`` with ddof=1; 0 for a single seed)."""
    a = np.asarray(list(values), dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def headline(frontier: Sequence[dict], exponent: float | None, exponent_ci: Sequence[float] | None) -> list[Headline]:
    """Notebook 03's headline claims for the report: TopK against ReLU+L1 at the nearest L0 (from the frontier
    rows: ``kind``, ``l0``, ``nmse``) and the NMSE-width power-law exponent with its interval."""
    topk = [r for r in frontier if r.get("kind") == "topk" and r.get("l0")]
    relu = [r for r in frontier if r.get("kind") == "relu" and r.get("l0")]
    pair = None
    if topk and relu:
        t, r = min(((t, r) for t in topk for r in relu), key=lambda tr: abs(math.log(tr[0]["l0"] / tr[1]["l0"])))
        pair = f"TopK {t['nmse']:.3g} (L0 {t['l0']:.0f}) vs ReLU {r['nmse']:.3g} (L0 {r['l0']:.0f})"
    ci = f"95% CI [{exponent_ci[0]:.3g}, {exponent_ci[1]:.3g}]" if exponent_ci is not None else None
    return [Headline("NMSE of TopK vs ReLU+L1 SAEs at the nearest L0", "TopK lower", pair),
            Headline("NMSE power-law exponent in the number of latents", "negative (NMSE falls with width)",
                     None if exponent is None else f"{exponent:.3g}", ci)]
