"""course_lib.sae.exercises: each checker accepts the reference and names the mistake in known wrong answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib import sae
from course_lib.sae import exercises as ex


def not_done(*args):
    raise NotImplementedError("hint: ...")


def test_references_pass_and_stubs_are_not_attempted():
    assert "correct" in ex.check_topk_activation(ex.topk_activation)
    assert "correct" in ex.check_nmse(sae.nmse)
    assert "correct" in ex.check_nmse(sae.evaluation.fvu)  # a float is fine too
    assert "correct" in ex.check_auxk_loss(ex.auxk_loss)
    assert "correct" in ex.check_ce_loss_score(lambda c, s, z: (z - s) / (z - c))
    for check in (ex.check_topk_activation, ex.check_nmse, ex.check_auxk_loss, ex.check_ce_loss_score):
        assert check(not_done) == ex.NOT_ATTEMPTED


def test_topk_activation_matches_the_sae_encoder():
    cfg = sae.SAEConfig(d_in=8, n_latents=32, k=4)
    model = sae.SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(0))
    x = torch.randn(10, 8)
    assert torch.allclose(ex.topk_activation(model.pre_acts(x * model.scale), 4), model.encode(x), atol=1e-6)


def _scatter(pre, idx, vals):
    return torch.zeros_like(pre).scatter(-1, idx, vals)


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, k: _scatter(p, p.topk(k, -1).indices, p.topk(k, -1).values), "no ReLU"),
    (lambda p, k: torch.zeros_like(p).scatter(0, p.topk(k, 0).indices, F.relu(p.topk(k, 0).values)), "dim 0"),
    (lambda p, k: _scatter(p, p.abs().topk(k, -1).indices, F.relu(p.gather(-1, p.abs().topk(k, -1).indices))),
     "magnitudes"),
    (lambda p, k: F.relu(p), "no TopK"),
    (lambda p, k: p.topk(k, -1), "tuple"),
    (lambda p, k: F.relu(p.topk(k, -1).values), "shape"),
])
def test_topk_activation_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_topk_activation(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, xh: (xh - x).pow(2).sum() / x.pow(2).sum(), "mean"),
    (lambda x, xh: 1 - sae.nmse(x, xh), "explained variance"),
    (lambda x, xh: (xh - x).pow(2).mean(), "plain MSE"),
    (lambda x, xh: (xh - x).pow(2).sum() / (x - x.mean(1, keepdim=True)).pow(2).sum(), "dim 0"),
    (lambda x, xh: sae.nmse(x, xh).sqrt(), "square root"),
])
def test_nmse_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_nmse(wrong)


def _aux(pre, dead, residual, W_dec, k, *, use_dead=True, relu=True, target=None):
    masked = pre.masked_fill(~dead, float("-inf")) if use_dead else pre
    v, i = masked.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, i, F.relu(v) if relu else v)
    return sae.nmse(residual if target is None else target, z @ W_dec)


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, d, r, w, k: _aux(p, d, r, w, k, use_dead=False), "dead"),
    (lambda p, d, r, w, k: _aux(p, d, r, w, k, relu=False), "ReLU"),
    (lambda p, d, r, w, k: (torch.zeros_like(p).scatter(-1, p.masked_fill(~d, float("-inf")).topk(k, -1).indices,
                                                        F.relu(p.masked_fill(~d, float("-inf")).topk(k, -1).values))
                            @ w - r).pow(2).mean(), "plain MSE"),
])
def test_auxk_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_auxk_loss(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, s, z: (s - c) / (z - c), "lost"),
    (lambda c, s, z: (z - s) / z, "denominator"),
    (lambda c, s, z: c / s, "ratio"),
    (lambda c, s, z: s - c, "delta CE"),
])
def test_ce_loss_score_mistakes(wrong, hint):
    with pytest.raises(ex.ExerciseError, match=hint):
        ex.check_ce_loss_score(wrong)


def test_sae_train_step_checker_accepts_the_reference_and_names_mistakes():
    from course_lib.exercises import ExerciseError
    from course_lib.sae import exercises as ex

    assert ex.check_sae_train_step(ex.sae_train_step) == "sae_train_step: correct"
    for kw, words in ((dict(project=False), "component along each row"), (dict(renorm_dim=None), "unit norm"),
                      (dict(renorm_dim=0), "columns"), (dict(zero_grad=False), "zero_grad")):
        with pytest.raises(ExerciseError, match=words):
            ex.check_sae_train_step(lambda a, o, x, k, kw=kw: ex._train_step(a, o, x, k, **kw))
