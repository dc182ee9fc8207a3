"""The observation/action contract shared by the real Franka env and the simulation.

One place for: the proprio key order and sizes, the image keys, how a raw robot state becomes
the 19-D proprio vector, how an action becomes the next commanded pose, and the safety box.

Raw robot state (what the robot server's ``/getstate`` gives, gripper normalised 1 = open):
``pose`` (xyz + quaternion xyzw, base frame), ``vel`` (linear + angular, base frame),
``force``/``torque`` (the external wrench in the TCP frame with libfranka's sign for
``K_F_ext_hat_K``: what the robot applies to the environment is positive), ``gripper_pos``.

Observation ``state`` (float32, 19): the keys below flattened in sorted order. ``tcp_pose`` and
``tcp_vel`` are expressed in the task's target frame (the TCP pose at full insertion), so the
vector says where the tool is relative to the goal, and the Euler angles sit near zero instead
of wrapping at +-pi (a downward tool has roll pi in the base frame).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from robot_env import geometry as geo
from robot_env.task_config import SafetyBox, TaskConfig
from shared.config import RewardConfig
from shared.data.dataset import Transition, step_transition

STATE_KEYS: tuple[tuple[str, int], ...] = (
    ("gripper_pose", 1),
    ("tcp_force", 3),
    ("tcp_pose", 6),
    ("tcp_torque", 3),
    ("tcp_vel", 6),
)
STATE_DIM = sum(n for _, n in STATE_KEYS)
IMAGE_KEYS = ("wrist_1", "wrist_2")
ACTION_DIM = 6
OBS_MODES = ("state", "images")
RESET_MODES = ("random", "eval")  # seeded random offsets, or the fixed evaluation poses in turn
DEFAULT_IMAGE_SIZE = 128
# Bumped when what an observation means changes, so cached simulated data and the policies trained
# on it are made again. 2: the wrench in libfranka's sign (the robot's push on the world is positive).
OBSERVATION_VERSION = 2


class RobotEnvError(RuntimeError):
    """The robot or one of its cameras failed (a dead server, a time-out, a frozen camera): the
    fault of the hardware or the network, not of the caller. ``reset()`` may be tried again."""


@runtime_checkable
class TaskEnv(Protocol):
    """What the actor, evaluation, the recorder and the wrappers rely on beyond ``gym.Env``:
    both ``PegInsertionSim-v0`` and ``Franka-v0`` (the unwrapped envs) have these attributes."""

    task: TaskConfig  # every number of the task (robot_env/tasks/*.json)
    reward_config: RewardConfig  # how the env turns success into reward
    end_on_success: bool  # False: success is reported, but a classifier or a recorder ends episodes
    timing: dict[str, float]  # the last step's timings in ms (observation_ms, period_s, ...)
    metadata: dict[str, Any]  # "keeps_time": True when the env waits for its own control period


# What a step's ``info`` says, by the key its writer (the env or a wrapper) puts it under: the
# writers use these names and every loop reads them through ``step()``'s ``StepInfo``, never by
# string. ``intervene_action`` is SERL's key (its SpacemouseIntervention wrapper writes it only on
# the steps a person drives), so a wrapper ported from SERL is read the same way.
INFO_SUCCESS = "success"  # the task's verdict: the classifier's where one decides
INFO_ENV_SUCCESS = "env_success"  # the env's own check, kept beside a classifier's verdict
INFO_CLASSIFIER_PROB = "classifier_prob"  # the classifier's probability of success
INFO_INTERVENED = "intervened"  # a person's action replaced the policy's (robot_env/intervention.py)
INFO_INTERVENE_ACTION = "intervene_action"  # that action, as the env executed it
INFO_ROBOT_ERROR = "robot_error"  # why the step failed (robot_env/franka_env.py): not a transition
INFO_REFLEX = "reflex"  # the controller's reflex fired on this step


@dataclass(frozen=True)
class StepInfo:
    """The facts of one step's ``info``, typed (see the ``INFO_*`` keys)."""

    success: bool | None = None  # None: the env gave no verdict
    env_success: bool | None = None  # None: no classifier decides, ``success`` is the env's own
    classifier_prob: float | None = None
    intervened: bool = False
    intervene_action: np.ndarray | None = None
    robot_error: str | None = None
    reflex: bool = False

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> StepInfo:
        human = info.get(INFO_INTERVENE_ACTION)
        success, env_success, prob = info.get(INFO_SUCCESS), info.get(INFO_ENV_SUCCESS), info.get(INFO_CLASSIFIER_PROB)
        return cls(
            success=None if success is None else bool(success),
            env_success=None if env_success is None else bool(env_success),
            classifier_prob=None if prob is None else float(prob),
            intervened=bool(info.get(INFO_INTERVENED, False)) or human is not None,
            intervene_action=None if human is None else np.asarray(human),
            robot_error=str(info[INFO_ROBOT_ERROR]) if info.get(INFO_ROBOT_ERROR) else None,
            reflex=bool(info.get(INFO_REFLEX, False)),
        )

    @property
    def succeeded(self) -> bool:
        """The task's verdict, False where the env gave none."""
        return bool(self.success)

    @property
    def env_succeeded(self) -> bool:
        """The env's own check: beside a classifier's verdict where one decides, else the verdict."""
        return bool(self.success if self.env_success is None else self.env_success)


@dataclass(frozen=True)
class Step:
    """One ``env.step`` as every loop reads it (``step()``)."""

    obs: dict[str, np.ndarray]  # the next observation
    reward: float
    terminated: bool
    truncated: bool
    action: np.ndarray  # what the arm executed: a person's (sanitised) where one intervened
    info: StepInfo

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def transition(self, obs: Mapping[str, np.ndarray]) -> Transition:
        """The transition from ``obs`` (the observation the action was chosen on), carrying the
        executed action and the intervention flag."""
        t = step_transition(obs, self.action, self.reward, self.obs, self.terminated, self.truncated)
        t["intervened"] = self.info.intervened
        return t


def step(env: gym.Env, action: np.ndarray) -> Step:
    """Step ``env`` with the policy's ``action``: the one step function of every loop (the actor,
    evaluation, the label recorder, rollouts and the study). The action it reports is the one the
    arm executed, a person's where one took over, clipped and sanitised like any action."""
    obs, reward, terminated, truncated, raw = env.step(action)
    info = StepInfo.of(raw)
    executed = np.asarray(action, np.float32)
    if info.intervene_action is not None:
        executed = sanitize_action(info.intervene_action)[0].astype(np.float32)
    return Step(obs, float(reward), bool(terminated), bool(truncated), executed, info)


def task_env(env: gym.Env) -> TaskEnv:
    """The task env under any wrappers; a clear error for an env that does not keep the contract."""
    base = env.unwrapped
    if not isinstance(base, TaskEnv):
        raise TypeError(
            f"{type(base).__name__} is not a task env of robot_env (it lacks task, reward_config, "
            "end_on_success or timing)"
        )
    return base


def keeps_time(env: gym.Env) -> bool:
    """True when the env paces itself (the real robot): a loop around it must not pace it again."""
    return bool(env.metadata.get("keeps_time", False))


def state_slices() -> dict[str, slice]:
    """Where each proprio key sits in the 19-D vector."""
    out, i = {}, 0
    for key, n in STATE_KEYS:
        out[key] = slice(i, i + n)
        i += n
    return out


def observation_space(obs_mode: str, image_size: int = DEFAULT_IMAGE_SIZE) -> gym.spaces.Dict:
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    spaces: dict[str, gym.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)}
    if obs_mode == "images":
        for key in IMAGE_KEYS:
            spaces[key] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    return gym.spaces.Dict(spaces)


def obs_mode_of(obs_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The env settings (``obs_mode``, ``image_size``) that produce observations of ``obs_spec``
    (a dataset's or checkpoint's ``{key: (shape, dtype)}``)."""
    images = [k for k in obs_spec if k in IMAGE_KEYS]
    if not images:
        return {"obs_mode": "state"}
    return {"obs_mode": "images", "image_size": int(obs_spec[images[0]][0][0])}


def action_space() -> gym.spaces.Box:
    return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def target_frame(task: TaskConfig) -> tuple[np.ndarray, np.ndarray]:
    pose = np.asarray(task.target_pose, np.float64)
    return pose[:3], geo.euler_to_mat(pose[3:])


def proprio(raw: Mapping[str, Any], task: TaskConfig) -> np.ndarray:
    """The 19-D proprio vector from a raw robot state."""
    p_t, r_t = target_frame(task)
    pos, rot = geo.pose7_to_mat(raw["pose"])
    vel = np.asarray(raw["vel"], np.float64)
    parts = {
        "gripper_pose": [float(raw["gripper_pos"])],
        "tcp_force": np.asarray(raw["force"], np.float64),
        "tcp_pose": np.concatenate([r_t.T @ (pos - p_t), geo.mat_to_euler(r_t.T @ rot)]),
        "tcp_torque": np.asarray(raw["torque"], np.float64),
        "tcp_vel": np.concatenate([r_t.T @ vel[:3], r_t.T @ vel[3:]]),
    }
    return np.concatenate([np.asarray(parts[k], np.float64).reshape(n) for k, n in STATE_KEYS]).astype(np.float32)


def sanitize_action(action: Any) -> tuple[np.ndarray, bool]:
    """Return a finite action in [-1, 1] and whether the input was usable as given.

    A non-finite entry makes the whole action untrustworthy, so it becomes zero (hold the
    pose); out-of-range values are clipped. Wrong shapes are an error.
    """
    a = np.asarray(action, np.float64)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape ({ACTION_DIM},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        return np.zeros(ACTION_DIM), False
    return np.clip(a, -1.0, 1.0), True


def clip_to_box(pose6: np.ndarray, box: SafetyBox) -> np.ndarray:
    """Clip ``[x, y, z, roll, pitch, yaw]`` into the box; angles are clipped on the circle,
    so a roll of -3.1 with a box of pi +- 0.1 stays put (it is pi + 0.04)."""
    low, high = np.asarray(box.low, np.float64), np.asarray(box.high, np.float64)
    pose6 = np.asarray(pose6, np.float64)
    out = np.empty(6)
    out[:3] = np.clip(pose6[:3], low[:3], high[:3])
    center, half = (low[3:] + high[3:]) / 2, (high[3:] - low[3:]) / 2
    offset = np.clip(geo.wrap_angle(pose6[3:] - center), -half, half)
    out[3:] = geo.wrap_angle(center + offset)
    return out


def next_target(measured_pose7: np.ndarray, action: np.ndarray, task: TaskConfig) -> np.ndarray:
    """Commanded TCP pose (xyz + quaternion) for a clean action: the measured pose moved by
    the action's delta in the end-effector frame, then clipped into the safety box."""
    pos, rot = geo.pose7_to_mat(measured_pose7)
    trans_scale, rot_scale = task.action_scale
    new_pos = pos + rot @ (np.asarray(action[:3]) * trans_scale)
    new_rot = rot @ geo.euler_to_mat(np.asarray(action[3:6]) * rot_scale)
    pose6 = np.concatenate([new_pos, geo.mat_to_euler(new_rot)])
    return geo.pose6_to_pose7(clip_to_box(pose6, task.safety_box))


def reset_pose6(task: TaskConfig, offset: np.ndarray) -> np.ndarray:
    """The reset pose moved by ``(dx, dy, dyaw)`` (base frame) and kept inside the box."""
    dx, dy, dyaw = np.asarray(offset, np.float64)
    pose = np.asarray(task.reset_pose, np.float64) + np.array([dx, dy, 0.0, 0.0, 0.0, dyaw])
    return clip_to_box(pose, task.safety_box)


def choose_reset(
    task: TaskConfig, options: Mapping[str, Any] | None, reset_mode: str, rng: np.random.Generator, next_eval: int
) -> tuple[np.ndarray, int | None, int]:
    """The reset offset ``(dx, dy, dyaw)`` from the task's reset pose, for the options every env
    of the task takes: ``eval_pose`` (index of a fixed evaluation pose) or ``pose_offset``; without
    them ``reset_mode="random"`` draws uniformly and ``"eval"`` cycles through the fixed poses.
    Returns ``(offset, eval_index or None, the next eval index)``."""
    options = dict(options or {})
    unknown = set(options) - {"eval_pose", "pose_offset"}
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}")
    if "pose_offset" in options:
        offset = np.asarray(options["pose_offset"], np.float64)
        if offset.shape != (3,) or not np.all(np.isfinite(offset)):
            raise ValueError("pose_offset must be three finite numbers (dx, dy, dyaw)")
        return offset, None, next_eval
    if "eval_pose" in options or reset_mode == "eval":
        index = int(options.get("eval_pose", next_eval))
        if not 0 <= index < len(task.eval_poses):
            raise ValueError(f"eval_pose must be in [0, {len(task.eval_poses)}), got {index}")
        return np.asarray(task.eval_poses[index], np.float64), index, (index + 1) % len(task.eval_poses)
    rr = task.random_reset
    return rng.uniform([-rr.xy, -rr.xy, -rr.yaw], [rr.xy, rr.xy, rr.yaw]), None, next_eval
