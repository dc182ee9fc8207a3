#!/usr/bin/env bash
# Record labelled wrist-camera frames for the reward classifier (robot PC, or the simulation).
#   launch/record_labels.sh --out data/labels --env Franka-v0 --robot-url http://ROBOT:5000     # a person labels: s / f
#   launch/record_labels.sh --out data/labels_sim --labels ground_truth --policy scripted --episodes 60
# All flags: launch/record_labels.sh --help. Installs the 'robot' profile (cameras, keyboard)
# unless WSRL_PROFILE says otherwise.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-robot}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
# Paths are taken relative to where you run this, so do not cd.
exec "$ROOT/.venv/bin/wsrl-record-labels" "$@"
