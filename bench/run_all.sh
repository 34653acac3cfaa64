#!/usr/bin/env bash
# Run every benchmark in bench/ with the course venv's python (first argument).
# Each prints ratios measured in one run; copy them into bench/RESULTS.md with the machine.
set -uo pipefail
PY=${1:-.venv/bin/python}
status=0
for b in "$(dirname "$0")"/bench_*.py; do
  echo "=== $b"
  "$PY" "$b" || status=1
done
exit $status
