"""``Franka-v0``: the real Franka through the SERL-compatible robot server (or its simulated
stand-in), with the same observation/action contract as the simulation.

Each step: the action is cleaned (non-finite -> hold, clipped), turned into the next commanded
pose (measured pose + end-effector-frame delta, clipped to the task's safety box); errors are
cleared (every step by default, as SERL does: a Franka reflex otherwise makes the arm ignore
every later command) and the pose is sent with ``/pose``; the env then waits for the end of the
control period (deadline scheduling, so the actor does not pace it again) and reads the state
and the cameras.

A step that failed is never handed on as a normal transition: ``info["robot_error"]`` names why,
and the actor does not send it to the learner.
- A robot-server or camera failure ends the episode (truncated) at the last good observation.
  The arm keeps its last commanded pose, which is inside the box.
- An arm that did not follow the command (it moved less than a fifth of the commanded distance
  with no contact force to explain it: a reflex, or the controller stopped) is a *stall*; the
  env clears errors, reports ``info["reflex"]`` and, as the task file's ``on_reflex`` says, ends
  the episode or goes on.

Resets (``robot_env/reset_path.py``) lift the tool straight out of the hole, then move across and
down in small steps under a force-limited reset compliance; a joint reset, when the task asks for
one, happens only once the tool is out of the hole. Nothing here ever waits for a person.

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
from robot_env.gripper import GripperUnits
from robot_env.reset_path import lift_waypoints, transfer_waypoints
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.task_config import TaskConfig, in_box, load_task
from shared import defaults
from shared.config import RewardConfig
from shared.rate import RateKeeper

log = logging.getLogger("wsrl.franka")

RESET_CALL_RETRIES = 3  # tries after the first for each call of a reset (every one is safe to repeat)


class CameraSet(Protocol):
    def frames(self) -> dict[str, np.ndarray]:
        """The newest frame of each wrist camera, RGB uint8 (size, size, 3); never waits long."""

    def close(self) -> None: ...


def stalled(
    before7: np.ndarray, target7: np.ndarray, after: dict[str, Any], min_command: float, contact_force: float
) -> bool:
    """Whether the arm failed to follow a translation command with nothing in the way: it moved
    less than a fifth of the commanded distance along it, and the external force against the
    motion is below ``contact_force`` (pushing on the board is not a stall)."""
    command = np.asarray(target7[:3]) - np.asarray(before7[:3])
    dist = float(np.linalg.norm(command))
    if dist < min_command:
        return False
    u = command / dist
    moved = float(np.dot(np.asarray(after["pose"][:3]) - np.asarray(before7[:3]), u))
    # the external force is in the tool frame; against the motion means opposite to u
    force_base = geo.quat_to_mat(np.asarray(after["pose"][3:])) @ np.asarray(after["force"])
    resisting = -float(np.dot(force_base, u))
    return moved < 0.2 * dist and resisting < contact_force


class FrankaEnv(gym.Env):
    metadata = {"render_modes": [], "keeps_time": True}

    def __init__(
        self,
        task: str | TaskConfig = defaults.TASK,
        robot_url: str = "http://127.0.0.1:5000",
        obs_mode: str = "state",
        image_size: int = contract.DEFAULT_IMAGE_SIZE,
        reset_mode: str = "random",
        reward: RewardConfig | None = None,
        cameras: CameraSet | None = None,
        timeout: float = 0.5,
        gripper: str | None = None,
        end_on_success: bool = True,
    ) -> None:
        """``gripper``: the robot server's gripper units (``robot_env/gripper.py``); default the
        task file's ``real.gripper``."""
        self.task = load_task(task) if isinstance(task, str) else task
        real = self.task.real_section
        if reset_mode not in contract.RESET_MODES:
            raise ValueError(f"reset_mode must be one of {contract.RESET_MODES}, got {reset_mode!r}")
        self.client = RobotClient(
            robot_url,
            timeout=timeout,
            gripper=GripperUnits(gripper or real.gripper),
            joint_reset_timeout=real.joint_reset_timeout_s,
        )
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
        self.reflexes = 0  # in this process's life
        self._stalls = 0
        self._reset_commands: list[float] = []
        self.last_reset: dict[str, float] = {}  # duration, commands, largest command of the last reset

    # ------------------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Out of the hole, then to the reset pose (random, or one of the 20 fixed poses: the same
        options as the simulation), in small steps under the force-limited reset compliance; a
        joint reset every ``real.joint_reset_every`` episodes, once the tool is out of the hole.
        A server or camera failure here raises ``RobotServerError`` / ``CameraError`` (both
        ``RobotEnvError``): a caller may simply call ``reset`` again, which starts by lifting."""
        super().reset(seed=seed)
        offset, eval_index, self._next_eval = contract.choose_reset(
            self.task, options, self.reset_mode, self.np_random, self._next_eval
        )
        try:
            with self.client.patient(RESET_CALL_RETRIES):
                obs = self._move_to_reset(offset)
        except RobotServerError as e:
            raise RobotServerError(f"reset failed: {e}") from None
        except CameraError as e:
            raise CameraError(f"reset failed: {e}") from None
        self._steps = 0
        self._stalls = 0
        self._rate = RateKeeper(self.task.control_hz)
        self._rate.wait()  # the first control period starts now
        self._obs = obs
        return obs, {"success": False, "eval_pose": eval_index, "reset_offset": offset}

    def _move_to_reset(self, offset: np.ndarray) -> dict[str, np.ndarray]:
        real = self.task.real_section
        c = self.client
        t0 = time.perf_counter()
        self._reset_commands = []
        goal = contract.clip_to_box(contract.reset_pose6(self.task, offset), self.task.safety_box)
        c.clear_error()
        c.update_params(real.limited_reset_compliance)
        here = self._measured6()
        self._follow(lift_waypoints(self.task, here, goal), here)
        self._episodes += 1
        if real.joint_reset_every and self._episodes > 1 and (self._episodes - 1) % real.joint_reset_every == 0:
            log.info(
                "joint reset (every %d episodes), %.3f m above the target",
                real.joint_reset_every,
                self._measured6()[2] - self.task.target_pose[2],
            )
            c.joint_reset()
            c.clear_error()
            c.update_params(real.limited_reset_compliance)
        here = self._measured6()
        if not in_box(here, self.task.safety_box, tol=0.01):
            log.warning(
                "the arm is outside the safety box at %s (after a joint reset?); the first reset "
                "command is the box's nearest point, under the reset compliance's force limit",
                np.round(here[:3], 3).tolist(),
            )
        self._follow(transfer_waypoints(self.task, here, goal), here)
        if self.task.gripper_closed:
            c.close_gripper()  # the object stays held, whatever happened before
        c.update_params(real.compliance)
        self._raw = c.get_state()
        obs = self._observation()
        self.last_reset = {
            "seconds": time.perf_counter() - t0,
            "commands": len(self._reset_commands),
            "largest_command_m": max(self._reset_commands, default=0.0),
        }
        return obs

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        real = self.task.real_section
        a, usable = contract.sanitize_action(action)
        if not usable:
            log.warning("non-finite action %s: holding the pose", np.asarray(action).tolist())
        before = self._raw["pose"]
        target = contract.next_target(before, a, self.task)
        info: dict[str, Any] = {"invalid_action": not usable, "commanded_pose": target}
        self._steps += 1
        try:
            if real.clear_errors == "every_step":
                self.client.clear_error()
            self.client.command_pose(target)
            period = self._rate.wait()  # until the end of this control period
            self._raw = self.client.get_state()
            t0 = time.perf_counter()
            obs = self._observation()
            self.timing = {
                "observation_ms": 1e3 * (time.perf_counter() - t0),
                "target_period_s": self._rate.period,
                "overruns": float(self._rate.overruns),
                "client_retries": float(self.client.retried),
                **({"period_s": period} if period is not None else {}),
            }
        except (RobotServerError, CameraError) as e:
            log.error("ending the episode: %s", e)
            info.update(success=False, robot_error=str(e))
            return self._obs, float(self.reward_config.apply(0.0)), False, True, info
        if stalled(before, target, self._raw, real.stall_min_command, real.stall_contact_force):
            self._stalls += 1
        else:
            self._stalls = 0
        if self._stalls >= real.stall_steps:
            return self._reflex(obs, info)
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

    def _reflex(self, obs: dict[str, np.ndarray], info: dict[str, Any]):
        """The arm stopped following: clear the error, report it, end or go on as the task says."""
        real = self.task.real_section
        self.reflexes += 1
        self._stalls = 0
        why = f"the arm did not follow the last {real.stall_steps} command(s) (a reflex?); errors cleared"
        log.error("%s; %s", why, "ending the episode" if real.on_reflex == "end" else "going on")
        info.update(success=False, robot_error=why, reflex=True)
        try:
            self.client.clear_error()
        except RobotServerError as e:
            info["robot_error"] = f"{why}, but clearing failed: {e}"
            return self._obs, float(self.reward_config.apply(0.0)), False, True, info
        self._obs = obs
        truncated = real.on_reflex == "end" or self._steps >= self.task.episode_length
        return obs, float(self.reward_config.apply(0.0)), False, truncated, info

    def _measured6(self) -> np.ndarray:
        return geo.pose7_to_pose6(self.client.get_state()["pose"])

    def _follow(self, waypoints: list[np.ndarray], here6: np.ndarray) -> None:
        """Send reset waypoints one control period apart, then let the arm settle."""
        if not waypoints:
            return
        prev = here6
        for p in waypoints:
            self._reset_commands.append(float(np.linalg.norm(p[:3] - prev[:3])))
            self.client.command_pose(geo.pose6_to_pose7(p))
            prev = p
            time.sleep(1.0 / self.task.control_hz)
        time.sleep(self.task.real_section.reset_settle_s)

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
