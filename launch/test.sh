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
# WSRL_TEST_WORKERS=2 (or more) runs pytest on that many cores (pytest-xdist): tests that keep real
# time share one worker, the slow ones go first (tests/conftest.py). One process by default: on
# two workers the reflex test of tests/test_robot_controller.py failed in 3 of 3 runs here (a
# starved simulated arm), so CI keeps the one-process run until that is fixed (docs/benchmarks.md).
WORKERS="${WSRL_TEST_WORKERS:-1}"
XDIST=()
if [[ "$WORKERS" =~ ^[0-9]+$ ]] && (( WORKERS > 1 )); then XDIST=(-n "$WORKERS" --dist loadgroup); fi
exec .venv/bin/python -m pytest "${XDIST[@]}" "$@"
