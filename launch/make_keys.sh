#!/usr/bin/env bash
# CURVE key files for the learner and its actors (required when the learner binds off loopback).
#   launch/make_keys.sh --dir keys/ [--actors robot1 robot2]
# The learner keeps keys/learner.key_secret and keys/allowed_actors/; each robot PC gets its
# <name>.key_secret, <name>.key and keys/learner.key.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/launch/install.sh" "${WSRL_PROFILE:-cpu}"
exec "$ROOT/.venv/bin/wsrl-make-keys" "$@"
