"""course_lib.sae.evaluation: FVU, L0/density/dead, power-law fit, downstream CE splice."""

from __future__ import annotations

import math

import numpy as np
import torch

from course_lib import sae
from course_lib.sae import evaluation


def test_fvu_identity_zero_mean_one():
    x = torch.randn(500, 12) * 3 + 2
    assert evaluation.fvu(x, x) == 0.0
    assert math.isclose(evaluation.fvu(x, x.mean(0, keepdim=True).expand_as(x)), 1.0, rel_tol=1e-9)
    assert evaluation.fvu(x, x + 0.1 * torch.randn_like(x)) > 0

def test_reconstruction_metrics_consistent():
    m = sae.SparseAutoencoder(sae.SAEConfig(d_in=8, n_latents=32, k=3), torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.b_enc.fill_(50.0)
        m.b_enc[:4] = 100.0  # latents 0..3 always win the top-3 ... only 3 of them fire
    x = torch.randn(300, 8)
    r = evaluation.reconstruction_metrics(m, x, batch_size=64)
    assert r["l0"] == 3.0
    assert math.isclose(float(r["density"].sum()), r["l0"], rel_tol=1e-9)
    assert r["dead_fraction"] >= 28 / 32  # at most 4 latents can fire
    assert r["n_tokens"] == 300
    assert np.isfinite(r["nmse"]) and r["explained_variance"] <= 1.0

def test_log10_density_drops_dead():
    out = evaluation.log10_density(np.array([0.0, 0.1, 0.001]))
    assert np.allclose(out, [-1.0, -3.0])

def test_power_law_fit():
    n = np.array([100.0, 200.0, 400.0, 800.0])
    a, b = evaluation.power_law_fit(n, 3.0 * n**-0.25)
    assert math.isclose(b, -0.25, abs_tol=1e-9) and math.isclose(a, 3.0, rel_tol=1e-9)

def test_downstream_ce_identity_and_zero(smollm2):
    tokens = smollm2.to_tokens(["def add(a, b):\n    return a + b\n\nclass Foo:\n    pass\n"])

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    _, cache = smollm2.run_with_cache(tokens, names_filter="blocks.15.hook_resid_post")
    mean_act = cache["blocks.15.hook_resid_post"][0, 1:].float().mean(0)
    res = evaluation.downstream_ce(smollm2, Identity(), tokens, "blocks.15.hook_resid_post", batch_size=2,
                                   mean_act=mean_act)
    assert abs(res["delta_ce"]) < 1e-4 and abs(res["kl_sae"]) < 1e-4  # the identity changes nothing
    assert math.isclose(res["ce_loss_score"], 1.0, abs_tol=1e-3)
    assert math.isclose(res["ce_loss_score_mean"], 1.0, abs_tol=1e-3)
    assert res["ce_zero"] > res["ce_clean"] + 0.5  # deleting the residual stream hurts
    assert res["ce_mean"] > res["ce_clean"] + 0.1  # so does replacing it by its mean
    assert res["kl_zero"] > 0.1 and res["kl_mean"] > 0.05  # and both move the next-token distribution
    without = evaluation.downstream_ce(smollm2, Identity(), tokens, "blocks.15.hook_resid_post", batch_size=2)
    assert "ce_mean" not in without and "ce_loss_score_mean" not in without
    assert math.isclose(without["kl_zero"], res["kl_zero"], rel_tol=1e-5)


def test_headline_pairs_topk_and_relu_at_the_nearest_l0_and_gives_the_exponent_interval():
    from course_lib.sae.evaluation import headline

    rows = [{"kind": "topk", "l0": 32.0, "nmse": 0.3}, {"kind": "relu", "l0": 40.0, "nmse": 0.9},
            {"kind": "relu", "l0": 400.0, "nmse": 0.2}]
    pair, law = headline(rows, -0.36, [-0.5, -0.2])
    assert pair.value == "TopK 0.3 (L0 32) vs ReLU 0.9 (L0 40)"
    assert law.value == "-0.36" and law.interval == "95% CI [-0.5, -0.2]"
    assert headline([{"kind": "topk", "l0": 8, "nmse": 1}], None, None)[0].value is None
