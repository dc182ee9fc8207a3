#!/usr/bin/env bash
# A stand-in for the Franka robot server, backed by the MuJoCo simulation, for tests and dry runs.
#   launch/run_sim_robot_server.sh --port 5000 [--gripper serl_robotiq|serl_franka|normalised] [--latency 0.05 --error-rate 0.01]
# Serves the robot server's endpoints (docs/architecture.md, "The robot server") at http://127.0.0.1:PORT/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "$ROOT/.venv/bin/wsrl-sim-robot-server" "$@"
