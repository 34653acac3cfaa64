"""course_lib.hooks: the one BOS/massive-token rule and the stop-early activation grab."""

from __future__ import annotations

import pytest
import torch

from course_lib import hooks


def test_keep_positions_drops_bos_and_massive_tokens():
    resid = torch.ones(2, 5, 4)  # norm 2 everywhere
    resid[:, 0] *= 1000.0  # BOS: huge norm, dropped whatever its size
    resid[1, 3] *= 25.0  # norm 50 > 10 x median (2): massive
    resid[0, 2] *= 9.0  # norm 18 <= 10 x 2: kept
    keep = hooks.keep_positions(resid)
    assert keep.tolist() == [[False, True, True, True, True], [False, True, True, False, True]]
    assert hooks.keep_positions(resid, massive_factor=30.0)[1, 3]  # a looser cut keeps it


def test_layer_names():
    assert hooks.resid_hook(15) == "blocks.15.hook_resid_post"
    assert hooks.layer_of("blocks.7.mlp.hook_post") == 7


def test_grab_stops_early_and_matches_the_full_forward(smollm2):
    tokens = smollm2.to_tokens("def f(x):\n    return x")
    names = [hooks.resid_hook(3), "blocks.2.mlp.hook_post"]
    assert hooks.stop_layer(smollm2, names) == 4
    assert hooks.stop_layer(smollm2, [hooks.resid_hook(29)]) is None  # the last block: run everything
    got = hooks.grab(smollm2, tokens, names)
    _, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n in names)
    for n in names:
        assert torch.allclose(got[n], cache[n], atol=1e-4, rtol=1e-4), n
    norms = hooks.token_norms(smollm2, tokens, 3)
    assert torch.allclose(norms, cache[names[0]].float().norm(dim=-1), rtol=1e-4)
    with pytest.raises((KeyError, RuntimeError)):  # a misspelt hook is an error, never an empty grab
        hooks.grab(smollm2, tokens, ["blocks.3.hook_no_such_thing"])
