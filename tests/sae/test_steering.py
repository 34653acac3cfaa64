"""course_lib.sae.steering on the real SmolLM2: the steering hook adds exactly the latent's write, the cached
generation equals a full recompute, strength 0 changes nothing, and the live-text latents are the SAE's codes."""

from __future__ import annotations

import torch

from course_lib import hooks
from course_lib.sae import steering

from .helpers import perturbed_sae

HOOK = "blocks.15.hook_resid_post"
PROMPT = "def add(a, b):\n    "


def _sae():
    return perturbed_sae(d=576, n=256, k=8)


def _full_recompute(model, prompt, n, fwd_hooks):
    tokens = model.to_tokens(prompt)
    n0 = tokens.shape[1]
    with torch.no_grad():
        for _ in range(n):
            nxt = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, return_type="logits")[0, -1].argmax()
            tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
    return model.tokenizer.decode(tokens[0, n0:].tolist(), skip_special_tokens=True)


def test_hook_adds_the_latents_write_everywhere_but_bos(smollm2):
    a = _sae()
    vec = steering.steering_vector(a, 5, 3.0)
    assert torch.allclose(vec, 3.0 * a.W_dec[5].detach() / a.scale)
    tokens = smollm2.to_tokens(PROMPT)
    with torch.no_grad():
        _, clean = smollm2.run_with_cache(tokens, names_filter=HOOK)
        seen = {}
        smollm2.run_with_hooks(tokens, fwd_hooks=[(HOOK, steering._add_hook(vec)),
                                                  (HOOK, lambda x, hook: seen.setdefault("x", x.clone()))])
    diff = seen["x"] - clean[HOOK]
    assert torch.allclose(diff[0, 0], torch.zeros(576), atol=1e-5)  # BOS untouched
    assert torch.allclose(diff[0, 1:], vec.expand(tokens.shape[1] - 1, -1), atol=1e-4)


def test_cached_generation_equals_full_recompute_with_and_without_steering(smollm2):
    """float32 here; tests/test_lm_bf16.py does the same in bfloat16."""
    a = _sae()
    vec = steering.steering_vector(a, 3, 40.0)
    plain, _ = steering.greedy_generate(smollm2, PROMPT, 6)
    steered, _ = steering.greedy_generate(smollm2, PROMPT, 6, [(HOOK, steering._add_hook(vec))])
    assert plain == _full_recompute(smollm2, PROMPT, 6, [])
    assert plain == steering.greedy_generate(smollm2, PROMPT, 6, use_cache=False)[0]
    assert plain.startswith(" return a + b")  # and it is the sensible continuation, not merely consistent
    assert steered == _full_recompute(smollm2, PROMPT, 6, [(HOOK, steering._add_hook(vec))])
    assert steered == steering.greedy_generate(smollm2, PROMPT, 6, [(HOOK, steering._add_hook(vec))],
                                               use_cache=False)[0]
    assert steered != plain  # a strong write changes the text (else the test above proves little)


def test_strength_zero_changes_nothing_and_a_strong_one_moves_the_logits(smollm2):
    a = _sae()
    r0 = steering.steer(smollm2, a, HOOK, latent=3, strength=0.0, max_act=5.0, prompt=PROMPT, max_new_tokens=4)
    assert r0.before == r0.after and abs(r0.promoted[0][1]) < 1e-3
    r1 = steering.steer(smollm2, a, HOOK, latent=3, strength=8.0, max_act=5.0, prompt=PROMPT, max_new_tokens=4)
    assert r1.promoted[0][1] > 1.0 and r1.suppressed[-1][1] < r1.promoted[0][1]
    assert r1.seconds > 0 and r1.before == r0.before


def test_latents_on_text_are_the_saes_top_codes(smollm2):
    a = _sae()
    text = "for i in range(3):\n    print(i)"
    rows = steering.latents_on_text(smollm2, a, HOOK, text, top=2)
    tokens = smollm2.to_tokens(text)
    assert len(rows) == tokens.shape[1] and rows[0].skipped and rows[0].latents == []
    with torch.no_grad():
        _, cache = smollm2.run_with_cache(tokens, names_filter=HOOK)
        keep = hooks.keep_positions(cache[HOOK])[0]
        z = a.encode(cache[HOOK][0].float())
    for p, r in enumerate(rows):
        assert r.skipped == (not bool(keep[p]))
        if not r.skipped:
            v, i = z[p].topk(2)
            assert [x for x, _ in r.latents] == [int(j) for j, w in zip(i, v) if w > 0]
