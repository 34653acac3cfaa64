"""course_lib.sae.recovery: MCC, mean max cosine and absorption on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import torch

from course_lib import sae
from course_lib.sae import recovery


def _unit(n, d, seed):
    w = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return w / w.norm(dim=1, keepdim=True)


def test_true_features_as_decoder_give_mcc_one_in_any_order_and_with_extra_latents():
    f = _unit(64, 32, 0)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    dec = torch.cat([f[perm], _unit(16, 32, 2)])  # the true features, shuffled, plus 16 spare latents
    assert math.isclose(recovery.decoder_mcc(f, dec), 1.0, abs_tol=1e-9)
    assert math.isclose(recovery.mean_max_cosine(f, dec), 1.0, abs_tol=1e-9)
    latent_of = recovery.feature_to_latent(f, dec)
    assert (latent_of == perm.argsort().numpy()).all()  # feature i is found at its shuffled position


def test_random_decoder_gives_low_mcc_and_matching_is_one_to_one():
    f = _unit(64, 32, 0)
    rand = _unit(64, 32, 3)
    assert recovery.decoder_mcc(f, rand) < 0.45
    # one latent copying one feature 64 times: MMCS forgives the duplicates, MCC does not
    dup = f[:1].repeat(64, 1)
    assert recovery.mean_max_cosine(f[:1], dup) > 0.999
    assert recovery.decoder_mcc(f, dup) < 0.2


def test_signed_cosine_a_flipped_direction_is_not_a_recovery():
    f = _unit(8, 16, 0)
    assert recovery.decoder_mcc(f, -f) < 0.5  # latents are non-negative: -f_i does not represent f_i (abs cos would say 1)


def test_activation_mcc_known_answers():
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(2000, 10, generator=g) * (torch.rand(2000, 10, generator=g) < 0.2)
    perm = torch.randperm(10, generator=g)
    assert math.isclose(recovery.activation_mcc(codes, 3.0 * codes[:, perm]), 1.0, abs_tol=1e-9)
    noise = torch.rand(2000, 10, generator=g) * (torch.rand(2000, 10, generator=g) < 0.2)
    assert recovery.activation_mcc(codes, noise) < 0.15
    dead = torch.zeros(2000, 10)  # a latent that never fires correlates 0, not NaN
    assert recovery.activation_mcc(codes, dead) == 0.0


def test_sae_with_true_features_recovers_them():
    """An SAE handed the true (orthonormal) features as encoder and decoder: decoder and activation MCC ~ 1."""
    d, n = 16, 16
    f = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0][:n]
    g = torch.Generator().manual_seed(1)
    codes = torch.rand(4000, n, generator=g) * (torch.rand(4000, n, generator=g) < 0.15)
    x = codes @ f
    m = sae.SparseAutoencoder(sae.SAEConfig(d_in=d, n_latents=n, kind="relu"))
    with torch.no_grad():
        m.W_dec.copy_(f)
        m.W_enc.copy_(f)
    r = recovery.recovery_metrics(m, f, x, codes)
    assert r["decoder_mcc"] > 0.999 and r["mmcs"] > 0.999
    assert r["activation_mcc"] > 0.999 and r["nmse"] < 1e-6
    with torch.no_grad():
        m.W_dec.copy_(_unit(n, d, 5))
        m.W_enc.copy_(m.W_dec)
    r = recovery.recovery_metrics(m, f, x, codes)
    assert r["decoder_mcc"] < 0.6 and r["activation_mcc"] < 0.6


def test_absorption_on_a_hand_built_case():
    """Parent 0, child 1. 10 samples with both: the parent's latent is off while the child's is on in 4
    (absorbed), both latents off in 2 (missed, not absorbed), both on in 4. 5 samples with the parent alone,
    its latent on in all. 5 empty samples."""
    codes = torch.zeros(20, 2)
    codes[:10] = 1.0  # parent and child
    codes[10:15, 0] = 1.0  # parent alone
    z = torch.zeros(20, 2)  # latent 0 = the parent's, latent 1 = the child's
    z[0:4, 1] = 2.0  # absorbed: parent latent off, child latent on
    z[6:10] = 1.0  # both on
    z[10:15, 0] = 1.0  # parent alone, found
    out = recovery.absorption(codes, z, [(0, [1])], np.array([0, 1]))
    assert math.isclose(out["absorption"], 0.4)
    assert math.isclose(out["parent_recall_with_child"], 0.4)
    assert math.isclose(out["parent_recall_alone"], 1.0)
    assert out["n_with_child"] == 10 and out["n_alone"] == 5
    # the child latent counts only when its own child is active: a sibling's latent firing is not absorption
    codes3 = torch.cat([codes, torch.zeros(20, 1)], dim=1)
    z3 = torch.zeros(20, 3)
    z3[0:4, 2] = 2.0  # the *other* child's latent fires instead
    out3 = recovery.absorption(codes3, z3, [(0, [1, 2])], np.array([0, 1, 2]))
    assert out3["absorption"] == 0.0
    # the latent map matters: with the roles swapped, latent 1 (on in the 4 samples) is now the parent's
    swapped = recovery.absorption(codes, z, [(0, [1])], np.array([1, 0]))
    assert swapped["absorption"] == 0.0 and math.isclose(swapped["parent_recall_with_child"], 0.8)


def test_absorption_is_nan_without_events():
    out = recovery.absorption(torch.zeros(5, 2), torch.zeros(5, 2), [(0, [1])], np.array([0, 1]))
    assert math.isnan(out["absorption"]) and math.isnan(out["parent_recall_alone"])
