"""``Franka-v0``: the real Franka through the SERL-compatible robot server (or its simulated
stand-in), with the same observation/action contract as the simulation.

Each step: the action is cleaned (non-finite -> hold, clipped), turned into the next commanded
pose (an end-effector-frame delta from the last commanded pose while the arm is within the task's
``hold_window`` of it, else from the measured pose, so that a zero action holds still under a
payload and the controller's lag; clipped to the task's safety box); errors are cleared (every
step by default, as SERL does: a Franka reflex otherwise makes the arm ignore every later
command) and the pose is sent with ``/pose``; the env then waits for the end of the control
period (deadline scheduling, so the actor does not pace it again) and reads the state and the
cameras.

A step that failed is never handed on as a normal transition: ``info["robot_error"]`` names why,
and the actor does not send it to the learner.
- A robot-server or camera failure ends the episode (truncated) at the last good observation.
  The arm keeps its last commanded pose, which is inside the box.
- An arm that stood still for ``stall_steps`` steps in a row while commanded away with nothing
  touching it (``stalled``: a reflex, or the controller stopped) has *stalled*; the env clears errors, reports
  ``info["reflex"]`` and, as the task file's ``on_reflex`` says, ends the episode or goes on.
  Success is judged first: an inserted peg is never a stall. The force is libfranka's
  ``K_F_ext_hat_K``: what the robot applies to the environment is positive (only its size matters
  here; the sign matters to the policy, which reads it).

Resets (``robot_env/reset_path.py``) lift the tool straight out of the hole, then move across and
down in small steps under a force-limited reset compliance, clearing errors before every command
(a reflex loses commands until then); a joint reset, when the task asks for one, happens only once
the tool is out of the hole, and the way back into the box is interpolated like any other leg.
Each leg must arrive: a tool still in the hole after the lift is ``ResetJammed``, one that missed
its goal is ``ResetMissedGoal`` (both ``RobotEnvError``), never an episode started in the hole.
A Robotiq that does not close is activated once (``/activate_gripper``) and closed again.
Nothing here ever waits for a person.

Success without a reward classifier is the TCP within ``real.success_tolerance`` of the
task's target pose (deeper along the insertion axis also counts). With the reward classifier
(``robot_env/classifier_reward.py``; make the env with ``end_on_success=False``) the
classifier decides, and this check is recorded beside it as ``info["env_success"]``.

Over 400 lines on purpose: one gymnasium env whose step, reset legs and fault handling share the
commanded pose and the robot's last state; geometry, reset paths, the gripper, cameras and the
server client are already modules of their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from robot_env import contract
from robot_env import geometry as geo
from robot_env.cameras import CameraError
from robot_env.contract import INFO_REFLEX, INFO_ROBOT_ERROR, INFO_SUCCESS, RobotEnvError
from robot_env.gripper import GripperUnits
from robot_env.reset_path import approach_waypoints, interpolate, lift_waypoints, transfer_waypoints
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.task_config import TaskConfig, in_box, load_task
from shared import defaults
from shared.config import RewardConfig
from shared.rate import RateKeeper

log = logging.getLogger("wsrl.franka")

RESET_CALL_RETRIES = 3  # tries after the first for each call of a reset (every one is safe to repeat)
LEG_RETRIES = 2  # re-sends of a reset leg's goal, errors cleared, before the leg counts as failed
GRIPPER_CLOSED = 0.9  # an opening above this after a close did not close
STILL_FRACTION, STILL_SPEED = 0.1, 0.01  # a stalled arm moved under this share of the command, ends under this m/s
SETTLED_M, SETTLED_SPEED = 0.002, 0.01  # a reset leg is done early once this close (m) and this slow (m/s)


class ResetError(RobotEnvError):
    """A reset did not bring the arm where it must be; the message says where it is."""


class ResetJammed(ResetError):
    """The tool is still in the hole after the lift-out: the peg is stuck (free it by hand)."""


class ResetMissedGoal(ResetError):
    """The arm did not reach a reset leg's goal (something in the way, or the controller stopped)."""


class CameraSet(Protocol):
    def frames(self) -> dict[str, np.ndarray]:
        """The newest frame of each wrist camera, RGB uint8 (size, size, 3); never waits long."""

    def close(self) -> None: ...


def stalled(
    before7: np.ndarray, target7: np.ndarray, after: dict[str, Any], min_command: float, contact_force: float
) -> bool:
    """Whether the arm stood still while commanded away with nothing touching it: over the step it
    moved less than a tenth of the commanded distance (in any direction), it ends the step at
    under 1 cm/s, and the external force is under ``contact_force``. A reflex stops the arm dead
    and its hold relaxes any push; the controller's 0.2 s target filter and 30 Hz state make a
    following arm slow in a step (2 % of the command along it when it turns), never still, and
    in contact a lagging target can hold the arm still against a board or a wall (pressed
    against the command's direction): contact is never a stall."""
    command = np.asarray(target7[:3]) - np.asarray(before7[:3])
    dist = float(np.linalg.norm(command))
    if dist < min_command:
        return False
    moved = float(np.linalg.norm(np.asarray(after["pose"][:3]) - np.asarray(before7[:3])))
    speed = float(np.linalg.norm(np.asarray(after["vel"][:3])))
    touching = float(np.linalg.norm(after["force"])) >= contact_force
    return moved < STILL_FRACTION * dist and speed < STILL_SPEED and not touching


def hold_base(measured7: np.ndarray, commanded7: np.ndarray | None, window: tuple[float, float]) -> np.ndarray:
    """The pose an action's delta starts from: the last commanded pose while the arm is within
    ``window`` (m per axis, rad) of it, else the measured pose moved at most ``window`` towards it.
    A zero action then re-commands what was commanded: a payload's sag or the controller's lag does
    not walk the target away (measured + 0 would), and a target the arm cannot reach (pressing
    on the board) never runs more than the window ahead of it."""
    if commanded7 is None:
        return np.asarray(measured7, np.float64)
    pos_m, rot_m = geo.pose7_to_mat(measured7)
    pos_c, rot_c = geo.pose7_to_mat(commanded7)
    pos = pos_m + np.clip(pos_c - pos_m, -window[0], window[0])
    rel = rot_m.T @ rot_c  # the commanded orientation seen from the measured one
    angle = float(np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0)))
    rot = rot_c if angle <= window[1] else rot_m
    return geo.mat_to_pose7(pos, rot)


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
        self._commanded: np.ndarray | None = None  # the last pose sent in this episode
        self.gripper_activations = 0
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
        self.timing = {}
        self._obs = obs
        return obs, {"success": False, "eval_pose": eval_index, "reset_offset": offset}

    def _move_to_reset(self, offset: np.ndarray) -> dict[str, np.ndarray]:
        real = self.task.real_section
        c = self.client
        t0 = time.perf_counter()
        self._reset_commands = []
        self._commanded = None
        goal = contract.clip_to_box(contract.reset_pose6(self.task, offset), self.task.safety_box)
        c.clear_error()
        c.update_params(real.limited_reset_compliance)
        if self.task.gripper_closed:
            c.close_gripper()  # the object stays held, whatever happened before; checked at the end
        self._follow(lambda here: lift_waypoints(self.task, here, goal), "lift")
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
                "the arm is outside the safety box at %s (after a joint reset?); moving in along the straight "
                "line to the box's nearest point, in reset-sized steps",
                np.round(here[:3], 3).tolist(),
            )
            self._follow(lambda here: approach_waypoints(self.task, here), "approach")
        self._follow(lambda here: transfer_waypoints(self.task, here, goal), "transfer")
        if self.task.gripper_closed:
            self._check_gripper_closed()
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
        target = contract.next_target(hold_base(before, self._commanded, real.hold_window), a, self.task)
        info: dict[str, Any] = {"invalid_action": not usable, "commanded_pose": target}
        self._steps += 1
        self.timing = {}  # a step that fails has no timings (not the last good step's again)
        try:
            if real.clear_errors == "every_step":
                self.client.clear_error()
            self.client.command_pose(target)
            self._commanded = target
            period = self._rate.wait()  # until the end of this control period
            self._raw = self.client.get_state()
            t0 = time.perf_counter()
            obs = self._observation()
            self.timing = {
                "observation_ms": 1e3 * (time.perf_counter() - t0),
                "target_period_s": self._rate.period,
                "overruns": float(self._rate.overruns),  # this episode's: reset starts a new schedule
                "client_retries": float(self.client.retried),
                **({"period_s": period} if period is not None else {}),
            }
        except (RobotServerError, CameraError) as e:
            log.error("ending the episode: %s", e)
            info.update({INFO_SUCCESS: False, INFO_ROBOT_ERROR: str(e)})
            return self._obs, float(self.reward_config.apply(0.0)), False, True, info
        success = self._success()  # before stalls: an inserted peg that stops moving has not stalled
        if not success and stalled(before, target, self._raw, real.stall_min_command, real.stall_contact_force):
            self._stalls += 1
        else:
            self._stalls = 0
        if self._stalls >= real.stall_steps:
            return self._reflex(obs, info)
        info[INFO_SUCCESS] = success
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
        info.update({INFO_SUCCESS: False, INFO_ROBOT_ERROR: why, INFO_REFLEX: True})
        self._commanded = None  # lost: the controller starts again at the measured pose
        try:
            self.client.clear_error()
        except RobotServerError as e:
            info[INFO_ROBOT_ERROR] = f"{why}, but clearing failed: {e}"
            return self._obs, float(self.reward_config.apply(0.0)), False, True, info
        self._obs = obs
        truncated = real.on_reflex == "end" or self._steps >= self.task.episode_length
        return obs, float(self.reward_config.apply(0.0)), False, truncated, info

    def _measured6(self) -> np.ndarray:
        return geo.pose7_to_pose6(self.client.get_state()["pose"])

    def _follow(self, leg_from: Callable[[np.ndarray], list[np.ndarray]], leg: str) -> None:
        """Send a reset leg's waypoints (``leg_from(measured pose)``, planned from where the arm is
        just before the first command) one control period apart, clearing errors before each (a
        reflex loses every command until then), let the arm settle, and check it arrived; a leg
        that did not is sent again from where the arm is, then raises."""
        real = self.task.real_section
        prev = self._measured6()
        waypoints = leg_from(prev)
        if not waypoints:
            return
        goal = waypoints[-1]
        for attempt in range(LEG_RETRIES + 1):
            if attempt:
                prev = self._measured6()
                waypoints = interpolate(prev, goal, real.reset_max_step, real.reset_max_rot_step)
            for p in waypoints:
                self._reset_commands.append(float(np.linalg.norm(p[:3] - prev[:3])))
                self.client.clear_error()
                pose7 = geo.pose6_to_pose7(p)
                self.client.command_pose(pose7)
                self._commanded = pose7
                prev = p
                time.sleep(1.0 / self.task.control_hz)
            here, pos_err, rot_err, settled = self._settle(goal)
            if settled:
                return
            log.warning(
                "reset %s: the arm is %.1f mm / %.3f rad from the leg's goal (a reflex or something in the way); "
                "clearing errors and sending the rest again (%d of %d)",
                leg,
                1e3 * pos_err,
                rot_err,
                attempt + 1,
                LEG_RETRIES,
            )
        out_of_hole = self.task.target_pose[2] + real.reset_clearance
        where = f"the tool is at {np.round(here[:3], 4).tolist()} m, {1e3 * pos_err:.1f} mm from the {leg} goal"
        if leg == "lift" and here[2] < out_of_hole - real.reset_tolerance[0]:
            raise ResetJammed(
                f"the peg is stuck in the hole: after the lift-out {where}, {1e3 * (out_of_hole - here[2]):.0f} mm "
                "below the out-of-hole height; free it by hand (the next reset lifts again)"
            )
        raise ResetMissedGoal(f"reset {leg} did not arrive: {where}; check for an obstacle or a stopped controller")

    def _settle(self, goal6: np.ndarray) -> tuple[np.ndarray, float, float, bool]:
        """Wait (at most ``reset_settle_s``) until the arm is within the reset tolerance of
        ``goal6`` and nearly still: the controller's target filter (0.2 s) and the arm lag the
        last command. Returns the pose, its errors and whether it settled."""
        real = self.task.real_section
        deadline = time.monotonic() + real.reset_settle_s
        while True:
            state = self.client.get_state()
            here = geo.pose7_to_pose6(state["pose"])
            pos_err = float(np.linalg.norm(here[:3] - goal6[:3]))
            rot_err = float(np.max(np.abs(geo.wrap_angle(here[3:] - goal6[3:]))))
            near = pos_err <= SETTLED_M and rot_err <= real.reset_tolerance[1]
            if near and float(np.linalg.norm(state["vel"][:3])) < SETTLED_SPEED:
                return here, pos_err, rot_err, True
            if time.monotonic() >= deadline:
                ok = pos_err <= real.reset_tolerance[0] and rot_err <= real.reset_tolerance[1]
                return here, pos_err, rot_err, ok
            time.sleep(0.5 / self.task.control_hz)

    def _check_gripper_closed(self) -> None:
        """The reset closed the gripper; if it reads open, activate it once (a Robotiq ignores every
        command until ``/activate_gripper`` after each server start) and close it again."""
        real = self.task.real_section
        c = self.client
        if c.get_state()["gripper_pos"] <= GRIPPER_CLOSED:
            return
        log.warning(
            "the gripper reads open after /close_gripper: activating it (a Robotiq needs /activate_gripper once "
            "per robot-server start); make sure the object is in the hand"
        )
        c.activate_gripper()
        self.gripper_activations += 1
        time.sleep(real.gripper_activation_s)
        c.close_gripper()
        time.sleep(real.gripper_settle_s)
        opening = c.get_state()["gripper_pos"]
        if opening > GRIPPER_CLOSED:
            raise RobotServerError(
                f"the gripper does not close even after /activate_gripper (opening {opening:.2f}): is "
                f"real.gripper ({c.gripper.flavour}) the server's flavour, and is the gripper powered?"
            )

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
