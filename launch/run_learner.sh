#!/usr/bin/env bash
# The WSRL learner (GPU box): loads the pre-trained checkpoint, serves actors over ZeroMQ,
# waits for K warmup transitions, then fine-tunes with high-UTD SAC and publishes weights.
# Example:
#   launch/run_learner.sh --pretrained checkpoints/calql/checkpoints --out runs/wsrl \
#       --preset robot --bind 0.0.0.0 --keys keys/        # off loopback, CURVE keys are required
#   launch/run_learner.sh --out runs/wsrl --resume          # continue after a crash or Ctrl-C
# All flags: launch/run_learner.sh --help. Installs the 'cuda' profile when nvidia-smi works.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-auto}"
# When the actor (or anything else) shares this GPU, JAX must not grab 75% of its memory up
# front. Override with XLA_PYTHON_CLIENT_MEM_FRACTION if the learner has the GPU to itself.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}"
echo "run_learner: profile ${WSRL_PROFILE:-auto}, preallocate=$XLA_PYTHON_CLIENT_PREALLOCATE" >&2
exec "$ROOT/.venv/bin/wsrl-learner" "$@"
