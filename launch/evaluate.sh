#!/usr/bin/env bash
# Evaluate a checkpoint from each of the task's 20 fixed initial poses (deterministic policy).
#   launch/evaluate.sh --checkpoint runs/wsrl/checkpoints --out runs/wsrl/eval            # simulation, ground truth
#   launch/evaluate.sh --checkpoint ... --env Franka-v0 --robot-url http://ROBOT:5000 --judge keyboard
# Writes OUT/report.json (one record per pose), OUT/report.md and OUT/report.png.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "$ROOT/.venv/bin/wsrl-evaluate" "$@"
