"""The study's maze (robot_env/point_maze.py): the task file, the env's contract, the navigator
that makes its data, and one study run on it."""

import json
import re

import gymnasium as gym
import numpy as np
import pytest

import robot_env
from robot_env.point_maze import (
    MAZE_TASKS_DIR,
    MazeNavigator,
    MazeTaskError,
    PointMazeSimEnv,
    cell_distances,
    collect_maze,
    load_maze_task,
)
from robot_env.rollout import evaluate
from shared.config import RewardConfig
from shared.storage.replay_buffer import ReplayBuffer


def test_the_task_file_matches_gymnasium_robotics_geometry():
    from gymnasium_robotics.envs.maze.maze_v4 import Maze

    task = load_maze_task("medium")
    assert load_maze_task("maze/medium") == task
    assert task.goal_cell == (6, 6) and len(task.eval_poses) == 20
    env = PointMazeSimEnv(task)
    maze: Maze = env._maze.maze
    for cell in task.free_cells():
        np.testing.assert_allclose(task.cell_xy(cell), maze.cell_rowcol_to_xy(np.array(cell)))
        assert task.xy_cell(task.cell_xy(cell) + 0.3) == tuple(maze.cell_xy_to_rowcol(task.cell_xy(cell) + 0.3))
    env.close()
    # shortest paths by hand: the goal's dead-end corridor, and the start room 10 cells away
    d = cell_distances(task, task.goal_cell)
    assert d[(6, 6)] == 0 and d[(6, 5)] == 1 and d[(5, 6)] == 1 and d[(1, 1)] == 10


def test_a_bad_maze_file_is_refused_with_its_reason(tmp_path):
    good = json.loads((MAZE_TASKS_DIR / "medium.json").read_text())
    cases = {
        "goal_cell [0, 0] is not a free cell": {**good, "goal_cell": [0, 0]},
        "rectangle": {**good, "maze": [*good["maze"][:-1], [1, 1]]},
        "eval pose": {**good, "eval_poses": [[1, 1, 0.7, 0.0]]},
        "KeyError": {k: v for k, v in good.items() if k != "episode_length"},
    }
    for i, (reason, data) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(MazeTaskError, match=re.escape(reason)):
            load_maze_task(path)
    with pytest.raises(MazeTaskError, match="maze tasks shipped"):
        load_maze_task("nowhere")


def test_the_env_keeps_the_contract_resets_rewards_and_ends():
    reward = RewardConfig(scale=2.0, bias=-1.0)
    env = gym.make(robot_env.MAZE_ENV_ID, task="medium", reward=reward)
    task = env.unwrapped.task
    obs, info = env.reset(seed=0, options={"eval_pose": 5})
    r, c, dx, dy = task.eval_poses[5]
    np.testing.assert_allclose(obs["state"], [*(task.cell_xy((r, c)) + [dx, dy]), 0, 0], atol=1e-6)
    assert obs["state"].dtype == np.float32 and not info["success"]
    # a non-finite action is no force: from rest the ball stays put, until the episode times out
    for t in range(1, task.episode_length + 1):
        obs2, rew, term, trunc, info = env.step(np.array([np.nan, np.inf], np.float32))
        assert rew == reward.apply(0.0) and not term and trunc == (t == task.episode_length)
    np.testing.assert_allclose(obs2["state"], obs["state"], atol=1e-6)
    # a start beside the goal: the first step reaches it, is worth apply(1) and ends the episode
    env.reset(seed=1, options={"start_cell": task.goal_cell})
    _, rew, term, trunc, info = env.step(np.zeros(2, np.float32))
    assert info["success"] and term and not trunc and rew == reward.apply(1.0)
    with pytest.raises(ValueError, match="not a free cell"):
        env.reset(options={"start_cell": [0, 0]})
    with pytest.raises(ValueError, match="state observations only"):
        PointMazeSimEnv("medium", obs_mode="images")
    env.close()


def test_the_navigator_reaches_the_goal_from_every_fixed_start():
    env = PointMazeSimEnv("medium")
    nav = MazeNavigator(env.task, noise=0.5, seed=0)
    nav.reset = lambda: setattr(nav, "goal", env.task.goal_cell)  # the task's goal instead of random ones
    res = evaluate(env, nav, 20)
    assert res["success_rate"] == 1.0 and res["episode_length"] < 80  # shortest path: 10 cells
    env.close()


def test_collected_maze_data_round_trips_with_the_tasks_reward(tmp_path):
    path = tmp_path / "maze.npz"
    summary = collect_maze(path, 600, seed=3, progress=False)
    buf = ReplayBuffer.load(path, gamma=0.99)
    assert buf.obs_spec == {"state": ((4,), "float32")} and buf.action_dim == 2
    assert summary["transitions"] == len(buf) >= 600
    batch = buf.sample(len(buf), np.random.default_rng(0))
    assert set(np.unique(batch["rewards"])) <= {-1.0, 0.0}
    np.testing.assert_array_less(np.abs(batch["actions"]), 1.0 + 1e-6)
    again = collect_maze(tmp_path / "again.npz", 600, seed=3, progress=False)
    assert again == summary  # seeded: the same data


@pytest.mark.slow
def test_a_study_runs_on_the_maze_with_its_own_discount(tmp_path):
    from learner.study.sweep import run_study
    from shared.storage.checkpoint import load_checkpoint

    results = run_study("smoke", tmp_path, ["wsrl"], tasks=["maze"], progress=False)
    runs = results["tasks"]["maze"]
    assert set(runs) == {"wsrl"}
    for summary in runs.values():
        s = summary["0"]
        assert s["run"]["env_id"] == robot_env.MAZE_ENV_ID and s["run"]["task"] == "medium"
        assert [c["env_steps"] for c in s["curve"]] == [120, 240]
    (pre_dir,) = (tmp_path / "cache").glob("maze-*/pretrain-calql-*/checkpoints")
    pre = load_checkpoint(pre_dir)
    assert pre.obs_spec == {"state": ((4,), "float32")} and pre.agent.config.gamma == 0.99
    assert "| maze | `wsrl` | 1 |" in (tmp_path / "results.md").read_text()


def test_making_the_maze_leaves_no_file_behind():
    """gymnasium-robotics writes each maze's MJCF to the temp folder and keeps it (one file per
    env made: the study made thousands); the env removes it once MuJoCo has loaded it."""
    import glob
    import os
    import tempfile

    pattern = os.path.join(tempfile.gettempdir(), "ant_maze*.xml")
    before = set(glob.glob(pattern))
    env = gym.make(robot_env.MAZE_ENV_ID)
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    env.close()
    assert set(glob.glob(pattern)) <= before
