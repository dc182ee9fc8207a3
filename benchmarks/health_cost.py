"""What the learner's health monitor costs against the updates it watches (learner/health.py).

The paper's setting (19-D state, SAC with 10 critics of 256x256 and LayerNorm, batch 256, UTD 4,
``paper_sim_online``), in one process: the median time of one fused update, of one diagnosis of
the two 256-row probes (``shared.learning.diagnostics.diagnose``, compiled), and of one agent snapshot
(``learner/snapshots.py``, written synchronously at each learner checkpoint). The overhead is
what a diagnosis every ``health.every`` critic steps and a snapshot every ``checkpoint_every``
add to the update time.

Usage: .venv/bin/python benchmarks/health_cost.py [--repeats 20] [--set health.every=1000 ...]
The last line is ``health_overhead_percent=<n>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    from shared.xla_cpu import tune_process

    tune_process()
    import jax
    import numpy as np

    from learner.snapshots import Snapshots
    from shared.config import apply_overrides
    from shared.learning.agents import create_agent, make_update
    from shared.learning.diagnostics import diagnose
    from shared.presets import paper_sim_online

    cfg = apply_overrides(paper_sim_online(), args.overrides)
    acfg = cfg.agent
    rng = np.random.default_rng(0)
    obs = {"state": np.zeros(19, np.float32)}
    agent = create_agent(acfg, obs, 6)
    reference = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, agent)
    update = make_update(acfg)

    def batch(*lead: int) -> dict:
        shape = (*lead,)
        return {
            "observations": {"state": rng.normal(size=(*shape, 19)).astype(np.float32)},
            "next_observations": {"state": rng.normal(size=(*shape, 19)).astype(np.float32)},
            "actions": rng.uniform(-1, 1, (*shape, 6)).astype(np.float32),
            "rewards": np.full(shape, -1.0, np.float32),
            "masks": np.ones(shape, np.float32),
            "dones": np.zeros(shape, np.float32),
            "mc_returns": np.full(shape, -20.0, np.float32),
        }

    size = cfg.health.probe_size
    probes = {"offline_probe": batch(size), "online_probe": batch(size)}
    batches = [batch(acfg.utd, acfg.batch_size) for _ in range(4)]

    def timed(fn, n: int) -> float:
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def step(i: int) -> None:
        nonlocal agent
        agent, _ = update(agent, batches[i % len(batches)])
        jax.block_until_ready(agent.critic.params)

    step(0)  # compile
    update_s = timed(step, args.repeats)
    key = jax.random.PRNGKey(0)
    diagnose(reference, agent, probes, key)  # compile
    diag_s = timed(lambda i: diagnose(reference, agent, probes, jax.random.fold_in(key, i)), args.repeats)
    with tempfile.TemporaryDirectory() as d:
        snaps = Snapshots(Path(d), keep=3)
        snap_s = timed(
            lambda i: snaps.save(
                agent, obs, cfg, 1000 * (i + 1), {"env_steps": i, "weights_version": i, "score": None}
            ),
            max(3, args.repeats // 4),
        )
        snaps.close()
    updates_per_diag = cfg.health.every / acfg.utd
    updates_per_snapshot = cfg.checkpoint_every / acfg.utd
    overhead = (diag_s / updates_per_diag + snap_s / updates_per_snapshot) / update_s if cfg.health.every else 0.0
    print(
        f"config: {acfg.num_critics} critics {acfg.critic_net.hidden_dims}, batch {acfg.batch_size}, UTD {acfg.utd}; "
        f"probes 2 x {size} rows; every {cfg.health.every} critic steps; checkpoint every {cfg.checkpoint_every}"
    )
    print(f"update_ms={1e3 * update_s:.1f}")
    print(f"diagnosis_ms={1e3 * diag_s:.1f}")
    print(f"snapshot_ms={1e3 * snap_s:.1f}")
    print(f"health_overhead_percent={100 * overhead:.2f}")


if __name__ == "__main__":
    main()
