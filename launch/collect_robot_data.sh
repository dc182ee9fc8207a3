#!/usr/bin/env bash
# Record teleoperated (default) or intervention-guided (--policy CHECKPOINT) episodes into the
# dataset format, for pre-training the paper's way. On the robot PC, with a SpaceMouse:
#   launch/collect_robot_data.sh --env Franka-v0 --robot-url http://127.0.0.1:5000 \
#       --intervene spacemouse --obs-mode images --episodes 20 --out data/robot.npz
# In simulation, unattended (the scripted inserter stands in for the person):
#   launch/collect_robot_data.sh --intervene scripted --obs-mode state --episodes 5 --out data/teleop_sim.npz
# Flags: python -m actor.collect_data --help. The SpaceMouse's set-up: docs/robot.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-robot}"  # the robot PC's: cameras, keyboard, SpaceMouse
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "$ROOT/.venv/bin/wsrl-collect-robot-data" "$@"
