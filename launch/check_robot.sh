#!/usr/bin/env bash
# Bring-up check of a real robot (robot PC): server latency, state, safety box, gripper units,
# cameras, a gentle test move. One PASS/FAIL line each; exits non-zero on any failure.
#   launch/check_robot.sh --robot-url http://127.0.0.1:5000 [--cameras realsense|server|none] [--task T] [--gripper G]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-robot}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "$ROOT/.venv/bin/wsrl-check-robot" "$@"
