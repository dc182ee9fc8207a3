"""Human interventions as a gymnasium wrapper, the same on ``Franka-v0`` and the simulation.

Before each step the wrapper asks its device (``actor.teleop``: a SpaceMouse, the keyboard, or
the simulation's scripted person) for a command. When a person is taking over, their action,
clipped and sanitised like any action, replaces the policy's; ``info["intervene_action"]`` is the
action the env executed and ``info["intervened"]`` is True. The actor records that action and
the flag in the transition (``intervened``), which travels to the learner's replay buffer and
into datasets; the actor's episode log counts intervened steps, and evaluation counts an
intervened episode as a failure.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from robot_env.contract import INFO_INTERVENE_ACTION, INFO_INTERVENED, sanitize_action


class InterventionWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, device: Any) -> None:
        super().__init__(env)
        self.device = device
        self._obs: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.device.reset()
        self._obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        human = self.device.command(self._obs) if self._obs is not None else None
        if human is not None:
            action = sanitize_action(human)[0].astype(np.float32)
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info[INFO_INTERVENED] = human is not None
        if human is not None:
            info[INFO_INTERVENE_ACTION] = action
        self._obs = obs
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.device.close()
        super().close()
