"""Shared test helpers for the SAE package's tests."""

from __future__ import annotations

import torch

from course_lib import sae


def perturbed_sae(d=16, n=64, k=4, **kw) -> sae.SparseAutoencoder:
    """A small SAE moved away from its symmetric init, so that every loss and gradient term is non-trivial."""
    m = sae.SparseAutoencoder(sae.SAEConfig(d_in=d, n_latents=n, k=k, **kw), torch.Generator().manual_seed(0))
    with torch.no_grad():  # move away from the symmetric init so that every term is non-trivial
        m.W_enc.add_(0.3 * torch.randn(m.W_enc.shape, generator=torch.Generator().manual_seed(1)))
        m.b_enc.normal_(generator=torch.Generator().manual_seed(2))
        m.b_pre.normal_(generator=torch.Generator().manual_seed(3))
        m.scale.fill_(0.5)
    return m
