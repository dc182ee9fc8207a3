#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv from a lock file.
# Usage: launch/install.sh [cpu|robot|cuda|auto]   (default: $WSRL_PROFILE or cpu)
#   cpu   - learner/CI on a CPU machine (also what the simulation demo needs)
#   robot - the robot PC: adds pyrealsense2, pynput, opencv-python
#   cuda  - the GPU box: CUDA 12 build of jaxlib
#   auto  - cuda when nvidia-smi finds a GPU, else cpu
# Idempotent: does nothing when .venv already matches the lock file.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${1:-${WSRL_PROFILE:-cpu}}"
if [[ "$PROFILE" == "auto" ]]; then  # the GPU box: cuda when an NVIDIA driver answers
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then PROFILE=cuda; else PROFILE=cpu; fi
fi
LOCK="$ROOT/requirements/$PROFILE.lock"
VENV="$ROOT/.venv"
UV_VERSION="0.13.8"
PYTHON="${WSRL_PYTHON:-python3}"

if [[ ! -f "$LOCK" ]]; then
  echo "install: unknown profile '$PROFILE' (no $LOCK); use cpu, robot or cuda" >&2
  exit 2
fi

# Offscreen rendering for the simulation's wrist cameras needs an EGL (or OSMesa) library from
# the system; Debian's Mesa packages provide a software one. Installed here when missing and we
# may use apt-get; otherwise say what to install. WSRL_SKIP_SYSTEM_PACKAGES=1 skips this.
render_libs_present() {
  local libs
  libs="$(ldconfig -p 2>/dev/null || true)"
  grep -q 'libEGL.so.1' <<<"$libs" && grep -qE 'libEGL_(mesa|nvidia).so.0' <<<"$libs" && return 0
  grep -q 'libOSMesa.so' <<<"$libs"
}
if [[ "${WSRL_SKIP_SYSTEM_PACKAGES:-0}" != "1" ]] && ! render_libs_present; then
  pkgs="libegl1 libegl-mesa0 libgl1 libosmesa6"
  if command -v apt-get >/dev/null && [[ "$(id -u)" == "0" ]]; then
    echo "install: adding offscreen rendering libraries ($pkgs)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $pkgs >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $pkgs >/dev/null; } \
      || echo "install: WARNING: could not install $pkgs; simulated cameras will not render" >&2
  else
    echo "install: WARNING: no EGL/OSMesa library found; for simulated cameras run: sudo apt-get install $pkgs" >&2
  fi
fi

# One install at a time: launchers started together (the dry run's server, learner and actor)
# would otherwise build the same .venv at once.
mkdir -p "$VENV"
exec 9>"$VENV/.install-lock"
flock 9

stamp="$VENV/.wsrl-installed"
lock_hash() { cat "$ROOT/requirements/$1.lock" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16; }
# "pyc": venvs are installed with their bytecode compiled (below); one made before is redone once.
want="$PROFILE $(lock_hash "$PROFILE") pyc"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$have" == "$want" ]]; then
  exit 0
fi
# The robot profile has all of cpu's but the study's maze (gymnasium-robotics), which never runs
# on the robot PC: a cpu launcher there (the simulated server, a dry-run learner, evaluation)
# keeps the robot venv instead of switching the shared .venv back and forth.
if [[ "$PROFILE" == "cpu" && "$have" == "robot $(lock_hash robot) pyc" ]]; then
  exit 0
fi

echo "install: setting up $VENV from requirements/$PROFILE.lock" >&2
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
# uv installs the hash-pinned lock in seconds; it lives inside the venv and is itself pinned.
# Bytecode is compiled at install, as pip does by default and uv does not: where Python may not
# write it (PYTHONDONTWRITEBYTECODE, a read-only venv) every process would otherwise compile
# jax, flax and matplotlib from source, 3.7 s of each start (5.7 s -> 2.0 s to import the
# learner's libraries on one core, docs/benchmarks.md), and the tests start hundreds of processes.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --compile-bytecode --require-hashes -r "$LOCK"
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --compile-bytecode --no-deps -e "$ROOT"
# uv compiles what it installs; a venv installed before this step gets the rest (seconds when done)
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
echo "$want" > "$stamp"
echo "install: done ($("$VENV/bin/python" -c 'import jax; print("jax", jax.__version__, jax.default_backend())'))" >&2
