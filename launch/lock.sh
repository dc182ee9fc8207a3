#!/usr/bin/env bash
# Re-resolve the lock files from pyproject.toml (maintainers only; installs never resolve).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/install.sh cpu >/dev/null
UV=".venv/bin/uv"
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet)
"$UV" pip compile pyproject.toml --extra test --extra study --extra view --extra wandb "${common[@]}" -o requirements/cpu.lock
"$UV" pip compile pyproject.toml --extra test --extra robot --extra view "${common[@]}" -o requirements/robot.lock
"$UV" pip compile pyproject.toml --extra test --extra study --extra cuda --extra view --extra wandb "${common[@]}" -o requirements/cuda.lock
echo "lock: wrote requirements/{cpu,robot,cuda}.lock"
