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


OWN = ("learner", "actor", "robot_env", "shared", "launch", "benchmarks", "tests", "docs", ".ci")
PATH = re.compile(r"`([A-Za-z0-9_.@/-]+\.(?:py|sh|json|md|toml|yaml|lock))`")


def test_every_file_the_docs_name_exists():
    """A path in README.md or docs/*.md under one of the project's own folders names a file that
    exists, and so does each file a parts-table row names inside its folder (`| `learner/` | ...
    (`pretrain.py`) |`): renaming or deleting a file fails here until the docs follow."""
    missing, checked = [], 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for name in PATH.findall(text):
            checked += name.split("/")[0] in OWN
            if name.split("/")[0] in OWN and not (ROOT / name).exists():
                missing.append(f"{doc.name}: {name}")
        for row in re.findall(r"^\| `([a-z_]+)/` \|(.*)$", text, re.M):
            folder, rest = row
            for name in PATH.findall(rest):
                checked += "/" not in name
                if "/" not in name and not (ROOT / folder / name).exists() and not (ROOT / name).exists():
                    missing.append(f"{doc.name}: {folder}/{name}")
    assert not missing, missing
    assert checked > 100, checked  # the patterns still find the docs' paths


def test_the_parts_table_names_every_module():
    """docs/architecture.md's parts table names every module of the packages (a new file is
    described where a newcomer looks first)."""
    arch = (ROOT / "docs" / "architecture.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_/]+)/` \|(.*)$", arch, re.M))  # a row per folder or subfolder
    unnamed = []
    for package in ("learner", "actor", "robot_env", "shared"):
        for f in sorted((ROOT / package).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            # named in the row of its folder (the deepest one with a row), or by its path anywhere
            folder = max((d for d in rows if rel.startswith(d + "/")), key=len, default=package)
            inside = rel[len(folder) + 1 :]
            if f.name != "__init__.py" and f"`{inside}`" not in rows.get(folder, "") and f"`{rel}`" not in arch:
                unnamed.append(rel)
    assert not unnamed, unnamed
