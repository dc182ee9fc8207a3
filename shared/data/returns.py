"""Monte-Carlo return-to-go, the lower bound Cal-QL puts under policy-action Q values."""

from __future__ import annotations

import numpy as np


def mc_return_to_go(rewards: np.ndarray, gamma: float, r_neg: float | None) -> np.ndarray:
    """Discounted reward-to-go of one episode, G_t = r_t + gamma * G_{t+1}, G_T = 0.

    An episode that never succeeds (every reward equals ``r_neg``) would keep collecting
    ``r_neg`` forever, so its return is the infinite geometric sum ``r_neg / (1 - gamma)`` at
    every step (as in the Cal-QL reference). ``r_neg=None`` (dense rewards) disables that case.
    """
    rewards = np.asarray(rewards, np.float64)
    if r_neg is not None and rewards.size and np.allclose(rewards, r_neg):
        return np.full(rewards.shape, r_neg / (1.0 - gamma), np.float32)
    out = np.empty_like(rewards)
    running = 0.0
    for t in range(rewards.size - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out.astype(np.float32)


def episode_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float, r_neg: float | None) -> np.ndarray:
    """The discounted return-to-go of each step of consecutive whole episodes (``dones`` ends each)."""
    rewards, dones = np.asarray(rewards, np.float64), np.asarray(dones, bool)
    if rewards.size and not dones[-1]:
        raise ValueError("the last episode does not end: its returns are unknown")
    out = np.empty(rewards.shape, np.float32)
    start = 0
    for end in (np.flatnonzero(dones) + 1).tolist():
        out[start:end] = mc_return_to_go(rewards[start:end], gamma, r_neg)
        start = end
    return out
