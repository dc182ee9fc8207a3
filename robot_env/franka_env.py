"""``Franka-v0``: the real Franka through the SERL-compatible robot server (or its simulated
stand-in), with the same observation/action contract as the simulation.

Each step: the action is cleaned (non-finite -> hold, clipped), turned into the next commanded
pose (measured pose + end-effector-frame delta, clipped to the task's safety box), sent with
``/pose``; the env then waits for the end of the control period (deadline scheduling, so the
actor runs it with ``--hz 0``) and reads the state and the cameras. A robot-server failure or a
camera failure ends the episode (truncated) with the reason in ``info["robot_error"]``; the arm
keeps its last commanded pose, which is inside the box. Nothing here ever waits for a person.

Success without a reward classifier is the TCP within ``real.success_tolerance`` of the
task's target pose (deeper along the insertion axis also counts). With the reward classifier
(``robot_env/classifier_reward.py``; make the env with ``end_on_success=False``) the
classifier decides, and this check is recorded beside it as ``info["env_success"]``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from robot_env import contract
from robot_env import geometry as geo
from robot_env.cameras import CameraError
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.task_config import TaskConfig, load_task
from shared.config import RewardConfig
from shared.rate import RateKeeper

log = logging.getLogger("wsrl.franka")


class CameraSet(Protocol):
    def frames(self) -> dict[str, np.ndarray]:
        """The newest frame of each wrist camera, RGB uint8 (size, size, 3); never waits long."""

    def close(self) -> None: ...


class FrankaEnv(gym.Env):
    metadata = {"render_modes": [], "keeps_time": True}

    def __init__(
        self,
        task: str | TaskConfig = "peg_insertion",
        robot_url: str = "http://127.0.0.1:5000",
        obs_mode: str = "state",
        image_size: int = contract.DEFAULT_IMAGE_SIZE,
        reset_mode: str = "random",
        reward: RewardConfig | None = None,
        cameras: CameraSet | None = None,
        timeout: float = 0.5,
        gripper_open_raw: float = 1.0,
        end_on_success: bool = True,
    ) -> None:
        self.task = load_task(task) if isinstance(task, str) else task
        if self.task.real is None:
            raise ValueError(f"task {self.task.name} has no 'real' section (cameras, compliance, reset settings)")
        if reset_mode not in contract.RESET_MODES:
            raise ValueError(f"reset_mode must be one of {contract.RESET_MODES}, got {reset_mode!r}")
        self.client = RobotClient(robot_url, timeout=timeout, gripper_open_raw=gripper_open_raw)
        if obs_mode == "images" and cameras is None:
            raise ValueError(
                "obs_mode='images' needs cameras (robot_env.cameras.realsense_rig, or server_rig "
                "for the simulated robot server)"
            )
        self.obs_mode, self.image_size, self.reset_mode = obs_mode, int(image_size), reset_mode
        self.cameras = cameras
        # False: the pose check does not end the episode (a reward classifier or a label recorder decides)
        self.end_on_success = bool(end_on_success)
        self.reward_config = reward or RewardConfig()
        self.observation_space = contract.observation_space(obs_mode, self.image_size)
        self.action_space = contract.action_space()
        self._raw: dict[str, Any] = {}
        self._obs: dict[str, np.ndarray] | None = None
        self._steps = 0
        self._episodes = 0
        self._next_eval = 0
        self._rate = RateKeeper(self.task.control_hz)
        self.timing: dict[str, float] = {}

    # ------------------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Lift, move to the reset pose (random, or one of the 20 fixed poses: the same options
        as the simulation), with the precise-reset compliance; a joint reset every
        ``real.joint_reset_every`` episodes. A server failure here raises ``RobotServerError``."""
        super().reset(seed=seed)
        offset, eval_index, self._next_eval = contract.choose_reset(
            self.task, options, self.reset_mode, self.np_random, self._next_eval
        )
        real = self.task.real_section
        self._episodes += 1
        c = self.client
        try:
            c.clear_error()
            if real.joint_reset_every and self._episodes > 1 and (self._episodes - 1) % real.joint_reset_every == 0:
                log.info("joint reset (every %d episodes)", real.joint_reset_every)
                c.joint_reset()
            if self.task.gripper_closed:
                c.close_gripper()  # the peg stays held, whatever happened before
            c.update_params(real.reset_compliance)
            here = geo.pose7_to_pose6(c.get_state()["pose"])
            goal = contract.clip_to_box(contract.reset_pose6(self.task, offset), self.task.safety_box)
            # Straight up first (out of the hole: at least to the reset height), then across, then down.
            up = np.array([0, 0, max(real.reset_lift, goal[2] - here[2]), 0, 0, 0])
            lifted = contract.clip_to_box(here + up, self.task.safety_box)
            for waypoint in (lifted, np.concatenate([goal[:2], lifted[2:3], goal[3:]]), goal):
                c.command_pose(geo.pose6_to_pose7(waypoint))
                time.sleep(real.reset_settle_s)
            c.update_params(real.compliance)
            self._raw = c.get_state()
            obs = self._observation()
        except (RobotServerError, CameraError) as e:
            raise RobotServerError(f"reset failed: {e}") from None
        self._steps = 0
        self._rate = RateKeeper(self.task.control_hz)
        self._rate.wait()  # the first control period starts now
        self._obs = obs
        return obs, {"success": False, "eval_pose": eval_index, "reset_offset": offset}

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        a, usable = contract.sanitize_action(action)
        if not usable:
            log.warning("non-finite action %s: holding the pose", np.asarray(action).tolist())
        target = contract.next_target(self._raw["pose"], a, self.task)
        info: dict[str, Any] = {"invalid_action": not usable, "commanded_pose": target}
        self._steps += 1
        try:
            self.client.command_pose(target)
            period = self._rate.wait()  # until the end of this control period
            self._raw = self.client.get_state()
            t0 = time.perf_counter()
            obs = self._observation()
            self.timing = {
                "observation_ms": 1e3 * (time.perf_counter() - t0),
                "target_period_s": self._rate.period,
                **({"period_s": period} if period is not None else {}),
            }
        except (RobotServerError, CameraError) as e:
            log.error("ending the episode: %s", e)
            info.update(success=False, robot_error=str(e))
            return self._obs, float(self.reward_config.apply(0.0)), False, True, info
        success = self._success()
        info["success"] = success
        self._obs = obs
        terminated = success and self.end_on_success
        truncated = self._steps >= self.task.episode_length and not terminated
        return obs, float(self.reward_config.apply(float(success))), terminated, truncated, info

    def close(self) -> None:
        if self.cameras is not None:
            self.cameras.close()

    # ----------------------------------------------------------------------------- helpers

    @property
    def raw_state(self) -> dict[str, Any]:
        return self._raw

    def _success(self) -> bool:
        """The TCP in the target frame (the contract's ``tcp_pose``): x, y and the angles within
        tolerance, and z no more than the tolerance short of the target (its z axis points into
        the hole, so going deeper still counts)."""
        pose = contract.proprio(self._raw, self.task)[contract.state_slices()["tcp_pose"]]
        tol_pos, tol_rot = self.task.real_section.success_tolerance
        return bool(np.all(np.abs(pose[:2]) <= tol_pos) and pose[2] >= -tol_pos and np.all(np.abs(pose[3:]) <= tol_rot))

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"state": contract.proprio(self._raw, self.task)}
        if self.obs_mode == "images" and self.cameras is not None:  # the constructor requires them
            frames = self.cameras.frames()
            for k in contract.IMAGE_KEYS:
                f = frames.get(k)
                if f is None or f.shape != (self.image_size, self.image_size, 3) or f.dtype != np.uint8:
                    raise CameraError(
                        f"camera {k}: expected uint8 ({self.image_size}, {self.image_size}, 3), "
                        f"got {None if f is None else (f.dtype, f.shape)}"
                    )
                obs[k] = f
        return obs
