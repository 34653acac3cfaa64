"""SmolLM2 load time: first conversion from the packaged GGUF vs reload from the safetensors cache.

Baseline: transformers' GGUF loader (de-quantises 272 tensors every time). Ours: the converted
folder in the model cache. Both measured in this run, in a temporary model cache.

    .venv/bin/python bench/bench_lm_load.py
"""

from __future__ import annotations

import os
import platform
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COURSE_LIB_MODEL_CACHE"] = tmp
        from course_lib import lm

        t0 = time.perf_counter()
        lm.load_lm("smollm2")  # converts (GGUF -> safetensors), then loads
        first = time.perf_counter() - t0
        reloads = []
        for _ in range(3):
            t0 = time.perf_counter()
            model = lm.load_lm("smollm2")
            reloads.append(time.perf_counter() - t0)
        best = min(reloads)
        assert model.to_string(int(model(model.to_tokens("The capital of France is"))[0, -1].argmax())) == " Paris"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"first load (GGUF conversion + load): {first:.2f} s")
    print(f"reload from cache (best of 3):        {best:.2f} s  (all: {', '.join(f'{r:.2f}' for r in reloads)})")
    print(f"speedup of the cache over conversion: {first / best:.1f}x")


if __name__ == "__main__":
    main()
