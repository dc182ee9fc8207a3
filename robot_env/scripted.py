"""Scripted peg-insertion controllers of tunable skill, for offline datasets and baselines.

The routine is approach - align - insert, with an optional search: hover above where it
believes the hole is, turn the peg to the believed hole yaw, descend, and when the descent
stalls on the board, lift a little and try the next point of a square spiral around the
belief. Skill sets how wrong the belief is (drawn once per episode, like a mis-calibrated
hole position), how noisy each action is, and whether the controller searches at all.

It reads only the observation's proprio vector (pose relative to the target frame), so the
same controller can drive the real robot for data collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from robot_env import contract
from robot_env import geometry as geo
from robot_env.task_config import TaskConfig

_SLICES = contract.state_slices()
ALIGNED_XY = 0.0025  # metres from the believed hole centre: close enough to start descending
ALIGNED_YAW = 0.04  # radians


@dataclass(frozen=True)
class Skill:
    belief_xy_std: float  # metres: per-episode error of the believed hole position
    belief_yaw_std: float  # radians: per-episode error of the believed hole yaw
    action_noise: float  # std of Gaussian noise on each action (in action units)
    search: bool  # spiral search when the descent stalls
    search_step: float = 0.0015  # metres between spiral points
    hover: float = 0.006  # peg-tip clearance above the board while aligning
    gain: float = 0.8  # fraction of the remaining error corrected per step

    @classmethod
    def level(cls, s: float) -> Skill:
        """A skill from 0 (clueless: far-off belief, very noisy, no search) to 1 (expert)."""
        s = float(np.clip(s, 0.0, 1.0))
        return cls(
            belief_xy_std=0.012 * (1 - s) ** 1.5 + 0.0004,
            belief_yaw_std=0.15 * (1 - s) ** 1.5 + 0.005,
            action_noise=0.02 + 0.3 * (1 - s),
            search=s >= 0.4,
        )


class ScriptedInserter:
    """A stateful policy: ``reset()`` at the start of each episode (``run_episode`` does it),
    then call it on observations. Its randomness comes from its own seeded generator."""

    def __init__(self, task: TaskConfig, skill: Skill, seed: int = 0):
        if task.sim is None:
            raise ValueError("the scripted controller needs the task's sim geometry (hole depth)")
        self.task = task
        self.skill = skill
        self._depth = task.sim_section.target_depth  # peg tip touches the board at z = -target_depth
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Start an episode: draw this episode's belief of where the hole is."""
        sk = self.skill
        self._belief_xy = self._rng.normal(0.0, sk.belief_xy_std, 2)
        self._belief_yaw = float(self._rng.normal(0.0, sk.belief_yaw_std))
        self._spiral = 0
        self._phase = "align"
        self._stall = 0
        self._last_z = None

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.act(obs["state"])

    def act(self, state: np.ndarray) -> np.ndarray:
        pose = np.asarray(state[_SLICES["tcp_pose"]], np.float64)
        pos, rot = pose[:3], geo.euler_to_mat(pose[3:])  # in the target frame, +z goes down the hole
        goal_xy = self._belief_xy + self._spiral_offset()
        goal_rot = geo.euler_to_mat([0.0, 0.0, self._belief_yaw])
        xy_err = goal_xy - pos[:2]
        yaw_err = geo.wrap_angle(self._belief_yaw - pose[5])
        hover_z = -(self._depth + self.skill.hover)
        if self._phase == "align":
            dz = hover_z - pos[2]
            if np.linalg.norm(xy_err) < ALIGNED_XY and abs(yaw_err) < ALIGNED_YAW and abs(dz) < 0.004:
                self._phase, self._stall, self._last_z = "insert", 0, pos[2]
        if self._phase == "insert":
            dz = 0.02
            if self._last_z is not None and pos[2] - self._last_z < 0.001 and pos[2] < -self._depth + 0.004:
                self._stall += 1  # not going down and not in the hole: resting on the board
            else:
                self._stall = 0
            self._last_z = pos[2]
            if self._stall >= 2 and self.skill.search:
                self._spiral += 1
                self._phase = "align"
                dz = hover_z - pos[2]
        g = self.skill.gain
        d_target = np.array([xy_err[0] * g, xy_err[1] * g, dz if self._phase == "insert" else dz * g])
        d_ee = rot.T @ d_target
        rot_ee = geo.mat_to_euler(rot.T @ goal_rot) * g
        trans_scale, rot_scale = self.task.action_scale
        action = np.concatenate([d_ee / trans_scale, rot_ee / rot_scale])
        action += self._rng.normal(0.0, self.skill.action_noise, 6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _spiral_offset(self) -> np.ndarray:
        """The k-th point of a square spiral (0, then the 8 neighbours, then the next ring...)."""
        k = self._spiral
        if k == 0:
            return np.zeros(2)
        ring = int(np.ceil((np.sqrt(k + 1) - 1) / 2))
        side = 2 * ring
        start = (2 * ring - 1) ** 2
        i = k - start
        if i < side:
            p = (ring, -ring + 1 + i)
        elif i < 2 * side:
            p = (ring - 1 - (i - side), ring)
        elif i < 3 * side:
            p = (-ring, ring - 1 - (i - 2 * side))
        else:
            p = (-ring + 1 + (i - 3 * side), -ring)
        return np.asarray(p, np.float64) * self.skill.search_step


TAKEOVER_DISTANCE_M = 0.02  # the scripted person's default reach before it takes over


class ScriptedHuman:
    """The simulation's person: takes over with the scripted inserter while the peg tip is more
    than ``distance`` metres (horizontally) from the hole, and stays on until it is within
    ``distance / 2`` (so control does not flicker at the edge)."""

    def __init__(
        self, task: TaskConfig, distance: float = TAKEOVER_DISTANCE_M, skill: float = 1.0, seed: int = 0
    ) -> None:
        if distance <= 0:
            raise ValueError("distance must be positive")
        self.distance = float(distance)
        self._inserter = ScriptedInserter(task, Skill.level(skill), seed)
        self._slice = contract.state_slices()["tcp_pose"]
        self._on = False

    def command(self, obs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        xy = np.asarray(obs["state"][self._slice][:2], np.float64)  # target frame: the hole at 0
        off = float(np.linalg.norm(xy))
        self._on = off > (self.distance / 2 if self._on else self.distance)
        action = self._inserter(obs)  # every step, so its state follows the episode
        return action if self._on else None

    def reset(self) -> None:
        self._inserter.reset()
        self._on = False

    def close(self) -> None:
        pass
