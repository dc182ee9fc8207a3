#!/usr/bin/env bash
# The project's test command: installs .venv from the lock file if needed, then lint, format
# check and type check (seconds), then pytest. Extra arguments go to pytest
# (e.g. launch/test.sh -m "not slow" -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/install.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
echo "test: ruff check, ruff format --check, mypy" >&2
.venv/bin/ruff check --quiet --output-format concise .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
# pytest runs on two cores by default (pytest-xdist; WSRL_TEST_WORKERS=N for N, 1 for one process,
# and never more workers than cores): tests that keep real time share one worker, the slow ones go
# first (tests/conftest.py). 15 min 44 s for 431 tests on the idle 2-core VM, against 43 min in one
# process before the compile-time work (docs/benchmarks.md).
CORES="$(nproc 2>/dev/null || echo 1)"
WORKERS="${WSRL_TEST_WORKERS:-2}"
if [[ "$WORKERS" =~ ^[0-9]+$ ]] && (( WORKERS > CORES )); then WORKERS="$CORES"; fi
XDIST=()
if [[ "$WORKERS" =~ ^[0-9]+$ ]] && (( WORKERS > 1 )); then XDIST=(-n "$WORKERS" --dist loadgroup); fi
exec .venv/bin/python -m pytest "${XDIST[@]}" "$@"
