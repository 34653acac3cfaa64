"""Fixtures shared by the circuits tests."""

from __future__ import annotations

import pytest
import torch

from course_lib import circuits


@pytest.fixture(scope="module")
def model():
    """A small random transformer whose weights are spread out, so that ablations change its output."""
    torch.manual_seed(0)
    cfg = circuits.SparseTransformerConfig(d_vocab=2048, d_model=32, n_layers=2, d_mlp=48, n_ctx=32)
    m = circuits.SparseTransformer(cfg)
    with torch.no_grad():  # make the random model less uniform so that ablations matter
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return m.eval()
