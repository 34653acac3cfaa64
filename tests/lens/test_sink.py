"""course_lib.lens.sink: BOS and previous-token shares, the norm ratio, the sink onset and the norm jump."""

from __future__ import annotations

import pytest
import torch

from course_lib.lens import sink


def _pattern(n_pos: int, bos: float) -> torch.Tensor:
    """[1, 2, q, k]: head 0 sends `bos` to key 0 and the rest to the previous token; head 1 is uniform."""
    p = torch.zeros(1, 2, n_pos, n_pos)
    p[0, 0, 0, 0] = 1.0
    for q in range(1, n_pos):
        p[0, 0, q, 0] += bos
        p[0, 0, q, q - 1] += 1 - bos
        p[0, 1, q, : q + 1] = 1.0 / (q + 1)
    p[0, 1, 0, 0] = 1.0
    return p


def test_pattern_shares_and_uniform():
    bos, prev = sink.pattern_shares(_pattern(5, 0.3))
    # head 0: 0.3 to BOS; at q = 1 the previous token *is* BOS (1.0), so the previous-token share starts at q = 2
    assert bos[0] == pytest.approx((1.0 + 3 * 0.3) / 4)
    assert prev[0] == pytest.approx(0.7)
    assert bos[1] == pytest.approx(sink.uniform_bos_share(5)) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4)
    assert prev[1] == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)


def _profile(share_by_layer, ratio_by_layer, n_pos=11):
    n = len(share_by_layer)
    bos = torch.tensor(share_by_layer)[:, None].repeat(1, 3)
    norms = torch.ones(n, 1, n_pos)
    norms[:, 0, 0] = torch.tensor(ratio_by_layer, dtype=torch.float)
    return sink.SinkProfile(bos_share=bos, prev_share=torch.zeros(n, 3), norms=norms)


def test_norm_ratio_onset_and_jump():
    prof = _profile([0.01, 0.05, 0.65, 0.7, 0.02, 0.8], [2, 5, 6, 4, 200, 150])
    assert torch.allclose(prof.norm_ratio, torch.tensor([2.0, 5, 6, 4, 200, 150]))
    assert torch.allclose(prof.layer_bos_share, torch.tensor([0.01, 0.05, 0.65, 0.7, 0.02, 0.8]))
    assert sink.norm_jump(prof) == 4
    assert sink.sink_onset(prof) == 2  # 3 x uniform(11 positions) ~ 0.61
    assert sink.sink_onset(_profile([0.01] * 3, [1, 1, 9])) is None
    assert sink.first_layer_at_least(torch.tensor([0.1, 0.5, 0.9]), 0.5) == 1
    assert sink.first_layer_at_least(torch.tensor([0.1]), 0.5) is None


def test_sink_profile_on_the_model(smollm2):
    toks = smollm2.to_tokens("def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n")
    prof = sink.sink_profile(smollm2, toks)
    n_pos = toks.shape[1]
    assert prof.bos_share.shape == prof.prev_share.shape == (30, smollm2.cfg.n_heads)
    assert prof.norms.shape == (30, 1, n_pos)
    assert bool((prof.bos_share >= 0).all() and (prof.bos_share + prof.prev_share <= 1 + 1e-4).all())
    assert prof.norm_ratio.max() > 10  # the BOS outlier
    assert sink.norm_jump(prof) > 0
