#!/usr/bin/env bash
# Create bench/.. /.bench-venv with SAELens for bench/bench_sae.py (SAELens pins transformer-lens<4,
# so it cannot share the course's venv). torch is installed first and pinned by a constraints file,
# so that pip never swaps it for a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BENCH_VENV:-.bench-venv}
PY=${PYTHON:-python3}
TORCH=torch==2.13.0
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sae_lens, torch" 2>/dev/null; then
  echo "$VENV ready"; exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH"
CONSTRAINTS=$(mktemp)
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$CONSTRAINTS"
"$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" sae-lens safetensors
rm -f "$CONSTRAINTS"
"$VENV/bin/python" -c "import sae_lens, torch; print('sae_lens', sae_lens.__version__, 'torch', torch.__version__)"
