"""The reward from the learned success classifier, as a gymnasium wrapper around a task env.

Each step the classifier judges the new observation's camera frames; success (probability at or
above the checkpoint's threshold) gives the reward ``RewardConfig.apply(1)`` (the env's own
config: scaling stays in one place) and ends the episode. Wrap an env made with
``end_on_success=False`` so its own check (ground truth in simulation, the pose check on the
robot) does not end episodes; its verdict stays in ``info["env_success"]`` for comparison.

The classifier is compiled when the wrapper is made, not in the first control period, and each
step's inference time is in ``timing["classifier_ms"]`` beside the env's own timings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gymnasium as gym
import numpy as np

from robot_env.contract import INFO_CLASSIFIER_PROB, INFO_ENV_SUCCESS, INFO_ROBOT_ERROR, INFO_SUCCESS, task_env
from shared.learning.reward_classifier import RewardClassifier

log = logging.getLogger("wsrl.reward")


class ClassifierReward(gym.Wrapper):
    def __init__(self, env: gym.Env, classifier: RewardClassifier) -> None:
        super().__init__(env)
        spaces = getattr(env.observation_space, "spaces", {})
        want = (classifier.image_size, classifier.image_size, 3)
        for k in classifier.image_keys:
            space = spaces.get(k)
            if space is None or tuple(space.shape) != want:
                raise ValueError(
                    f"the reward classifier needs '{k}' images of shape {want}; the env gives "
                    f"{None if space is None else tuple(space.shape)} (observation keys {sorted(spaces)})"
                )
        base = task_env(env)
        if base.end_on_success:
            raise ValueError(
                "the wrapped env ends episodes on its own success check; make it with "
                "end_on_success=False so that the classifier decides"
            )
        self.classifier = classifier
        self.reward_config = base.reward_config
        self.compile_s = classifier.warm_up()
        self.timing: dict[str, float] = {}
        self.nonfinite = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        info = dict(info)
        info[INFO_ENV_SUCCESS] = bool(info.get(INFO_SUCCESS, False))
        info[INFO_SUCCESS] = False
        return obs, info

    def step(self, action: Any):
        obs, _, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        t0 = time.perf_counter()
        prob = self.classifier.probability(obs)
        ms = 1e3 * (time.perf_counter() - t0)
        if not np.isfinite(prob):
            self.nonfinite += 1
            log.error(
                "the reward classifier returned %s; counting the step as a failure (%d so far)", prob, self.nonfinite
            )
            prob = 0.0
        robot_error = INFO_ROBOT_ERROR in info  # the env ended the episode on a fault: no verdict on a stale frame
        success = prob >= self.classifier.threshold and not robot_error
        info[INFO_ENV_SUCCESS] = bool(info.get(INFO_SUCCESS, False))
        info[INFO_SUCCESS] = bool(success)
        info[INFO_CLASSIFIER_PROB] = float(prob)
        inner = getattr(self.env.unwrapped, "timing", None) or {}
        self.timing = {**inner, "classifier_ms": ms}
        reward = float(self.reward_config.apply(float(success)))
        terminated = bool(success or terminated)
        truncated = bool(truncated and not terminated)
        return obs, reward, terminated, truncated, info
