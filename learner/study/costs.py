"""What one update of each kind costs on this machine: for ``benchmarks/update_costs.py`` and
for predicting a study's cost before it runs.

The methods of ``shared.learning.methods`` differ in their update only by the agent config they run
(SAC, or Cal-QL / CQL / IQL continued online) and by where the batch comes from, so a study's
cost is the sum over its cells of (updates x the cost of that kind) plus env steps and
evaluations. The cost is measured as the study runs it: host sampling from a replay buffer (and
the offline mix where a method has one) plus one compiled update call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from shared.config import AgentConfig
from shared.data.dataset import ObsSpec, Transition, example_obs
from shared.learning.agents import create_agent, make_update
from shared.learning.methods import MethodConfig, mixed_batch, online_config
from shared.storage.replay_buffer import ReplayBuffer


@dataclass(frozen=True)
class UpdateCost:
    kind: str  # the agent's algo, and "+mix" where a share of every batch is offline
    critic_steps: int  # per call (UTD)
    first_call_s: float  # compile + run
    median_s: float  # per call, after the first
    min_s: float
    max_s: float
    calls: int

    @property
    def critic_updates_per_s(self) -> float:
        return self.critic_steps / self.median_s

    def row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "critic_steps_per_call": self.critic_steps,
            "first_call_s": round(self.first_call_s, 2),
            "ms_per_call": {
                "min": round(1e3 * self.min_s, 2),
                "median": round(1e3 * self.median_s, 2),
                "max": round(1e3 * self.max_s, 2),
            },
            "critic_updates_per_s": round(self.critic_updates_per_s, 1),
            "calls": self.calls,
        }


def update_kind(m: MethodConfig, online: AgentConfig, pretrained: AgentConfig) -> str:
    cfg = online_config(m, online, pretrained)
    return cfg.algo + ("+mix" if m.offline_fraction > 0 else "")


def _random_buffer(spec: ObsSpec, action_dim: int, size: int, gamma: float, seed: int) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(spec, action_dim, size + 1, gamma, -1.0)

    def obs() -> dict[str, np.ndarray]:
        out = {}
        for k, (shape, dtype) in spec.items():
            if np.dtype(dtype) == np.uint8:
                out[k] = rng.integers(0, 256, shape, dtype=np.uint8)
            else:
                out[k] = rng.normal(size=shape).astype(dtype)
        return out

    for i in range(size):
        buf.insert(
            Transition(
                observations=obs(),
                actions=rng.uniform(-1, 1, action_dim).astype(np.float32),
                rewards=-1.0,
                next_observations=obs(),
                masks=1.0,
                dones=i % 50 == 49,
            )
        )
    return buf


def time_update(
    cfg: AgentConfig,
    spec: ObsSpec,
    action_dim: int,
    offline_fraction: float = 0.0,
    seconds: float = 3.0,
    min_calls: int = 5,
    kind: str | None = None,
    seed: int = 0,
) -> UpdateCost:
    """Time ``cfg``'s update fed from a replay buffer of random transitions (and, with
    ``offline_fraction``, a second one standing for the offline data): the first call, then calls
    for ``seconds`` (at least ``min_calls``)."""
    agent = create_agent(cfg, example_obs(spec), action_dim, seed)
    update = make_update(cfg, donate=False)
    online = _random_buffer(spec, action_dim, 2_000, cfg.gamma, seed)
    offline = _random_buffer(spec, action_dim, 2_000, cfg.gamma, seed + 1) if offline_fraction > 0 else None
    rng = np.random.default_rng(seed)

    def call() -> float:
        nonlocal agent
        t0 = time.perf_counter()
        batch = mixed_batch(online, offline, offline_fraction, cfg.batch_size, rng, leading=(cfg.utd,))
        agent, _ = update(agent, batch)
        jax.block_until_ready(agent.critic.params)
        return time.perf_counter() - t0

    first = call()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < end:
        times.append(call())
    name = kind or cfg.algo + ("+mix" if offline_fraction > 0 else "")
    return UpdateCost(name, cfg.utd, first, statistics.median(times), min(times), max(times), len(times))
