#!/usr/bin/env bash
# GPU readiness in one run: on a machine with an NVIDIA GPU, installs the cuda profile and measures
#   1. learner throughput with ResNet-10 on two 128 px cameras (ensemble 10, batch 256, UTD 4;
#      target: at least 40 env steps/s, 4x the robot's 10 Hz), with the actor's own encoders and
#      with the critic's shared (encoder.share_encoder), and on the trunk's features cached at
#      ingest (learner/features.py; the learner's default with a frozen trunk),
#   2. image transitions into the learner's buffer (two 128 px cameras, two processes),
#   3. MuJoCo rendering of both wrist cameras with MUJOCO_GL=egl.
# Without a GPU (or with --cpu) it runs the same three measurements at tiny sizes on the CPU, in
# about a minute, so the script is exercised by the test suite and cannot rot.
#   bash benchmarks/gpu_check.sh [--cpu]        # figures on stdout; also $OUT/gpu_check.txt when OUT is set
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=gpu
if [[ "${1:-}" == "--cpu" ]] || ! command -v nvidia-smi >/dev/null 2>&1; then MODE=cpu; fi
if [[ $MODE == gpu ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    bash launch/install.sh cuda
    export JAX_PLATFORMS=cuda MUJOCO_GL=egl XLA_PYTHON_CLIENT_PREALLOCATE=false
    LEARNER=(--size 128 --filters 64 --critics 10 --batch 256 --utd 4 --seconds 20)
    TRANSPORT=(throughput --transitions 20000)
    RENDER=(--seconds 5 --sizes 128)
else
    echo "gpu_check: no GPU here; the CPU fallback at tiny sizes"
    bash launch/install.sh cpu
    export JAX_PLATFORMS=cpu MUJOCO_GL="${MUJOCO_GL:-egl}"
    LEARNER=(--size 16 --filters 8 --critics 2 --batch 8 --utd 1 --seconds 1)
    TRANSPORT=(throughput --transitions 300 --capacity 1000)
    RENDER=(--seconds 0.5 --sizes 16)
fi
PY="$ROOT/.venv/bin/python"
LOG=/dev/null
if [[ -n "${OUT:-}" ]]; then LOG="$OUT/gpu_check.txt"; fi
run() { echo "== $*"; "$@"; }
{
    run "$PY" benchmarks/image_learner.py "${LEARNER[@]}"
    run "$PY" benchmarks/image_learner.py "${LEARNER[@]}" --shared-encoder
    run "$PY" benchmarks/image_learner.py "${LEARNER[@]}" --cached
    run "$PY" benchmarks/runtime.py "${TRANSPORT[@]}"
    run "$PY" benchmarks/sim_speed.py "${RENDER[@]}"
    echo "gpu_check: done ($MODE)"
} 2>&1 | tee "$LOG"
