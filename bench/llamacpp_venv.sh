#!/usr/bin/env bash
# Build the llama.cpp server venv (default .llamacpp-venv) that `make test` drives as a subprocess
# (tests/autointerp/test_server_real.py: a real OpenAI-compatible server on 127.0.0.1 serving the
# SmolLM2 GGUF the course ships). The Makefile builds it once (its stamp is VENV/.installed); this
# script is its recipe.
#   bash bench/llamacpp_venv.sh [VENV]      PYTHON (default python3); LLAMACPP_WHEELS: wheel folder
#
# llama-cpp-python has no prebuilt wheel on PyPI: pip compiles llama.cpp from the sdist (3-4
# minutes on 2 cores, docs/server.md). The wheel is built once per CPU *level* and kept in
#   ~/.cache/mechinterp-course/wheels/llama-cpp-python-<version>-<level>/
# and every later venv installs it from there in seconds. Not pip's own wheel cache: pip keys a built
# wheel by the sdist's URL and hash only, never by CMAKE_ARGS or the CPU, so a wheel compiled for
# one machine (llama.cpp's default is -march=native) would be reused on another and die there with
# an illegal instruction. Here the build is never native: GGML_NATIVE=OFF with the instruction set
# of the level named in the folder (x86-64-v3: AVX2/FMA/F16C/BMI2, Haswell and Zen onwards;
# x86-64-v2: SSE4.2 only; other architectures: the compiler's portable baseline), and the wheel is
# built with --no-cache-dir so pip never hands back (or keeps) a wheel made with other flags.
# Only what the Python package loads is built: libllama and ggml. No multimodal library
# (LLAVA_BUILD=OFF), no tests, examples, tools or llama.cpp's own server binary, and no `llama-common`:
# llama-cpp-python's CMakeLists forces LLAMA_BUILD_COMMON=ON (a -D cannot override a FORCEd cache
# entry), yet its Python code never loads that library; a CMake file run right after llama.cpp's
# project() (CMAKE_PROJECT_llama.cpp_INCLUDE) turns it off. That halves the compile (74 compile units
# instead of 127): on the 2-core EPYC, ninja built the libraries in 190 s and llama-common in 211 s more. The stamp names the pins and the level and is
# written last, after an import check: an interrupted or failed build leaves none and the next run
# redoes it; a venv made on another CPU level is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.llamacpp-venv}
PY=${PYTHON:-python3}
VERSION=0.3.36
LLAMA=llama-cpp-python==$VERSION
# The server's own dependencies: exactly the versions of the lock (`make lock`).
LOCK=requirements/llamacpp.txt
LOCK_ID=$(sed -n 's/^# body-sha256: //p' "$LOCK")

cpu_level() {
  case "$(uname -m)" in
    x86_64 | amd64)
      local flags
      flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
      for f in avx avx2 fma f16c bmi2; do
        case "$flags" in *" $f "*) ;; *) echo x86-64-v2; return ;; esac
      done
      echo x86-64-v3 ;;
    *) echo "$(uname -m)-baseline" ;;
  esac
}
LEVEL=$(cpu_level)
case "$LEVEL" in
  x86-64-v3) ISA="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" ;;
  x86-64-v2) ISA="-DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF -DGGML_AVX512=OFF" ;;
  *) ISA="" ;;
esac
WHEELS=${LLAMACPP_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/mechinterp-course/wheels/llama-cpp-python-$VERSION-$LEVEL}
STAMP="$VENV/.installed"
WANT="$LLAMA $LEVEL lock $LOCK_ID"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import llama_cpp.server.app" 2>/dev/null; then
  touch "$STAMP"; echo "$VENV ready ($LLAMA, $LEVEL)"; exit 0  # touched: make's rule holds until the script changes
fi
rm -f "$STAMP"
if ! ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1 && ! command -v "${CXX:-c++}" >/dev/null 2>&1 \
   && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "error: no C++ compiler to build $LLAMA (CI must run the llama.cpp server tests): sudo apt-get install -y g++" >&2
    exit 1
  fi
  echo "no C++ compiler: the llama.cpp server tests (tests/autointerp/test_server_real.py) are skipped; install one with: sudo apt-get install -y g++"
  exit 0  # no stamp: the next make test tries again
fi
if "$VENV/bin/python" -c "" 2>/dev/null; then "$PY" -m venv "$VENV"; else "$PY" -m venv --clear "$VENV"; fi
if ! ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "building $LLAMA for $LEVEL (compiles llama.cpp: 3-4 minutes on 2 cores; once per machine)"
  TMP="$WHEELS.tmp.$$"
  rm -rf "$TMP"; mkdir -p "$TMP"
  start=$(date +%s)
  echo 'set(LLAMA_BUILD_COMMON OFF CACHE BOOL "the Python package never loads llama-common" FORCE)' > "$TMP.skip-common.cmake"
  CMAKE_ARGS="-DCMAKE_PROJECT_llama.cpp_INCLUDE=$TMP.skip-common.cmake -DGGML_NATIVE=OFF $ISA -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    "$VENV/bin/python" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$TMP" "$LLAMA"
  rm -f "$TMP.skip-common.cmake"
  rm -rf "$WHEELS"; mv "$TMP" "$WHEELS"  # complete wheels only
  echo "built $(ls "$WHEELS") in $(( $(date +%s) - start )) s"
fi
"$VENV/bin/python" -m pip install --quiet --no-compile --no-index --no-deps "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl
"$VENV/bin/python" -m pip install --quiet --no-compile --no-deps -r "$LOCK"
"$VENV/bin/python" -m pip check
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server.app; print('$VENV: llama_cpp', llama_cpp.__version__, '($LEVEL)')"
echo "$WANT" > "$STAMP"
