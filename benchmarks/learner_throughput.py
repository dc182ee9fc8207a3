"""Online learner throughput in the paper's setting.

19-D state, 6-D action, SAC with a 10-critic ensemble (LayerNorm, 256x256), batch 256, UTD 4
with one actor + temperature update per call, all fused in one compiled call. Reports the
update alone (batches already on device) and the update fed from the replay buffer (host
sampling included, as the learner runs it).

Usage: .venv/bin/python benchmarks/learner_throughput.py [--seconds 20]
The last line is ``critic_updates_per_s=<number>`` (update alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from shared.agents import create_agent, make_update
from shared.config import paper_sim_online
from shared.replay_buffer import ReplayBuffer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20.0, help="timed duration of each measurement")
    args = p.parse_args()
    cfg = paper_sim_online().agent
    obs = {"state": np.zeros(19, np.float32)}
    agent = create_agent(cfg, obs, 6)
    update = make_update(cfg)
    rng = np.random.default_rng(0)
    buf = ReplayBuffer({"state": ((19,), "float32")}, 6, 20_000, cfg.gamma)
    for i in range(20_000 - 1):
        buf.insert(
            {
                "observations": {"state": rng.normal(size=19).astype(np.float32)},
                "actions": rng.uniform(-1, 1, 6).astype(np.float32),
                "rewards": -1.0,
                "next_observations": {"state": rng.normal(size=19).astype(np.float32)},
                "masks": 1.0,
                "dones": i % 100 == 99,
            }
        )
    batches = [jax.device_put(buf.sample(cfg.batch_size, rng, leading=(cfg.utd,))) for _ in range(8)]

    t = time.perf_counter()
    agent, _info = update(agent, batches[0])
    jax.block_until_ready(agent)
    compile_s = time.perf_counter() - t
    print(f"backend={jax.default_backend()} devices={jax.devices()} cores={os.cpu_count()}")
    print(
        f"config: ensemble={cfg.num_critics} subset={cfg.num_min_critics} hidden={cfg.critic_net.hidden_dims} "
        f"layer_norm={cfg.critic_net.use_layer_norm} batch={cfg.batch_size} utd={cfg.utd}"
    )
    print(f"first call (compile + run): {compile_s:.2f} s")

    def measure(feed) -> tuple[float, float]:
        nonlocal agent
        times: list[float] = []
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            agent, _ = update(agent, feed(len(times)))
            jax.block_until_ready(agent.critic.params)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        return cfg.utd / med, cfg.utd * len(times) / sum(times)

    med_rate, mean_rate = measure(lambda i: batches[i % len(batches)])
    print(
        f"update alone: median {med_rate:.1f} critic updates/s (mean {mean_rate:.1f}); "
        f"{med_rate / cfg.utd:.1f} env steps/s at UTD {cfg.utd}"
    )
    fed_med, fed_mean = measure(lambda i: buf.sample(cfg.batch_size, rng, leading=(cfg.utd,)))
    print(f"with replay sampling: median {fed_med:.1f} critic updates/s (mean {fed_mean:.1f})")
    print(f"critic_updates_per_s={med_rate:.1f}")


if __name__ == "__main__":
    main()
