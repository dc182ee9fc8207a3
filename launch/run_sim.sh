#!/usr/bin/env bash
# The README's main command: the whole WSRL pipeline in simulation on one machine.
#   launch/run_sim.sh --out runs/sim_demo
# Pre-trained checkpoint (made and cached on first use) -> "before" evaluation on the 20 fixed
# poses -> learner and actor processes over localhost (warmup, online SAC) -> "after"
# evaluation -> DIR/summary.json and DIR/learning_curve.png. All flags: launch/run_sim.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "$ROOT/.venv/bin/wsrl-sim" "$@"
