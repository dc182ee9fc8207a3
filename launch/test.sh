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
# pytest on every core (pytest-xdist; WSRL_TEST_WORKERS=0 runs in one process): tests that keep
# real time share one worker, the rest are spread one test at a time (tests/conftest.py).
WORKERS="${WSRL_TEST_WORKERS:-$(nproc)}"
XDIST=()
if [[ "$WORKERS" =~ ^[0-9]+$ ]] && (( WORKERS > 1 )); then XDIST=(-n "$WORKERS" --dist loadgroup); fi
exec .venv/bin/python -m pytest "${XDIST[@]}" "$@"
