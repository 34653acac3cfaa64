"""The bfloat16 path, forced on the CPU: learners whose CPUs compute bf16 natively (recent AMD, Intel with AMX)
run every notebook in it (``dtype="auto"``), so it is tested on every machine, slow or not.

Each real-LM step the notebooks take is run in bfloat16 and in float32 on the same input and compared within a
stated tolerance: SmolLM2's forward (next-token distributions), the harvest of the residual stream (what SAEs
train on), greedy generation with and without a steering hook (cached == full recompute within the dtype; the
same first tokens across dtypes), and the all-at-once simulator's value distributions.

Tolerances: bf16 keeps 8 bits of mantissa (relative rounding 2^-8 ~ 0.4% per operation); after 30 layers the
residual stream keeps a cosine of 0.99+ with float32, and next-token distributions differ by a small KL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae.helpers import perturbed_sae  # tests/sae/helpers.py (tests/ is on sys.path)

from course_lib import hooks, lm
from course_lib.autointerp import localmodel
from course_lib.autointerp.records import Record
from course_lib.autointerp.simulator import AllAtOnceSimulator
from course_lib.sae import steering
from course_lib.sae.harvest import ResidHarvester

TEXT = 'def mean(xs):\n    """Return the average of a list of numbers."""\n    return sum(xs) / len(xs)\n'
PROMPT = "def add(a, b):\n    "
HOOK = "blocks.15.hook_resid_post"


@pytest.fixture(scope="module")
def smollm2_bf16():
    model = lm.load_lm("smollm2", dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16
    return model


def test_forward_next_token_distributions_agree(smollm2, smollm2_bf16):
    tokens = smollm2.to_tokens(TEXT)
    with torch.no_grad():
        lp32 = torch.log_softmax(smollm2(tokens, return_type="logits")[0].float(), -1)
        lp16 = torch.log_softmax(smollm2_bf16(tokens, return_type="logits")[0].float(), -1)
    kl = (lp32.exp() * (lp32 - lp16)).sum(-1)  # KL(fp32 || bf16) per position
    top_agree = (lp32.argmax(-1) == lp16.argmax(-1)).float().mean().item()
    assert kl.mean().item() < 0.05 and kl.max().item() < 0.5, kl
    assert top_agree >= 0.85, top_agree
    # the per-token loss of the text, the number notebooks report, within 2%
    nll32 = -lp32[:-1].gather(1, tokens[0, 1:, None]).mean()
    nll16 = -lp16[:-1].gather(1, tokens[0, 1:, None]).mean()
    assert abs(nll16 - nll32) / nll32 < 0.02, (nll32, nll16)


def test_harvested_residuals_agree(smollm2, smollm2_bf16):
    tokens = smollm2.to_tokens(TEXT)
    a32, w32, m32 = ResidHarvester(smollm2, 15)(tokens)
    a16, w16, m16 = ResidHarvester(smollm2_bf16, 15)(tokens)
    assert a16.dtype == torch.bfloat16 and a32.dtype == torch.float32
    assert torch.equal(w32, w16) and m32 == m16  # the same tokens kept (BOS and massive ones out)
    cos = torch.nn.functional.cosine_similarity(a32, a16.float(), dim=-1)
    assert cos.min().item() > 0.98, cos.min()
    rel = (a32 - a16.float()).norm() / a32.norm()
    assert rel.item() < 0.1, rel
    # the BOS rule sees the same outlier in both dtypes
    r32 = hooks.grab(smollm2, tokens, [HOOK])[HOOK]
    r16 = hooks.grab(smollm2_bf16, tokens, [HOOK])[HOOK]
    assert torch.equal(hooks.keep_positions(r32), hooks.keep_positions(r16))


def test_bf16_generation_cached_equals_full_recompute_and_starts_as_float32(smollm2, smollm2_bf16):
    a = perturbed_sae(d=576, n=256, k=8)
    hook = [(HOOK, steering._add_hook(steering.steering_vector(a, 3, 40.0)))]
    for fwd in ([], hook):
        cached, _ = steering.greedy_generate(smollm2_bf16, PROMPT, 6, fwd, use_cache=True)
        full, _ = steering.greedy_generate(smollm2_bf16, PROMPT, 6, fwd, use_cache=False)
        assert cached == full, (cached, full)
    plain16, first16 = steering.greedy_generate(smollm2_bf16, PROMPT, 3)
    plain32, first32 = steering.greedy_generate(smollm2, PROMPT, 3)
    assert plain16 == plain32  # the first greedy tokens of a confident prompt do not depend on the dtype
    p32, p16 = torch.softmax(first32, -1), torch.softmax(first16, -1)
    assert (p32 - p16).abs().sum().item() < 0.15  # total variation x 2 of the next-token distribution


def test_local_simulator_value_distributions_agree():
    sim32 = AllAtOnceSimulator(localmodel.load_local_lm("smollm2", dtype="float32"))
    sim16 = AllAtOnceSimulator(localmodel.load_local_lm("smollm2", dtype="bfloat16"))
    assert next(sim16.lm.model.parameters()).dtype == torch.bfloat16
    ids = sim32.lm.encode(" def f(x):\n    return x + 1")
    rec = Record(window=0, kind="top", tokens=ids, strings=[sim32.lm.tokenizer.decode([t]) for t in ids],
                 acts=[0.0] * len(ids))
    expl = 'the keyword " def".'
    p32 = sim32.simulate_with_probs(expl, [rec])[0]
    p16 = sim16.simulate_with_probs(expl, [rec])[0]
    assert p32.shape == p16.shape == (len(ids), sim32.scale + 1)
    assert np.abs(p32 - p16).sum(-1).max() < 0.2, np.abs(p32 - p16).sum(-1)
    e32 = sim32.simulate(expl, [rec])[0]
    e16 = sim16.simulate(expl, [rec])[0]
    assert np.abs(e32 - e16).max() < 0.5  # expected values on the 0-10 scale
    assert np.corrcoef(e32, e16)[0, 1] > 0.95
