#!/usr/bin/env bash
# The WSRL actor (robot PC): runs the frozen pre-trained policy for the first K env steps, then
# the learner's newest weights, at a fixed rate; streams transitions to the learner.
# Example:
#   launch/run_actor.sh --pretrained checkpoints/calql/checkpoints --out runs/actor \
#       --learner-host 192.168.1.20 --keys keys/ --hz 10
# All flags: launch/run_actor.sh --help. Installs the 'robot' profile (cameras, keyboard) unless
# WSRL_PROFILE says otherwise; the policy runs on the CPU unless JAX_PLATFORMS is set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-robot}"
# Inference of one observation is fastest on the CPU for state policies; a GPU on the robot PC
# can be used with JAX_PLATFORMS=cuda, and then must not be preallocated next to a learner.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
echo "run_actor: profile ${WSRL_PROFILE:-robot}, JAX on $JAX_PLATFORMS" >&2
exec "$ROOT/.venv/bin/wsrl-actor" "$@"
