"""``PointMazeSim-v0``: a sparse-reward maze for the study (the paper's antmaze analogue), and its data.

The ball and maze are gymnasium-robotics' ``PointMaze`` (MuJoCo, imported when the env is made):
a 2-D force on a ball, four physics steps per action. The task file
(``robot_env/tasks/maze/<name>.json``) fixes the map, one goal cell, the cells episodes start in
and 20 fixed evaluation starts; reaching the goal (within ``success_radius``) is success, worth
``RewardConfig.apply(1)``, and ends the episode. Observation ``state``: x, y, vx, vy (float32).

The offline data (``collect_maze``) is "diverse" in D4RL's sense: a noisy controller drives the
ball along shortest paths to random goal cells from random starts anywhere in the maze, and the
reward is that of the task's goal; few episodes pass through it, so a policy must stitch pieces
of many trajectories, as in antmaze.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from robot_env.rollout import run_episode
from robot_env.task_config import TASKS_DIR, task_file
from shared.config import RewardConfig
from shared.data.dataset import obs_spec_of
from shared.storage.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.maze")

MAZE_TASKS_DIR = TASKS_DIR / "maze"
ACTION_DIM = 2
Cell = tuple[int, int]


class MazeTaskError(ValueError):
    """A maze task file that cannot be used (named file, field and reason in the message)."""


@dataclass(frozen=True)
class MazeTask:
    """Every number of a maze task (one JSON file in ``robot_env/tasks/maze/``)."""

    name: str
    maze: tuple[tuple[int, ...], ...]  # rows of 1 (wall) and 0 (free); the border is wall
    goal_cell: Cell
    reset_cells: tuple[Cell, ...]  # training episodes start in one of these (plus noise)
    reset_noise: float  # uniform +- this (cell units) around a reset cell's centre
    eval_poses: tuple[tuple[int, int, float, float], ...]  # row, col, then x, y offsets: the fixed starts
    success_radius: float
    action_repeat: int  # physics steps (0.01 s each) per action
    episode_length: int
    description: str = ""

    def free_cells(self) -> list[Cell]:
        return [(r, c) for r, row in enumerate(self.maze) for c, v in enumerate(row) if v == 0]

    def cell_xy(self, cell: Cell) -> np.ndarray:
        """The centre of a cell in the world frame (gymnasium-robotics' convention: x along
        columns, y up, the map centred on the origin, cells of size 1)."""
        rows, cols = len(self.maze), len(self.maze[0])
        return np.array([cell[1] + 0.5 - cols / 2, rows / 2 - cell[0] - 0.5])

    def xy_cell(self, xy: np.ndarray) -> Cell:
        rows, cols = len(self.maze), len(self.maze[0])
        return (math.floor(rows / 2 - float(xy[1])), math.floor(float(xy[0]) + cols / 2))

    @property
    def goal_xy(self) -> np.ndarray:
        return self.cell_xy(self.goal_cell)


def _cell(value: Any, what: str, task: MazeTask | None = None) -> Cell:
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise MazeTaskError(f"{what} must be [row, col] integers, got {value!r}")
    return (int(value[0]), int(value[1]))


def load_maze_task(name_or_path: str | Path) -> MazeTask:
    """Load a maze task by name (``medium`` -> ``robot_env/tasks/maze/medium.json``, also
    ``maze/medium``) or path; a clear error for a file that does not describe a usable maze."""
    path = task_file(str(name_or_path).removeprefix("maze/"), MAZE_TASKS_DIR, MazeTaskError, "maze task")
    try:
        d = json.loads(path.read_text())
        maze = tuple(tuple(int(v) for v in row) for row in d["maze"])
        task = MazeTask(
            name=path.stem,
            maze=maze,
            goal_cell=_cell(d["goal_cell"], "goal_cell"),
            reset_cells=tuple(_cell(c, "reset_cells[i]") for c in d["reset_cells"]),
            reset_noise=float(d["reset_noise"]),
            eval_poses=tuple((int(p[0]), int(p[1]), float(p[2]), float(p[3])) for p in d["eval_poses"]),
            success_radius=float(d["success_radius"]),
            action_repeat=int(d["action_repeat"]),
            episode_length=int(d["episode_length"]),
            description=str(d.get("description", "")),
        )
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError) as e:
        raise MazeTaskError(f"{path}: {type(e).__name__}: {e}") from None
    _check(task, path)
    return task


def _check(task: MazeTask, path: Path) -> None:
    rows = task.maze
    if len(rows) < 3 or any(len(r) != len(rows[0]) for r in rows) or any(v not in (0, 1) for r in rows for v in r):
        raise MazeTaskError(f"{path}: maze must be a rectangle of 0 (free) and 1 (wall), at least 3 rows")
    if any(v != 1 for v in (*rows[0], *rows[-1], *(r[0] for r in rows), *(r[-1] for r in rows))):
        raise MazeTaskError(f"{path}: the maze's border must be wall (1)")
    free = set(task.free_cells())
    for what, cells in (("goal_cell", [task.goal_cell]), ("reset_cells", task.reset_cells)):
        for c in cells:
            if c not in free:
                raise MazeTaskError(f"{path}: {what} {list(c)} is not a free cell of the maze")
    for p in task.eval_poses:
        if (p[0], p[1]) not in free or max(abs(p[2]), abs(p[3])) >= 0.5:
            raise MazeTaskError(f"{path}: eval pose {list(p)} must be a free cell and an offset within +-0.5")
    unreachable = [c for c in task.reset_cells if c not in cell_distances(task, task.goal_cell)]
    if unreachable:
        raise MazeTaskError(f"{path}: the goal cannot be reached from reset cells {unreachable}")
    if not (0 < task.reset_noise < 0.5 and task.success_radius > 0 and task.action_repeat >= 1):
        raise MazeTaskError(f"{path}: need 0 < reset_noise < 0.5, success_radius > 0, action_repeat >= 1")
    if task.episode_length < 1 or not task.eval_poses:
        raise MazeTaskError(f"{path}: need episode_length >= 1 and at least one eval pose")


def cell_distances(task: MazeTask, goal: Cell) -> dict[Cell, int]:
    """Shortest-path length in cells (4-neighbour moves through free cells) from every cell that
    can reach ``goal``."""
    dist = {goal: 0}
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if n not in dist and task.maze[n[0]][n[1]] == 0:
                dist[n] = dist[(r, c)] + 1
                queue.append(n)
    return dist


class PointMazeSimEnv(gym.Env):
    """The maze task with this project's env contract: dict observation ``state``, actions in
    [-1, 1] (non-finite entries -> 0, then clipped), ``info["success"]``, fixed evaluation starts
    (``reset(options={"eval_pose": i})``), ``task``/``reward_config``/``end_on_success``/``timing``."""

    metadata = {"render_modes": [], "keeps_time": False}

    def __init__(
        self,
        task: str | MazeTask = "medium",
        reward: RewardConfig | None = None,
        obs_mode: str = "state",
        image_size: int | None = None,
        end_on_success: bool = True,
    ):
        if obs_mode != "state":
            raise ValueError(f"the point maze has state observations only, got obs_mode={obs_mode!r}")
        with contextlib.redirect_stderr(io.StringIO()):  # its import prints a notice about Adroit envs
            from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv

        self.task = load_maze_task(task) if isinstance(task, str) else task
        self.reward_config = reward or RewardConfig()
        self.end_on_success = bool(end_on_success)
        self.timing: dict[str, float] = {}
        maze_map = [list(r) for r in self.task.maze]
        self._maze = PointMazeEnv(maze_map=maze_map, reward_type="sparse", continuing_task=True, reset_target=False)
        # gymnasium-robotics 1.4 (envs/maze/maze_v4.py, Maze.make_maze) writes the maze's MJCF to
        # /tmp/ant_maze<time>.xml and never removes it; MuJoCo has loaded it by now
        with contextlib.suppress(AttributeError, OSError):
            os.unlink(self._maze.point_env.fullpath)
        self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._steps = 0
        self._state = np.zeros(4, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Options: ``eval_pose`` (index of a fixed evaluation start) or ``start_cell`` ([row,
        col], plus uniform noise; data collection). Otherwise a random reset cell plus noise."""
        super().reset(seed=seed)
        options = options or {}
        t, rng = self.task, self.np_random
        eval_index = options.get("eval_pose")
        if eval_index is not None:
            r, c, dx, dy = t.eval_poses[int(eval_index) % len(t.eval_poses)]
            start = t.cell_xy((r, c)) + np.array([dx, dy])
        else:
            cell = options.get("start_cell")
            if cell is None:
                cell = t.reset_cells[int(rng.integers(len(t.reset_cells)))]
            cell = _cell(tuple(int(v) for v in cell), "start_cell")
            if cell not in t.free_cells():
                raise ValueError(f"start_cell {list(cell)} is not a free cell of maze task {t.name!r}")
            start = t.cell_xy(cell) + rng.uniform(-t.reset_noise, t.reset_noise, 2)
        self._maze.reset(seed=int(rng.integers(2**31)), options={"goal_cell": np.array(t.goal_cell)})
        self._maze.goal = t.goal_xy.copy()
        self._maze.update_target_site_pos()
        point = self._maze.point_env
        point.set_state(np.asarray(start, np.float64), np.zeros(2))
        self._steps = 0
        obs = self._observe()
        return obs, {"success": self._success(), "eval_pose": eval_index}

    def step(self, action: np.ndarray):
        a = np.asarray(action, np.float64).reshape(ACTION_DIM)
        a = np.clip(np.where(np.isfinite(a), a, 0.0), -1.0, 1.0)
        success = False
        for _ in range(self.task.action_repeat):
            self._maze.step(a)
            success = self._success()
            if success:
                break
        self._steps += 1
        obs = self._observe()
        reward = float(self.reward_config.apply(float(success)))
        terminated = success and self.end_on_success
        truncated = not terminated and self._steps >= self.task.episode_length
        return obs, reward, terminated, truncated, {"success": success}

    def _observe(self) -> dict[str, np.ndarray]:
        d = self._maze.point_env.data
        self._state = np.concatenate([d.qpos[:2], d.qvel[:2]]).astype(np.float32)
        return {"state": self._state.copy()}

    def _success(self) -> bool:
        xy = self._maze.point_env.data.qpos[:2]
        return bool(np.linalg.norm(xy - self.task.goal_xy) <= self.task.success_radius)

    def close(self) -> None:
        self._maze.close()


class MazeNavigator:
    """A scripted driver for data collection: along a shortest path of cells to a goal cell,
    with a PD law towards the next cell's centre and Gaussian action noise. Each episode it picks
    random goal cells, a new one whenever it reaches the last (``reset()``, ``__call__``)."""

    def __init__(self, task: MazeTask, noise: float, seed: int = 0, kp: float = 10.0, kd: float = 1.0):
        self.task, self.noise, self.kp, self.kd = task, float(noise), kp, kd
        self.rng = np.random.default_rng(seed)
        self._free = task.free_cells()
        self._dist = {c: cell_distances(task, c) for c in self._free}
        self.goal: Cell = self._free[0]

    def reset(self) -> None:
        self.goal = self._free[int(self.rng.integers(len(self._free)))]

    def target(self, xy: np.ndarray) -> np.ndarray:
        """Where to head from ``xy``: the next cell towards the goal, or the goal's centre."""
        here = self.task.xy_cell(xy)
        dist = self._dist[self.goal]
        if here not in dist or here == self.goal:
            return self.task.cell_xy(self.goal)
        r, c = here
        nxt = min(((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)), key=lambda n: dist.get(n, 1 << 30))
        return self.task.cell_xy(nxt)

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        s = np.asarray(obs["state"], np.float64)
        xy, vel = s[:2], s[2:4]
        if np.linalg.norm(xy - self.task.cell_xy(self.goal)) < 0.5:
            self.reset()
        a = self.kp * (self.target(xy) - xy) - self.kd * vel + self.noise * self.rng.standard_normal(2)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


def collect_maze(
    out: str | Path,
    transitions: int = 20_000,
    task: str = "medium",
    noise: float = 0.5,
    gamma: float = 0.99,
    reward: RewardConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """At least ``transitions`` transitions (whole episodes) of the navigator driven to random
    goals from random free cells, saved in the dataset format; returns the summary."""
    if transitions < 1:
        raise ValueError("transitions must be positive")
    reward = reward or RewardConfig()
    env = PointMazeSimEnv(task, reward)
    t = env.task
    rng = np.random.default_rng(seed)
    starts = [c for c in t.free_cells() if c != t.goal_cell]
    obs, _ = env.reset(seed=seed)
    capacity = 2 * transitions + 2 * t.episode_length
    buf = ReplayBuffer(obs_spec_of(obs), ACTION_DIM, capacity, gamma, reward.negative)
    driver = MazeNavigator(t, noise, seed)
    lengths: list[int] = []
    successes = 0
    bar = tqdm(total=transitions, unit="step", desc="collecting", disable=not progress, mininterval=1.0)
    while buf.transitions_inserted < transitions:
        before = buf.transitions_inserted
        start = starts[int(rng.integers(len(starts)))]
        result = run_episode(
            env, driver, seed=int(rng.integers(2**31)), options={"start_cell": start}, record=buf.insert
        )
        lengths.append(result.length)
        successes += result.success
        bar.update(buf.transitions_inserted - before)
        bar.set_postfix(episodes=len(lengths), success=f"{successes / len(lengths):.2f}")
    bar.close()
    env.close()
    summary = {
        "task": f"maze/{t.name}",
        "episodes": len(lengths),
        "transitions": int(sum(lengths)),
        "success_rate": round(successes / len(lengths), 3),
        "mean_length": round(float(np.mean(lengths)), 1),
        "noise": noise,
        "seed": seed,
        "gamma": gamma,
        "reward": {"scale": reward.scale, "bias": reward.bias},
    }
    out = Path(out)
    buf.save(out, info={"source": "maze_navigator", "summary": summary})
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
