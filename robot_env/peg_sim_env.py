"""``PegInsertionSim-v0``: the simulated Franka peg insertion with the real robot's spaces.

Each step: the action (6-D, [-1, 1]) is cleaned (non-finite -> hold, clipped), turned into the
next commanded pose (measured pose + end-effector-frame delta, clipped to the safety box),
sent to the impedance controller, and one control period (0.1 s) of simulated time passes.
Success is ground truth (the peg tip is ``success_depth`` down the hole); it ends the episode
unless ``end_on_success=False`` (label recording, or a reward classifier deciding instead).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gymnasium as gym
import numpy as np

from robot_env import contract
from robot_env import geometry as geo
from robot_env.sim.robot import SimRobot
from robot_env.task_config import TaskConfig, load_task
from shared.config import RewardConfig

log = logging.getLogger("wsrl.sim")


class PegInsertionSimEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        obs_mode: str = "state",
        image_size: int = contract.DEFAULT_IMAGE_SIZE,
        reset_mode: str = "random",
        task: str | TaskConfig = "peg_insertion",
        reward: RewardConfig | None = None,
        render_mode: str | None = None,
        render_size: int = 256,
        end_on_success: bool = True,
    ):
        if reset_mode not in contract.RESET_MODES:
            raise ValueError(f"reset_mode must be one of {contract.RESET_MODES}, got {reset_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        self.task = load_task(task) if isinstance(task, str) else task
        self.obs_mode = obs_mode
        self.image_size = int(image_size)
        self.reset_mode = reset_mode
        self.reward_config = reward or RewardConfig()
        self.render_mode = render_mode
        self.render_size = int(render_size)
        # False: success does not end the episode (a reward classifier or a label recorder decides)
        self.end_on_success = bool(end_on_success)
        self.observation_space = contract.observation_space(obs_mode, self.image_size)
        self.action_space = contract.action_space()
        self.robot = SimRobot(self.task)
        self._raw: dict[str, Any] = {}
        self.timing: dict[str, float] = {}  # the last step's, in ms
        self._steps = 0
        self._next_eval = 0

    # ----- gym API -----
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Options: ``eval_pose`` (index of a fixed evaluation pose) or ``pose_offset``
        (``(dx, dy, dyaw)`` from the reset pose). Without them, ``reset_mode="random"`` draws an
        offset uniformly and ``"eval"`` cycles through the fixed poses."""
        super().reset(seed=seed)
        offset, eval_index, self._next_eval = contract.choose_reset(
            self.task, options, self.reset_mode, self.np_random, self._next_eval
        )
        self.robot.teleport(geo.pose6_to_pose7(contract.reset_pose6(self.task, offset)))
        self._steps = 0
        self._raw = self.robot.get_state()
        info = {"success": False, "eval_pose": eval_index, "reset_offset": offset}
        return self._observation(), info

    def step(self, action):
        a, usable = contract.sanitize_action(action)
        if not usable:
            log.warning("non-finite action %s: holding the pose", np.asarray(action).tolist())
        target = contract.next_target(self._raw["pose"], a, self.task)
        self.robot.command_pose(target)
        self.robot.advance()
        self._steps += 1
        self._raw = self.robot.get_state()
        success = self.robot.peg_in_hole()
        reward = float(self.reward_config.apply(float(success)))
        terminated = success and self.end_on_success
        truncated = self._steps >= self.task.episode_length and not terminated
        t0 = time.perf_counter()
        obs = self._observation()
        info = {
            "success": success,
            "insertion_depth": self.robot.insertion_depth(),
            "invalid_action": not usable,
            "commanded_pose": target,
        }
        # For the actor's latency breakdown; not in ``info``, which must stay deterministic.
        self.timing = {"observation_ms": 1e3 * (time.perf_counter() - t0)}
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.robot.render(("scene",), self.render_size)["scene"]

    def close(self) -> None:
        self.robot.close()

    # ----- helpers -----
    @property
    def raw_state(self) -> dict[str, Any]:
        """The latest raw robot state (pose in the base frame, as the robot server reports)."""
        return self._raw

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"state": contract.proprio(self._raw, self.task)}
        if self.obs_mode == "images":
            obs.update(self.robot.render(contract.IMAGE_KEYS, self.image_size))
        return obs
