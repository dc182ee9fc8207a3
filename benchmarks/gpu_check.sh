#!/usr/bin/env bash
# GPU readiness in one run: on a machine with an NVIDIA GPU, installs the cuda profile and measures
#   1. learner throughput with ResNet-10 on two 128 px cameras (ensemble 10, batch 256, UTD 4;
#      target: at least 40 env steps/s, 4x the robot's 10 Hz), with the actor's own encoders and
#      with the critic's shared (encoder.share_encoder), and on the trunk's features cached at
#      ingest (learner/features.py; the learner's default with a frozen trunk), there also with
#      bfloat16 matmuls (GPU only),
#   2. image transitions into the learner's buffer (two 128 px cameras, two processes),
#   3. MuJoCo rendering of both wrist cameras with MUJOCO_GL=egl.
# Without a GPU (or with --cpu) it runs the same three measurements at tiny sizes on the CPU, in
# about a minute, so the script is exercised by the test suite and cannot rot.
# With --bundle DIR (a GPU machine that cannot reach the registries) it installs nothing from the
# network: the machine's own python3 with its CUDA jax, plus the wheels and GL libraries that
# benchmarks/gpu_bundle.sh packed into DIR.
#   bash benchmarks/gpu_check.sh [--cpu | --bundle DIR]   # figures on stdout; also $OUT/gpu_check.txt when OUT is set
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=gpu
BUNDLE=""
case "${1:-}" in
    "") ;;
    --cpu) MODE=cpu ;;
    --bundle) BUNDLE="$(cd "${2:?--bundle DIR}" && pwd)" ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--cpu | --bundle DIR]" >&2; exit 2 ;;
esac
if ! command -v nvidia-smi >/dev/null 2>&1; then MODE=cpu; fi
PY="$ROOT/.venv/bin/python"
if [[ $MODE == gpu ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    if [[ -n "$BUNDLE" ]]; then
        PY="$(command -v python3)"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/wsrl-site \
            "$BUNDLE"/wheels/*.whl
        # The GL dispatch libraries; the NVIDIA driver's EGL vendor library is the machine's own.
        for f in "$BUNDLE"/debs/*.deb; do dpkg -x "$f" /; done
        ldconfig
        vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
        if [[ -f $vendor ]]; then export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor; fi
        export PYTHONPATH="/tmp/wsrl-site:$ROOT"
        "$PY" -c 'import jax, flax, optax, mujoco; print("gpu_check: python", __import__("sys").version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "mujoco", mujoco.__version__, jax.devices())'
    else
        bash launch/install.sh cuda
    fi
    export JAX_PLATFORMS=cuda MUJOCO_GL=egl XLA_PYTHON_CLIENT_PREALLOCATE=false
    LEARNER=(--size 128 --filters 64 --critics 10 --batch 256 --utd 4 --seconds 10)
    # bfloat16 matmuls, the option kept for GPUs (docs/benchmarks.md), on the cached update
    BF16=(--cached --tag bf16 --set agent.critic_net.matmul_dtype=bfloat16 --set agent.actor_net.matmul_dtype=bfloat16)
    TRANSPORT=(throughput --transitions 20000)
    RENDER=(--seconds 5 --sizes 128)
    PART_LIMIT=240  # seconds a part may take on a lent machine: a hang must not spend the lease
else
    echo "gpu_check: no GPU here; the CPU fallback at tiny sizes"
    bash launch/install.sh cpu
    export JAX_PLATFORMS=cpu MUJOCO_GL="${MUJOCO_GL:-egl}"
    LEARNER=(--size 16 --filters 8 --critics 2 --batch 8 --utd 1 --seconds 1)
    BF16=()  # the CPU keeps float32 (bf16 was slower here, docs/benchmarks.md)
    TRANSPORT=(throughput --transitions 300 --capacity 1000)
    RENDER=(--seconds 0.5 --sizes 16)
    PART_LIMIT=600
fi
LOG=/dev/null
if [[ -n "${OUT:-}" ]]; then LOG="$OUT/gpu_check.txt"; fi
# Each part runs whatever the others did: one failure on a lent machine must not cost the rest.
FAILED=0
run() { echo "== $*"; timeout "$PART_LIMIT" "$@" || { echo "gpu_check: FAILED ($?): $*"; FAILED=1; }; }
{
    run "$PY" benchmarks/image_learner.py "${LEARNER[@]}" --all  # own encoders, shared, cached
    if [[ ${#BF16[@]} -gt 0 ]]; then run "$PY" benchmarks/image_learner.py "${LEARNER[@]}" "${BF16[@]}"; fi
    run "$PY" benchmarks/runtime.py "${TRANSPORT[@]}"
    run "$PY" benchmarks/sim_speed.py "${RENDER[@]}"
    if [[ $FAILED == 0 ]]; then echo "gpu_check: done ($MODE)"; else echo "gpu_check: some parts failed ($MODE)"; fi
    [[ $FAILED == 0 ]]
} 2>&1 | tee "$LOG"
