#!/usr/bin/env bash
# Collect a mixed-quality offline dataset in the MuJoCo peg-insertion simulation with scripted
# controllers of random skill. Example:
#   launch/collect_sim_data.sh --out data/peg_sim.npz                 # ~18k state transitions
#   launch/collect_sim_data.sh --out data/peg_img.npz --obs-mode images --image-size 128
# Flags: python -m robot_env.collect --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh"
exec "$ROOT/.venv/bin/wsrl-collect-sim-data" "$@"
