"""course_lib.sae.fast_grads: the one-GEMM TopK gradients equal autograd's."""

from __future__ import annotations

import pytest
import torch

from course_lib import sae

from .helpers import perturbed_sae as _sae


@pytest.mark.parametrize("csr", [True, False])
@pytest.mark.parametrize("with_dead", [False, True])
def test_fast_step_gradients_equal_autograd(with_dead, csr):
    """Both kernel sets (CSR: CPU default; gather/index_add: the CUDA default) match autograd."""
    m = _sae(d=24, n=96, k=6, aux_k=10)
    xn = torch.randn(40, 24, generator=torch.Generator().manual_seed(5)) * 2
    dead = torch.zeros(96, dtype=torch.bool)
    if with_dead:
        dead[torch.randperm(96, generator=torch.Generator().manual_seed(6))[:30]] = True
    ref, ref_stats = sae.topk_grads_autograd(m, xn, dead)
    got, got_stats = sae.topk_grads_fast(m, xn, dead, csr=csr)
    assert set(ref) == set(got) == {"W_enc", "b_enc", "W_dec", "b_pre"}
    for name in ref:
        assert torch.allclose(got[name], ref[name], atol=1e-5, rtol=1e-4), name
        assert ref[name].abs().max() > 0, name
    assert torch.allclose(got_stats["nmse"], ref_stats["nmse"])
    assert torch.equal(got_stats["fired"], ref_stats["fired"])
    # only latents selected by some token (or AuxK) get gradient
    assert (got["W_enc"].abs().sum(1) > 0).sum() <= 40 * 6 + (40 * 10 if with_dead else 0)
