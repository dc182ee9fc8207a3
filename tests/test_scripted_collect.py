"""Scripted controllers and the dataset collection command."""

import json
import subprocess
import sys

import numpy as np

from robot_env.peg_sim_env import PegInsertionSimEnv
from robot_env.rollout import evaluate
from robot_env.scripted import ScriptedInserter, Skill
from shared.storage.replay_buffer import ReplayBuffer


def test_spiral_visits_the_neighbours_in_order():
    ctrl = ScriptedInserter(PegInsertionSimEnv().task, Skill.level(1.0))
    pts = []
    for k in range(10):
        ctrl._spiral = k
        pts.append(tuple(np.round(ctrl._spiral_offset() / ctrl.skill.search_step).astype(int)))
    assert pts[0] == (0, 0)
    assert sorted(pts[1:9]) == sorted({(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)} - {(0, 0)})
    assert max(abs(p[0]) for p in pts[9:]) == 2  # then the second ring


def test_skill_orders_success():
    env = PegInsertionSimEnv()
    expert = evaluate(env, ScriptedInserter(env.task, Skill.level(1.0)), episodes=20)
    clueless = evaluate(env, ScriptedInserter(env.task, Skill.level(0.0)), episodes=20)
    env.close()
    # the expert inserts from every fixed pose within a few steps; the clueless one rarely does
    assert expert["success_rate"] == 1.0 and expert["episode_length"] < 15
    assert clueless["success_rate"] <= 0.3


def test_collect_command_writes_a_loadable_mixed_dataset(tmp_path):
    out = tmp_path / "peg.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "robot_env.collect",
            "--out",
            str(out),
            "--transitions",
            "600",
            "--seed",
            "3",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "success rate" in proc.stdout and "transitions" in proc.stdout
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    buf = ReplayBuffer.load(out, gamma=0.98, r_neg=-1.0)
    stats = buf.stats()
    assert stats["transitions"] == summary["transitions"] >= 600
    assert stats["episodes"] == summary["episodes"]
    assert buf.obs_spec == {"state": ((19,), "float32")} and buf.action_dim == 6
    valid = buf.valid
    assert np.isfinite(buf.mc_returns[valid]).all()  # every episode finished
    # rewards are the env's: 0 on the successful last step, -1 otherwise
    assert set(np.unique(buf.rewards[valid])) <= {-1.0, 0.0}
    assert (buf.rewards[valid] == 0).sum() == round(summary["success_rate"] * summary["episodes"])
    batch = buf.sample(8, np.random.default_rng(0))
    assert np.all(np.abs(batch["actions"]) <= 1)


def test_collect_images_at_a_tiny_size(tmp_path):
    from robot_env.collect import collect

    out = tmp_path / "peg_img.npz"
    summary = collect(out, transitions=30, obs_mode="images", image_size=8, progress=False)
    buf = ReplayBuffer.load(out, gamma=0.98, r_neg=-1.0)
    assert buf.obs_spec["wrist_1"] == ((8, 8, 3), "uint8") and buf.obs_spec["wrist_2"] == ((8, 8, 3), "uint8")
    assert buf.stats()["transitions"] == summary["transitions"]
