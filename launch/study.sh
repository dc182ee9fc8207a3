#!/usr/bin/env bash
# The seeded study runner: the paper's methods on the simulated task, one process each run.
#   launch/study.sh --suite smoke --out runs/study [--methods wsrl rlpd sac_fast ...] [--seeds N]
# Writes OUT/results.json, OUT/results.png and OUT/runs/<method>/seed_<s>/{metrics.jsonl,summary.json}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
exec "$ROOT/.venv/bin/wsrl-study" "$@"
