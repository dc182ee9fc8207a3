#!/usr/bin/env bash
# Train the reward classifier (GPU box) on labelled frames from launch/record_labels.sh.
#   launch/train_reward_classifier.sh --data data/labels --out checkpoints/reward_classifier
#   launch/train_reward_classifier.sh --data data/labels --out ... --pretrained-trunk resnet10.npz   # frozen trunk
# Then: launch/run_actor.sh ... --reward-classifier checkpoints/reward_classifier
# All flags: launch/train_reward_classifier.sh --help. Installs the 'cuda' profile when a GPU is
# present (nvidia-smi works), else 'cpu'; WSRL_PROFILE overrides.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-auto}"
# Paths are taken relative to where you run this, so do not cd.
exec "$ROOT/.venv/bin/wsrl-train-classifier" "$@"
