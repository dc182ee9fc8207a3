"""A tiny sparse-reward task for fast offline-RL tests.

PointReach: a point in [-1, 1]^2 starts near (-0.6, -0.6) and must reach a disc of radius
0.15 around (0.6, 0.6) within 40 steps; an action moves it by 0.1 * a. Reward is the project's
sparse reward (raw 1 on success, 0 otherwise, through ``RewardConfig``); success terminates.
"""

from __future__ import annotations

import jax
import numpy as np

from shared.config import RewardConfig
from shared.learning.agents import act
from shared.storage.replay_buffer import ReplayBuffer

GOAL = np.array([0.6, 0.6], np.float32)


class PointReach:
    max_steps = 40

    def __init__(self, reward: RewardConfig) -> None:
        self.reward = reward

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        self.t = 0
        self.pos = (np.array([-0.6, -0.6]) + rng.uniform(-0.15, 0.15, 2)).astype(np.float32)
        return self.pos.copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        self.t += 1
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1, 1), -1, 1).astype(np.float32)
        success = bool(np.linalg.norm(self.pos - GOAL) < 0.15)
        return self.pos.copy(), float(self.reward.apply(float(success))), success, self.t >= self.max_steps


def collect_mixed_dataset(episodes: int, reward: RewardConfig, gamma: float, seed: int):
    """30% noisy goal-seeking episodes, 70% aimless ones. Returns (buffer, success rate)."""
    rng = np.random.default_rng(seed)
    env = PointReach(reward)
    buf = ReplayBuffer({"state": ((2,), "float32")}, 2, episodes * env.max_steps * 2, gamma, reward.negative)
    successes = 0
    for _ep in range(episodes):
        skilled = rng.random() < 0.3
        drift = rng.uniform(-1, 1, 2)
        o = env.reset(rng)
        done = False
        while not done:
            if skilled:
                d = GOAL - o
                a = d / (np.linalg.norm(d) + 1e-6) + rng.normal(0, 0.6, 2)
            else:
                a = 0.5 * drift + rng.normal(0, 0.8, 2)
            a = np.clip(a, -1, 1).astype(np.float32)
            o2, r, term, trunc = env.step(a)
            done = term or trunc
            buf.insert(
                {
                    "observations": {"state": o},
                    "actions": a,
                    "rewards": r,
                    "next_observations": {"state": o2},
                    "masks": 0.0 if term else 1.0,
                    "dones": done,
                }
            )
            successes += term
            o = o2
    return buf, successes / episodes


def evaluate_success(agent, env: PointReach, episodes: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    wins = 0
    for _ in range(episodes):
        o = env.reset(rng)
        done = False
        while not done:
            a = act(agent, {"state": o[None]}, key, deterministic=True)[0]
            o, _, term, trunc = env.step(a)
            wins += term
            done = term or trunc
    return wins / episodes
