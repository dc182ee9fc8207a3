"""The Python examples in docs/ run as written, from a plain shell: no display, no MUJOCO_GL."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _examples() -> list[tuple[str, str]]:
    out = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for i, code in enumerate(BLOCK.findall(doc.read_text())):
            out.append((f"{doc.name}#{i}", code))
    return out


def _plain_shell_env() -> dict[str, str]:
    # what a newcomer's terminal has: no GL backend chosen, no X display
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_the_docs_have_the_image_example():
    names = [name for name, code in _examples() if 'obs_mode="images"' in code]
    assert names == ["simulation.md#0"]


@pytest.mark.parametrize(("name", "code"), _examples(), ids=[n for n, _ in _examples()])
def test_docs_example_runs_in_a_plain_shell(name, code, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_plain_shell_env(), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"{name} failed:\n{r.stderr[-3000:]}"
    if 'obs_mode="images"' in code:
        assert r.stdout.split("\n")[-2] == "(19,) (64, 64, 3)"
