#!/usr/bin/env bash
# Convert a user's SERL assets (pickles) into this project's formats, offline, in its own process;
# the pickles are read with a restricted unpickler (numpy arrays and plain containers only).
#   launch/convert_serl.sh resnet ~/.serl/resnet10_params.pkl --out checkpoints/resnet10_imagenet.npz
#   launch/convert_serl.sh transitions buffer/transitions_*.pkl --out data/serl_peg.npz [--keys state wrist_1 wrist_2]
# Flags: python -m learner.serl_assets --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
exec "$ROOT/.venv/bin/wsrl-convert-serl" "$@"
