#!/usr/bin/env bash
# Roll a running learner back to an earlier agent snapshot (its optimiser state too), or list them.
#   launch/rollback.sh --run runs/wsrl --list
#   launch/rollback.sh --run runs/wsrl --to 24000      # or --to best
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}" >/dev/null
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
exec "$ROOT/.venv/bin/wsrl-rollback" "$@"
