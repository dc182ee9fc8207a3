"""Building the env a checkpoint needs: one place for the actor, evaluation and the recorder.

The observation mode and image size follow the checkpoint's observation spec; ``Franka-v0``
gets its wrist cameras (RealSense, or the simulated robot server's); a reward classifier wraps
the env and takes over the reward and the end of each episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from robot_env import FRANKA_ENV_ID, SIM_ENV_ID
from robot_env.contract import IMAGE_KEYS, obs_mode_of
from robot_env.gripper import GRIPPER_FLAVOURS
from shared import defaults
from shared.command_line import option
from shared.config import RewardConfig
from shared.data.dataset import ObsSpec

CAMERA_SOURCES = ("realsense", "server")


@dataclass(frozen=True)
class EnvChoice:
    """Which env runs, the same settings on every command that runs one (the actor, evaluation,
    the label recorder, the robot data collector); a command's config inherits these fields."""

    env: str = option(SIM_ENV_ID, f"{SIM_ENV_ID}, or {FRANKA_ENV_ID} (the robot server; it keeps its own control rate)")
    robot_url: str | None = option(None, f"the robot server for {FRANKA_ENV_ID}, e.g. http://127.0.0.1:5000")
    cameras: str = option(
        "realsense",
        f"{FRANKA_ENV_ID}'s wrist cameras: RealSense (serials in the task file) or the simulated server's",
        choices=CAMERA_SOURCES,
    )
    task: str = option(defaults.TASK, "task name or task file")
    gripper: str | None = option(
        None,
        f"{FRANKA_ENV_ID}: the robot server's gripper units (default: the task file's real.gripper)",
        choices=GRIPPER_FLAVOURS,
    )


def camera_rig(kind: str, task: str, robot_url: str | None, size: int) -> Any:
    """The wrist cameras of ``Franka-v0``: RealSense by the task file's serials, or the
    simulated robot server's cameras (``kind="server"``)."""
    from robot_env import cameras as cams
    from robot_env.task_config import load_task

    if kind not in CAMERA_SOURCES:
        raise ValueError(f"cameras must be one of {CAMERA_SOURCES}, got {kind!r}")
    if kind == "server":
        from robot_env.robot_client import RobotClient

        if not robot_url:
            raise ValueError("cameras='server' needs the simulated robot server's URL")
        return cams.server_rig(RobotClient(robot_url), IMAGE_KEYS, size)
    real = load_task(task).real
    if real is None:
        raise ValueError(f"task {task!r} has no 'real' section with camera serials")
    return cams.realsense_rig(real.cameras, size)


def make_env(
    env_id: str,
    task: str,
    reward: RewardConfig,
    obs_spec: ObsSpec,
    seed: int,
    robot_url: str | None = None,
    cameras: str = "realsense",
    classifier: Any = None,
    end_on_success: bool = True,
    gripper: str | None = None,
) -> gym.Env:
    """The env for a checkpoint: image mode and size follow the checkpoint's observation keys.

    With a reward classifier (``shared.learning.reward_classifier.RewardClassifier``) the reward and the
    end of an episode come from it; the env renders or reads the cameras at the classifier's size,
    and a state-only policy gets only ``state`` (the images are for the classifier). ``gripper``:
    the robot server's gripper units for ``Franka-v0`` (default: the task file's)."""
    mode = obs_mode_of(obs_spec)
    env_mode = dict(mode)
    extra: dict[str, Any] = {"robot_url": robot_url} if robot_url else {}
    if gripper is not None:
        if env_id != FRANKA_ENV_ID:
            raise ValueError(f"gripper units are a setting of {FRANKA_ENV_ID}, not of {env_id}")
        extra["gripper"] = gripper
    if not end_on_success:
        extra["end_on_success"] = False
    if classifier is not None:
        if mode["obs_mode"] == "images" and mode["image_size"] != classifier.image_size:
            raise ValueError(
                f"the policy sees {mode['image_size']} px images, the reward classifier was trained "
                f"on {classifier.image_size} px; train the classifier at the policy's size"
            )
        env_mode = {"obs_mode": "images", "image_size": classifier.image_size}
        extra["end_on_success"] = False
    if env_id == FRANKA_ENV_ID and env_mode["obs_mode"] == "images":
        extra["cameras"] = camera_rig(cameras, task, robot_url, env_mode["image_size"])
    env = gym.make(env_id, task=task, reward=reward, **env_mode, **extra)
    if classifier is not None:
        from robot_env.classifier_reward import ClassifierReward

        env = ClassifierReward(env, classifier)
        if mode["obs_mode"] == "state":
            env = gym.wrappers.FilterObservation(env, ["state"])
    env.action_space.seed(seed)
    return env
