"""Evaluation over the fixed poses: judges, interventions, the report."""

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import robot_env
from actor.evaluate import KeyboardJudge, evaluate_poses, write_report
from robot_env.scripted import ScriptedInserter, Skill
from tests.helpers import save_tiny_policy

ROOT = Path(__file__).resolve().parent.parent


class TakeOverPose(gym.Wrapper):
    """A person takes over (one step) during the episode from pose 1."""

    def __init__(self, env):
        super().__init__(env)
        self.pose = None

    def reset(self, **kw):
        self.pose = (kw.get("options") or {}).get("eval_pose")
        return self.env.reset(**kw)

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        if self.pose == 1:
            info = {**info, "intervene_action": np.zeros(6, np.float32)}
        return obs, r, term, trunc, info


def test_ground_truth_judge_and_interventions_count_as_failures(tmp_path):
    env = TakeOverPose(gym.make(robot_env.SIM_ENV_ID))
    policy = ScriptedInserter(env.unwrapped.task, Skill.level(1.0), seed=0)
    results = evaluate_poses(env, policy, [0, 1, 2])
    assert [r.pose_index for r in results] == [0, 1, 2]
    assert [r.success for r in results] == [True, False, True]
    assert results[1].intervened and results[1].env_success and results[1].time_to_success_s is None
    assert results[0].time_to_success_s == results[0].steps * 0.1  # success ends the episode
    report = write_report(tmp_path, results, {"checkpoint": "scripted", "judge": "ground_truth"})
    assert report["successes"] == 2 and report["intervened_episodes"] == 1
    assert json.loads((tmp_path / "report.json").read_text())["poses"][1]["intervened"] is True
    assert "| 1 | no | yes |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").stat().st_size > 5000


def test_a_persons_verdict_is_the_result_with_the_envs_beside_it():
    verdicts = iter(["label_failure", "label_success"])

    def keys():  # the person answers when asked; a stray label during the episode is ignored
        return [next(verdicts)] if judge.waiting else ["label_success"]

    env = gym.make(robot_env.SIM_ENV_ID)
    policy = ScriptedInserter(env.unwrapped.task, Skill.level(1.0), seed=0)
    judge = KeyboardJudge(keys)
    results = evaluate_poses(env, policy, [0, 4], "keyboard", judge)
    # The env says success both times; the person failed the first one.
    assert [r.env_success for r in results] == [True, True]
    assert [r.success for r in results] == [False, True] and results[0].judge == "keyboard"
    assert [r.classifier_success for r in results] == [None, None]


@pytest.mark.slow
def test_evaluate_command_writes_the_report(tmp_path):
    save_tiny_policy(tmp_path / "ckpt")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "actor.evaluate",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--out",
            str(tmp_path / "eval"),
            "--poses",
            "0",
            "7",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["episodes"] == 2 and [p["pose_index"] for p in report["poses"]] == [0, 7]
    for p in report["poses"]:
        assert set(p) >= {"pose_index", "success", "intervened", "time_to_success_s"}
    assert json.loads(r.stdout.strip().splitlines()[-1])["episodes"] == 2


class JammedOnce(gym.Wrapper):
    """The first reset finds the peg jammed (a person frees it); the next works."""

    def __init__(self, env):
        super().__init__(env)
        self.resets = 0

    def reset(self, **kw):
        self.resets += 1
        if self.resets == 1:
            from robot_env.franka_env import ResetJammed

            raise ResetJammed("the peg is stuck in the hole: free it by hand")
        return self.env.reset(**kw)


def test_a_reset_that_fails_is_tried_again_for_the_same_pose(caplog):
    env = JammedOnce(gym.make(robot_env.SIM_ENV_ID))
    policy = ScriptedInserter(env.unwrapped.task, Skill.level(1.0), seed=0)
    with caplog.at_level("ERROR", logger="wsrl.evaluate"):
        results = evaluate_poses(env, policy, [4], "ground_truth")
    assert [r.pose_index for r in results] == [4] and results[0].success and env.resets == 2
    assert any("pose 4 failed" in r.getMessage() and "stuck" in r.getMessage() for r in caplog.records)
