"""Online learner throughput in the paper's setting, pinned to one core and on all cores.

19-D state, 6-D action, SAC with a 10-critic ensemble (LayerNorm, 256x256), batch 256, UTD 4
with one actor + temperature update per call, all fused in one compiled call. Each setting runs
in its own process (``--cores 0``: pinned to core 0, as a learner sharing the machine with the
actor; ``all``: every core): the update alone (batches already on device), the update fed from
the replay buffer (host sampling included, as the learner runs it), and the fraction of this
machine's measured matmul peak the update reaches (its FLOPs from XLA's cost analysis of the
compiled call, the peak from a 4096x256 @ 256x256 matmul in the same process, float32 and, for
``agent.*.matmul_dtype=bfloat16`` runs, bfloat16).

Usage: .venv/bin/python benchmarks/learner_throughput.py [--seconds 20] [--cores 0 all]
    [--set agent.critic_net.matmul_dtype=bfloat16 ...]
The last lines are ``critic_updates_per_s_pinned=<n>`` and ``critic_updates_per_s=<n>`` (all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def matmul_peak(dtype: str, seconds: float = 2.0) -> float:
    """GFLOP/s of a 4096x256 @ 256x256 matmul (the critic's layer shape at a 4x256 batch)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((4096, 256), dtype)
    b = jnp.ones((256, 256), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f(a, b).block_until_ready()
        n += 1
    return 2 * 4096 * 256 * 256 * n / (time.perf_counter() - t0) / 1e9


def child(seconds: float, overrides: list[str], tuned: bool) -> dict[str, float | str]:
    if tuned:
        from shared.xla_cpu import tune_process

        tune_process()  # what the learner's entry points do
    import resource

    import jax
    import numpy as np

    from shared.config import apply_overrides
    from shared.learning.agents import PHASES, actor_batch, create_agent, make_update
    from shared.presets import paper_sim_online
    from shared.storage.replay_buffer import ReplayBuffer

    cfg = apply_overrides(paper_sim_online(), overrides).agent
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
    agent, _ = update(agent, batches[0])
    jax.block_until_ready(agent)
    compile_s = time.perf_counter() - t
    # XLA's cost analysis counts a loop's body once, so the fused call's own figure would count
    # one of its utd critic steps: add up the phases instead.
    critic_phase, actor_phase = PHASES[cfg.algo]
    one = jax.tree.map(lambda x: x[0], batches[0])
    flops_per_call = cfg.utd * _flops(critic_phase, agent, one) + _flops(
        actor_phase, agent, actor_batch(cfg, batches[0])
    )

    def measure(feed) -> float:
        nonlocal agent
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 3:
            t0 = time.perf_counter()
            agent, _ = update(agent, feed(len(times)))
            jax.block_until_ready(agent.critic.params)
            times.append(time.perf_counter() - t0)
        return cfg.utd / statistics.median(times)

    before = resource.getrusage(resource.RUSAGE_SELF)
    calls = 20
    for i in range(calls):
        agent, _ = update(agent, batches[i % len(batches)])
        jax.block_until_ready(agent.critic.params)
    after = resource.getrusage(resource.RUSAGE_SELF)
    alone = measure(lambda i: batches[i % len(batches)])
    fed = measure(lambda i: buf.sample(cfg.batch_size, rng, leading=(cfg.utd,)))
    dtypes = {cfg.critic_net.matmul_dtype, "float32"}
    peaks = {d: matmul_peak(d) for d in sorted(dtypes)}
    return {
        "cores": sorted(os.sched_getaffinity(0)).__repr__(),
        "compile_s": compile_s,
        "alone": alone,
        "fed": fed,
        "gflop_per_critic_update": flops_per_call / cfg.utd / 1e9,
        "faults_per_call": (after.ru_minflt - before.ru_minflt) / calls,
        "kernel_ms_per_call": 1e3 * (after.ru_stime - before.ru_stime) / calls,
        "tuned": tuned,
        **{f"peak_{d}": v for d, v in peaks.items()},
        "matmul_dtype": cfg.critic_net.matmul_dtype,
        "config": (
            f"ensemble={cfg.num_critics} subset={cfg.num_min_critics} hidden={cfg.critic_net.hidden_dims} "
            f"layer_norm={cfg.critic_net.use_layer_norm} batch={cfg.batch_size} utd={cfg.utd} "
            f"matmul={cfg.critic_net.matmul_dtype}"
        ),
    }


def _flops(fn, *args) -> float:
    import jax

    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="timed duration of each measurement")
    p.add_argument("--cores", nargs="+", default=["0", "all"], help="'0' (pinned to core 0) and/or 'all'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="agent.PATH=VALUE")
    p.add_argument(
        "--untuned", action="store_true", help="without shared/xla_cpu.py's process settings (for before/after)"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.seconds, args.overrides, not args.untuned)), flush=True)
        return
    results = {}
    for cores in args.cores:
        cmd = [sys.executable, __file__, "--child", "--seconds", str(args.seconds)]
        for o in args.overrides:
            cmd += ["--set", o]
        if args.untuned:
            cmd.append("--untuned")
        cpus = None if cores == "all" else {int(c) for c in cores.split(",")}
        # Pinned before the process starts, so XLA sizes its thread pool for the cores it has.
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=(lambda c=cpus: os.sched_setaffinity(0, c)) if cpus else None,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results[cores] = r
        peak = r[f"peak_{r['matmul_dtype']}"]
        frac = r["alone"] * r["gflop_per_critic_update"] / peak
        print(f"[{'pinned to core ' + cores if cores != 'all' else 'all cores'} {r['cores']}] {r['config']}")
        print(
            f"  update alone: {r['alone']:.1f} critic updates/s ({r['alone'] / 4:.1f} env steps/s at UTD 4); with "
            f"replay sampling {r['fed']:.1f}; first call {r['compile_s']:.1f} s"
        )
        print(
            f"  {r['gflop_per_critic_update']:.2f} GFLOP per critic update (XLA cost analysis, actor step "
            f"included); matmul peak {' / '.join(f'{k[5:]} {v:.0f}' for k, v in r.items() if k.startswith('peak_'))} "
            f"GFLOP/s; the update reaches {frac:.0%} of the {r['matmul_dtype']} peak"
        )
        print(
            f"  process settings {'on' if r['tuned'] else 'off (--untuned)'}: {r['faults_per_call']:.0f} page "
            f"faults and {r['kernel_ms_per_call']:.1f} ms of kernel time per call"
        )
    for cores, r in results.items():
        name = "critic_updates_per_s" if cores == "all" else "critic_updates_per_s_pinned"
        print(f"{name}={r['alone']:.1f}")


if __name__ == "__main__":
    main()
