"""course_lib.sae.saelens_io: SAELens's folder layout, written and read back."""

from __future__ import annotations

import json

import torch
from packaging.version import Version

from course_lib import sae

from .helpers import perturbed_sae as _sae


def test_saelens_round_trip(tmp_path):
    for kind in ("topk", "relu"):
        m = _sae(kind=kind)
        m.normalise_decoder_()
        folder = sae.saelens_io.save_saelens(m, tmp_path / kind, hook_name="blocks.3.hook_resid_post", model_name="x")
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["d_in"] == 16 and cfg["d_sae"] == 64
        assert cfg["architecture"] == ("topk" if kind == "topk" else "standard")
        assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
        # SAELens 6 keeps the nested metadata only for files that say they are >= 6.0
        assert Version(cfg["metadata"]["sae_lens_version"]) >= Version("6.0.0-rc.0")
        assert sae.saelens_io.read_metadata(folder)["hook_name"] == "blocks.3.hook_resid_post"
        assert sae.saelens_io.read_metadata(folder)["model_name"] == "x"
        assert (folder / "sae_weights.safetensors").exists()
        back = sae.saelens_io.load_saelens(folder)
        assert back.cfg == m.cfg
        x = torch.randn(20, 16) * 4
        with torch.no_grad():
            assert torch.allclose(back(x), m(x), atol=1e-4)
            assert torch.allclose(back.encode(x), m.encode(x), atol=1e-4)
            assert torch.allclose(back.scale, m.scale)


def test_read_metadata_of_a_pre_6_file(tmp_path):
    """Files written before SAELens 6 keep the hook at the top level (``hook_point``, the old name)."""
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 4, "d_sae": 8,
                                                   "hook_point": "blocks.2.hook_resid_pre", "model_name": "gpt2"}))
    meta = sae.saelens_io.read_metadata(tmp_path)
    assert meta["hook_name"] == "blocks.2.hook_resid_pre" and meta["model_name"] == "gpt2"
