"""benchmarks/gpu_check.sh, the device check prepared for a GPU, runs here in its CPU fallback so it
cannot rot: the same three measurements at tiny sizes, each printing its figure."""

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three image-learner starts, each compiling a ResNet

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_its_cpu_fallback_and_prints_every_figure(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path)}
    r = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = (tmp_path / "gpu_check.txt").read_text()
    for figure in (
        "learner_env_steps_per_s",
        "learner_shared_encoder_env_steps_per_s",
        "learner_cached_env_steps_per_s",
        "transport_transitions_per_s",
        "image_mode_16x16_env_steps_per_s",
    ):
        m = re.search(rf"{figure}=([0-9.]+)", out)
        assert m and float(m.group(1)) > 0, figure
    assert "gpu_check: done (cpu)" in out
