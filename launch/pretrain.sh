#!/usr/bin/env bash
# Offline pre-training (Cal-QL by default; --algo cql|iql) on a dataset file.
# Example: launch/pretrain.sh --dataset data/peg.npz --out checkpoints/calql --preset robot
# All flags: launch/pretrain.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}"
# Paths are taken relative to where you run this, so do not cd.
exec "$ROOT/.venv/bin/wsrl-pretrain" "$@"
