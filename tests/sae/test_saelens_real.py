"""Our SAELens export, loaded by the real SAELens 6 (``SAE.load_from_disk``) in its own venv.

SAELens pins transformer-lens<4, so it cannot share the course venv: `make test` builds
``.saelens-venv`` once (``bench/saelens_venv.sh``, stamp ``.saelens-venv/.installed``) and this test
runs ``tests/sae/saelens_probe.py`` there as a subprocess, offline (HF_HUB_OFFLINE=1 and the network guard).
Checked for a TopK, a ReLU ("standard"), a JumpReLU and a BatchTopK SAE (the last two as SAELens's
``JumpReLUSAE``, with their thresholds): the class and architecture SAELens builds (``k`` for
TopK), ``d_in``/``d_sae``, the hook and model names it reads from ``metadata``, and that its
``encode`` and ``decode(encode(x))`` equal ours on a fixed held-out input (float32: to within 1e-5 of
the largest value). The SAEs are trained by course_lib for a few steps, so the reconstruction is a real one.
Without the venv (pytest run directly) the test is skipped, saying `make test` builds it; under CI
(``CI=true``) that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from course_lib import hooks, lm, sae

ROOT = Path(__file__).resolve().parent.parent.parent
VENV = ROOT / os.environ.get("SAELENS_VENV", ".saelens-venv")  # an absolute SAELENS_VENV replaces ROOT
PROBE = Path(__file__).with_name("saelens_probe.py")
HOOK = hooks.resid_hook(15)
KINDS = {"topk": ("TopKSAE", "topk"), "relu": ("StandardSAE", "standard"), "jumprelu": ("JumpReLUSAE", "jumprelu"),
         "batchtopk": ("JumpReLUSAE", "jumprelu")}  # a BatchTopK SAE is a JumpReLU one at inference (one threshold)
TOL = 1e-5  # float32, sums in another order: max |difference| <= TOL * max |ours| (observed ~2e-7 of it)


def _assert_close(theirs: torch.Tensor, ours: torch.Tensor, what: str) -> None:
    assert theirs.shape == ours.shape, f"{what}: shape {tuple(theirs.shape)} != ours {tuple(ours.shape)}"
    err, scale = float((theirs - ours).abs().max()), float(ours.abs().max())
    assert err <= TOL * scale, f"{what}: SAELens differs from ours by {err:.2e} (max |ours| {scale:.2e})"


def _saelens_python() -> Path:
    python, stamp = VENV / "bin" / "python", VENV / ".installed"
    if python.exists() and stamp.exists():
        return python
    why = "does not exist" if not python.exists() else "is incomplete (no .installed stamp)"
    msg = (f"the SAELens venv {VENV} {why}: `make test` builds it (or `bash bench/saelens_venv.sh`; "
           "SAELens pins transformer-lens<4, so it has its own venv)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " - CI must run this test")
    pytest.skip(msg)


def _planted(n: int, seed: int) -> torch.Tensor:
    """Raw activations ``[n, 16]``: sparse non-negative mixes of 24 directions, scaled by 7 and offset
    (so the SAE's normalisation ``s`` and ``b_pre`` are far from 1 and 0: every folded term counts)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    codes = (torch.rand(n, 24, generator=g) < 3 / 24) * (1 + torch.rand(n, 24, generator=g))
    return 7 * (codes @ dirs + 0.05 * torch.randn(n, 16, generator=g)) + 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Ours and what the real SAELens made of our export, per kind: ``{kind: (our SAE, x, SAELens's JSON)}``."""
    python = _saelens_python()
    tmp = tmp_path_factory.mktemp("saelens_real")
    data, x = _planted(4096, 1), _planted(64, 2)  # train / the fixed held-out input
    save_file({"x": x.contiguous()}, str(tmp / "x.safetensors"))
    ours = {}
    for kind in KINDS:  # a tiny SAE trained by course_lib (32 steps), exported as the course does
        # 32 steps: a JumpReLU threshold starting low and a fast-moving BatchTopK threshold settle within them
        cfg = sae.SAEConfig(d_in=16, n_latents=64, kind=kind, k=4, l1_coef=1e-3, jump_init_threshold=0.1,
                            threshold_rate=0.2)
        tc = sae.SAETrainConfig(n_tokens=8192, batch_size=256, lr=1e-2, seed=0)
        m, _ = sae.train_sae(cfg, tc, iter(torch.cat([data, data]).split(256)), data[:1024], progress=False)
        sae.saelens_io.save_saelens(m, tmp / kind, hook_name=HOOK, model_name=lm.SMOLLM2_HUB_ID)
        ours[kind] = m
    log = tmp / "netguard.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "tests" / "netguard"), "COURSE_NETGUARD_LOG": str(log)}
    res = subprocess.run([str(python), str(PROBE), str(tmp / "x.safetensors"), *(str(tmp / k) for k in KINDS)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, f"SAELens could not load our export:\n{res.stdout[-2000:]}\n{res.stderr[-6000:]}"
    assert not log.exists(), f"the SAELens probe tried the network: {log.read_text()}"
    theirs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [Path(t["folder"]).name for t in theirs] == list(KINDS), res.stdout[-2000:]
    return {kind: (ours[kind], x, t) for kind, t in zip(KINDS, theirs)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_real_saelens_reads_our_config(exported, kind):
    m, _, theirs = exported[kind]
    cls, arch = KINDS[kind]
    assert theirs["sae_lens_version"].startswith("6."), theirs["sae_lens_version"]
    assert (theirs["class"], theirs["architecture"]) == (cls, arch)
    assert (theirs["d_in"], theirs["d_sae"]) == (16, 64)
    if kind == "topk":
        assert theirs["k"] == m.cfg.k == 4
    assert theirs["hook_name"] == HOOK, "SAELens lost the hook name (read as the pre-6.0 layout?)"
    assert theirs["model_name"] == lm.SMOLLM2_HUB_ID
    assert theirs["normalize_activations"] == "none" and theirs["apply_b_dec_to_input"] is True
    written = json.loads((Path(theirs["folder"]) / "cfg.json").read_text())
    assert set(theirs["cfg_keys"]) <= set(written), "our cfg.json lacks keys SAELens writes for this SAE"


@pytest.mark.parametrize("kind", list(KINDS))
def test_real_saelens_reconstructs_like_ours(exported, kind):
    m, x, theirs = exported[kind]
    with torch.no_grad():
        z, recon = m.encode(x), m(x)
        _assert_close(m.decode(z), recon, "our decode(encode(x)) vs our forward")
    z_theirs = torch.tensor(theirs["latents"])
    _assert_close(z_theirs, z, "encode(x)")
    if kind == "topk":
        assert int((z_theirs > 0).sum(1).max()) <= m.cfg.k
    if kind in ("jumprelu", "batchtopk"):  # the thresholds matter: some positive pre-activations were cut
        assert float(m.threshold.detach().max()) > 0 and int((z_theirs > 0).sum()) > 0
    _assert_close(torch.tensor(theirs["reconstruction"]), recon, "decode(encode(x))")
    _assert_close(torch.tensor(theirs["forward"]), recon, "forward(x)")
    assert float(sae.nmse(x, recon)) < 0.3  # not vacuous: a trained SAE's reconstruction of held-out data
