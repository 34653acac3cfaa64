"""Notebook 03's steering and live-text explorers on the real SmolLM2: first view, and their controls."""

from __future__ import annotations

import torch

from course_lib.sae import widgets
from course_lib.sae.dashboards import Codes, unembed_direction

from .helpers import perturbed_sae

HOOK = "blocks.15.hook_resid_post"


def _codes(n_latents: int) -> Codes:
    tokens = torch.randint(100, 1000, (4, 8), generator=torch.Generator().manual_seed(0))
    where = torch.tensor([[w, p] for w in range(4) for p in range(1, 8)], dtype=torch.int32)
    n = where.shape[0]
    idx = torch.stack([torch.arange(n) % n_latents, (torch.arange(n) + 1) % n_latents], 1).to(torch.int32)
    vals = torch.rand(n, 2, generator=torch.Generator().manual_seed(1)) + 0.5
    return Codes(vals=vals, idx=idx, where=where, tokens=tokens, n_latents=n_latents)


def test_steering_explorer_shows_both_texts_and_regenerates(smollm2):
    a = perturbed_sae(d=576, n=64, k=4)
    codes = _codes(64)
    ex = widgets.steering_explorer(smollm2, a, codes, HOOK, "x = [1, 2,", latent=3, strength=6.0, max_new_tokens=4)
    assert "<b>before</b>" in ex.html and "<b>after</b>" in ex.html and "latent 3" in ex.html
    assert ex.max_act(3) == float(codes.latent(3)[1].max())
    box = ex.build()
    (latent_w, strength_w, go), html_w = box.children[1].children, box.children[2]
    strength_w.value = 0.0  # a change regenerates at once
    assert "strength 0 " in html_w.value and ex.result.before == ex.result.after  # strength 0: no change
    latent_w.value = 5
    assert "latent 5" in html_w.value
    go.click()
    assert "latent 5" in html_w.value
    assert not go.disabled and go.description == "Generate"


def test_text_explorer_lists_latents_and_opens_their_dashboard(smollm2):
    a = perturbed_sae(d=576, n=64, k=4)
    codes = _codes(64)
    w_u = unembed_direction(smollm2)
    ex = widgets.text_latents(smollm2, a, codes, smollm2.tokenizer, w_u, HOOK, "import os", top=2)
    assert "skipped" in ex.html  # BOS
    found = ex.found()
    assert found and len(found) == len(set(found))
    box = ex.build()
    (text_w, go), html_w, pick, dash_w = box.children[0].children, box.children[1], box.children[2], box.children[3]
    text_w.value = "print(1)"
    go.click()
    assert "print" in html_w.value and list(pick.options) == ex.found()
    pick.value = ex.found()[0]
    assert f"{ex.found()[0]}" in dash_w.value
