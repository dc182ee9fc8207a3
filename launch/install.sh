#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv from a lock file.
# Usage: launch/install.sh [cpu|robot|cuda]   (default: $WSRL_PROFILE or cpu)
#   cpu   - learner/CI on a CPU machine (also what the simulation demo needs)
#   robot - the robot PC: adds pyrealsense2, pynput, opencv-python
#   cuda  - the GPU box: CUDA 12 build of jaxlib
# Idempotent: does nothing when .venv already matches the lock file.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${1:-${WSRL_PROFILE:-cpu}}"
LOCK="$ROOT/requirements/$PROFILE.lock"
VENV="$ROOT/.venv"
UV_VERSION="0.13.8"
PYTHON="${WSRL_PYTHON:-python3}"

if [[ ! -f "$LOCK" ]]; then
  echo "install: unknown profile '$PROFILE' (no $LOCK); use cpu, robot or cuda" >&2
  exit 2
fi

stamp="$VENV/.wsrl-installed"
want="$PROFILE $(cat "$LOCK" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

echo "install: setting up $VENV from requirements/$PROFILE.lock" >&2
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
# uv installs the hash-pinned lock in seconds; it lives inside the venv and is itself pinned.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --require-hashes -r "$LOCK"
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e "$ROOT"
echo "$want" > "$stamp"
echo "install: done ($("$VENV/bin/python" -c 'import jax; print("jax", jax.__version__, jax.default_backend())'))" >&2
