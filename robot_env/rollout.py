"""Run episodes of a policy in an environment, optionally recording transitions.

One loop for scripted data collection, offline-policy evaluation and demos, so the
transition format (the replay buffer's ``insert`` keys) is written in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from robot_env.contract import step, task_env
from shared.data.dataset import Transition

Policy = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def reset_policy(policy: Policy) -> None:
    """Call a stateful policy's ``reset()`` (a scripted controller's) at the start of an episode."""
    reset = getattr(policy, "reset", None)
    if callable(reset):
        reset()


@dataclass(frozen=True)
class EpisodeResult:
    success: bool
    length: int
    intervened: int = 0  # steps where a person's action replaced the policy's


def run_episode(
    env: gym.Env,
    policy: Policy,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    record: Callable[[Transition], None] | None = None,
) -> EpisodeResult:
    """Reset ``env`` and run ``policy`` until the episode terminates or is truncated.

    A policy with a ``reset()`` method (a stateful controller) has it called first. ``record``
    receives each transition as a dict with the keys ``ReplayBuffer.insert`` takes.
    """
    obs, _ = env.reset(seed=seed, options=options)
    reset_policy(policy)
    length, success, intervened = 0, False, 0
    while True:
        s = step(env, np.asarray(policy(obs), np.float32))
        intervened += int(s.info.intervened)
        if record is not None:
            record(s.transition(obs))
        length += 1
        success = success or s.info.succeeded
        obs = s.obs
        if s.done:
            return EpisodeResult(success, length, intervened)


def evaluate(
    env: gym.Env,
    policy: Policy,
    episodes: int,
    eval_poses: bool = True,
    seed: int = 0,
    record: Callable[[Transition], None] | None = None,
) -> dict[str, float]:
    """Success rate and mean episode length over ``episodes`` episodes, from the task's fixed
    evaluation poses in order (``eval_poses``) or from seeded random resets. ``record`` gets every
    transition (as in ``run_episode``)."""
    results = []
    for i in range(episodes):
        options = {"eval_pose": i % len(task_env(env).task.eval_poses)} if eval_poses else None
        results.append(run_episode(env, policy, seed=seed + i, options=options, record=record))
    return {
        "success_rate": float(np.mean([r.success for r in results])),
        "episode_length": float(np.mean([r.length for r in results])),
        "successes": float(sum(r.success for r in results)),
        "episodes": float(episodes),
    }
