#!/usr/bin/env bash
# Build the SAELens venv (default .saelens-venv) that `make test` (tests/sae/test_saelens_real.py) and
# bench/bench_sae.py drive as a subprocess: SAELens pins transformer-lens<4, so it cannot share the
# course's venv. The Makefile builds it once (its stamp is VENV/.installed); this script is its recipe.
#   bash bench/saelens_venv.sh [VENV]        PYTHON (default python3), TORCH_PIP_ARGS as for .venv
# torch is installed first, the course's pinned build; then exactly the versions of requirements/saelens.txt
# (`make lock`), with --no-deps: nothing is resolved anew, and pip never swaps torch for a multi-GB CUDA build. --no-compile: pip
# would byte-compile every module of torch, transformers... (a minute here); the import check below
# compiles and writes those that are used (even under PYTHONDONTWRITEBYTECODE: without them each
# import of sae_lens costs twice the CPU). The stamp is written last, after that check: an interrupted or failed
# build leaves none and the next run redoes it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.saelens-venv}
PY=${PYTHON:-python3}
TORCH=torch==2.13.0
SAELENS=sae-lens==6.54.12
LOCK=requirements/saelens.txt
grep -qx "$SAELENS" "$LOCK" || { echo "$LOCK does not pin $SAELENS: run make lock" >&2; exit 1; }
LOCK_ID=$(sed -n 's/^# body-sha256: //p' "$LOCK")
STAMP="$VENV/.installed"
WANT="$TORCH $SAELENS lock $LOCK_ID"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import sae_lens" 2>/dev/null; then
  touch "$STAMP"; echo "$VENV ready"; exit 0  # touched: make's rule is satisfied until the script changes
fi
rm -f "$STAMP"
if "$VENV/bin/python" -c "" 2>/dev/null; then "$PY" -m venv "$VENV"; else "$PY" -m venv --clear "$VENV"; fi
# shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of arguments
"$VENV/bin/python" -m pip install --quiet --no-compile ${TORCH_PIP_ARGS:-} "$TORCH"
"$VENV/bin/python" -m pip install --quiet --no-compile --no-deps -r "$LOCK"
"$VENV/bin/python" -m pip check
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -c "import sae_lens, torch; print('$VENV: sae_lens', sae_lens.__version__, 'torch', torch.__version__)"
echo "$WANT" > "$STAMP"
