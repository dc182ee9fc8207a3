#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.sh needs on a GPU machine that cannot reach the package
# registries (the device machines lent here): run it on a machine that can, carry the folder
# over, and run `bash benchmarks/gpu_check.sh --bundle DIR` there.
#   bash benchmarks/gpu_bundle.sh [DIR]        # default .gpu_bundle (git-ignored), about 30 MB
# Such a machine brings its own CUDA build of jax, flax, optax, orbax, numpy, matplotlib, tqdm,
# msgpack and pyyaml (the lender's image list: /work/.library/device/KINDS.md, "Python packages
# already there"); the bundle holds the rest of what the three measurements import, at the versions
# of requirements/cpu.lock, as wheels for its Python 3.12, and the GL dispatch libraries (libglvnd)
# that MuJoCo's EGL rendering loads, which that image lacks (the lender's README.md, nvidia-h200).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.gpu_bundle}"
PY_VERSION="${GPU_PY_VERSION:-3.12}"
# Imported by robot_env (gymnasium, mujoco and its own needs), the transport (pyzmq), the configs
# (draccus and its needs) and the metrics (tensorboardX); websockets is mujoco-studio's.
PACKAGES=(mujoco mujoco-core mujoco-studio glfw pyopengl gymnasium farama-notifications pyzmq draccus mergedeep toml
    tensorboardx websockets)
DEBS=(libglvnd0 libegl1 libopengl0 libgl1 libglx0 libgles2)

pin() {  # the locked version of one package, so the GPU runs what the tests ran
    local v
    v="$(grep -iE "^$1==" "$ROOT/requirements/cpu.lock" | head -1 | sed -E 's/^[^=]+==([^ ]+).*/\1/')"
    if [[ -z "$v" ]]; then echo "gpu_bundle: $1 is not in requirements/cpu.lock" >&2; exit 1; fi
    echo "$1==$v"
}
rm -rf "$DIR/wheels" "$DIR/debs"
mkdir -p "$DIR/wheels" "$DIR/debs"
specs=()
for p in "${PACKAGES[@]}"; do specs+=("$(pin "$p")"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$DIR/wheels" "${specs[@]}"
# amd64 packages from this machine's apt sources, without installing them here.
lists="$(mktemp -d)"
mkdir -p "$lists/partial"
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${apt_opts[@]}" update -qq >/dev/null
(cd "$DIR/debs" && apt-get "${apt_opts[@]}" download -qq "${DEBS[@]}" 2>/dev/null)
rm -rf "$lists"
echo "gpu_bundle: $(ls "$DIR/wheels" | wc -l) wheels, $(ls "$DIR/debs" | wc -l) packages, $(du -sh "$DIR" | cut -f1) in $DIR"
