"""Actor <-> learner runtime figures: transport throughput, weights latency, control-loop jitter.

- throughput: a learner process (the real ingest thread and replay buffer) and this process's
  transition sender (the real one, journal included), over localhost. Each observation holds
  a 19-D state and two 128x128x3 uint8 images of random (incompressible) pixels. Reports
  transitions/s from the first put to the last acknowledgement (= inserted in the learner's buffer).
  The first pass over a fresh ring writes memory the process has never touched (page faults, which
  cost a lot on a VM); ``--warm`` measures the steady state of a ring that has been round once.
- weights: a publisher process sends the state policy of the ``peg_sim`` preset (256x256 MLP)
  every 100 ms; this process's weight receiver decodes, checks and installs it. Reports the
  time from the publish call to the weights being swappable (the control loop takes them at its
  next step boundary).
- jitter: the real control loop at 10 Hz on the simulation (state observations, the policy's
  inference, the sender feeding a learner process); reports |period - 100 ms| percentiles.
  ``--images``: the simulation also renders both 128 px wrist cameras and sends them (the state
  policy ignores them); ``--view save``: the loop also logs to the live view (the frames as JPEG,
  the action, reward and flags) and the time it spends there per step is reported too.

Usage: .venv/bin/python benchmarks/runtime.py [throughput|weights|jitter|all] [--transitions N] [--seconds S]
       [--images] [--view off|save] [--view-image-every N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

IMG = (128, 128, 3)
SPEC = {"state": ((19,), "float32"), "wrist_1": (IMG, "uint8"), "wrist_2": (IMG, "uint8")}


def _learner_process(data_port: int, weights_port: int, capacity: int, ready, stop, warm: bool = False) -> None:
    from learner.ingest import IngestServer
    from learner.ledger import Ledger
    from shared.storage.replay_buffer import ReplayBuffer
    from shared.wire.transport import LearnerSockets

    socks = LearnerSockets("127.0.0.1", data_port, weights_port, None)
    buf = ReplayBuffer(SPEC, 6, capacity, 0.98)
    if warm:  # a ring that has been round once: no first writes to fresh memory
        for arr in buf.frames.values():
            arr.fill(0)
    info = {"run": "bench", "grad_steps": 0, "warmup_steps": 10**9, "utd": 4, "weights_version": 0}
    server = IngestServer(socks.data, buf, Ledger(), "bench", lambda: info).start()
    ready.set()
    stop.wait()
    server.stop()
    socks.close()


def throughput(n: int, capacity: int, warm: bool = False) -> float:
    from actor.sender import SenderConfig, TransitionSender
    from shared.wire.transport import free_port

    dp, wp = free_port(), free_port()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_learner_process, args=(dp, wp, capacity, ready, stop, warm))
    proc.start()
    ready.wait(60)
    rng = np.random.default_rng(0)
    pool: list[dict[str, np.ndarray]] = [
        {
            "state": rng.normal(size=19).astype(np.float32),
            "wrist_1": rng.integers(0, 256, IMG, dtype=np.uint8),
            "wrist_2": rng.integers(0, 256, IMG, dtype=np.uint8),
        }
        for _ in range(64)
    ]
    with tempfile.TemporaryDirectory() as spool:
        sender = TransitionSender("127.0.0.1", dp, "bench", "bench", spool, None, SenderConfig()).start()
        while not sender.welcomed:
            time.sleep(0.01)
        obs = pool[0]
        t0 = time.perf_counter()
        for i in range(n):
            nxt = dict(pool[(i + 1) % len(pool)].items())  # a new dict: a new frame
            sender.put(
                {
                    "observations": obs,
                    "actions": rng.uniform(-1, 1, 6).astype(np.float32),
                    "rewards": -1.0,
                    "next_observations": nxt,
                    "masks": 1.0,
                    "dones": (i + 1) % 100 == 0,
                }
            )
            obs = nxt
            if (i + 1) % 100 == 0:
                obs = dict(pool[i % len(pool)])
        t_put = time.perf_counter() - t0
        done = sender.close(drain_timeout=300)
        elapsed = time.perf_counter() - t0
        status = sender.status()
    stop.set()
    proc.join(30)
    mb = n * 2 * np.prod(IMG) / 2**20
    print(
        f"throughput: {n} transitions ({mb:.0f} MB of pixels) put in {t_put:.2f} s, all inserted "
        f"and acknowledged after {elapsed:.2f} s (delivered={done}, resends={status['resends']})"
    )
    rate = n / elapsed
    name = "transport_warm_transitions_per_s" if warm else "transport_transitions_per_s"
    print(f"{name}={rate:.0f} ({rate * 2 * np.prod(IMG) / 2**20:.0f} MB/s of images)")
    return rate


def _publisher_process(weights_port: int, count: int, ready, go) -> None:
    from shared.learning.agents import create_agent
    from shared.presets import peg_sim_online
    from shared.wire.policy_weights import weights_message
    from shared.wire.protocol import encode
    from shared.wire.transport import LearnerSockets, free_port

    socks = LearnerSockets("127.0.0.1", free_port(), weights_port, None)
    agent = create_agent(peg_sim_online().agent, {"state": np.zeros(19, np.float32)}, 6)
    ready.set()
    go.wait(60)
    for v in range(1, count + 1):
        socks.weights.send(encode(weights_message(agent.actor.params, v, "bench")), copy=False)
        time.sleep(0.1)
    socks.close()


def weights_latency(count: int) -> float:
    from actor.weights import WeightsReceiver
    from shared.learning.agents import create_agent
    from shared.presets import peg_sim_online
    from shared.wire.transport import free_port

    wp = free_port()
    agent = create_agent(peg_sim_online().agent, {"state": np.zeros(19, np.float32)}, 6)
    n_params = sum(x.size for x in __import__("jax").tree.leaves(agent.actor.params))
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_publisher_process, args=(wp, count, ready, go))
    proc.start()
    ready.wait(60)
    rx = WeightsReceiver("127.0.0.1", wp, agent.actor.params, "bench").start()
    time.sleep(1.0)  # let SUB connect before the first publish
    go.set()
    latencies, last = [], 0
    t_end = time.time() + count * 0.1 + 10
    while time.time() < t_end and last < count:
        w = rx.latest()
        if w is not None and w.version != last:
            latencies.append(w.ready_at - w.sent_at)
            last = w.version
        time.sleep(0.0005)
    rx.close()
    proc.join(30)
    ms = 1e3 * np.array(latencies[1:])  # the first includes jit warm-up of device_put
    print(
        f"weights: {len(latencies)} versions of a {n_params}-parameter policy ({n_params * 4 / 2**20:.2f} MB); "
        f"publish-to-swappable p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, "
        f"max {ms.max():.2f} ms"
    )
    print(f"weights_publish_to_swap_ms_p50={np.percentile(ms, 50):.2f}")
    return float(np.percentile(ms, 50))


def jitter(seconds: float, images: bool = False, view_target: str = "off", image_every: int = 1) -> float:
    import gymnasium as gym

    import robot_env
    from actor.loop import ControlLoop, LoopConfig
    from actor.sender import TransitionSender
    from shared.learning.agents import create_agent
    from shared.live_view import open_view
    from shared.presets import peg_sim_online
    from shared.wire.transport import free_port

    dp, wp = free_port(), free_port()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    learner = _learner_process if images else _learner_process_state
    proc = ctx.Process(target=learner, args=(dp, wp, 10_000, ready, stop) if images else (dp, wp, ready, stop))
    proc.start()
    ready.wait(60)
    agent = create_agent(peg_sim_online().agent, {"state": np.zeros(19, np.float32)}, 6)
    env_kwargs: dict[str, Any] = {"obs_mode": "images", "image_size": IMG[0]} if images else {}
    env = gym.make(robot_env.SIM_ENV_ID, **env_kwargs)
    periods, shown = [], []
    with tempfile.TemporaryDirectory() as spool:
        sender = TransitionSender("127.0.0.1", dp, "bench", "bench", spool).start()
        steps = int(seconds * 10)
        view = open_view(view_target, spool, "actor", "bench")
        loop = ControlLoop(
            env,
            agent.nets["actor"],
            agent.actor.params,
            sender,
            None,
            LoopConfig(hz=10, max_steps=steps, view_image_every=image_every),
            view=view,
        )
        show = loop._show

        def timed_show(*a):
            t = time.perf_counter()
            show(*a)
            shown.append(time.perf_counter() - t)

        loop._show = timed_show  # type: ignore[method-assign]  # time every step's view calls
        # Record every period (not only per episode) by wrapping the rate keeper.
        wait = loop.rate.wait

        def timed_wait():
            p = wait()
            if p is not None:
                periods.append(p)
            return p

        loop.rate.wait = timed_wait  # type: ignore[method-assign]  # count every period the loop waits for
        t0 = time.perf_counter()
        loop.run()
        elapsed = time.perf_counter() - t0
        sender.close(10)
        if view is not None:
            view.close()
            rrd = view.path.stat().st_size / 2**20
            ms = 1e3 * np.array(shown[5:])
            print(
                f"view ({view_target}, frames every {image_every} steps): per step p50 {np.percentile(ms, 50):.2f} ms, "
                f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms; recording {rrd:.1f} MB "
                f"({rrd / max(elapsed / 60, 1e-9):.1f} MB/min)"
            )
    stop.set()
    proc.join(30)
    dev = 1e3 * np.abs(np.array(periods[5:]) - 0.1)  # skip the compile of the first steps
    print(
        f"jitter: {len(periods)} periods at 10 Hz in {elapsed:.1f} s; |period - 100 ms| p50 {np.percentile(dev, 50):.3f} ms, "
        f"p99 {np.percentile(dev, 99):.3f} ms, max {dev.max():.3f} ms; overruns {loop.rate.overruns}"
    )
    print(f"actor_period_jitter_p99_ms={np.percentile(dev, 99):.3f}")
    return float(np.percentile(dev, 99))


def _learner_process_state(data_port: int, weights_port: int, ready, stop) -> None:
    global SPEC
    SPEC = {"state": ((19,), "float32")}
    _learner_process(data_port, weights_port, 10_000, ready, stop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=["throughput", "weights", "jitter", "all"])
    p.add_argument("--transitions", type=int, default=20_000, help="throughput: transitions to send")
    p.add_argument("--capacity", type=int, default=10_000, help="throughput: the learner buffer's capacity")
    p.add_argument(
        "--warm", action="store_true", help="throughput: the learner's ring already written once (steady state)"
    )
    p.add_argument("--versions", type=int, default=100, help="weights: versions to publish")
    p.add_argument("--seconds", type=float, default=60.0, help="jitter: seconds at 10 Hz")
    p.add_argument("--images", action="store_true", help="jitter: the sim renders and sends two 128 px cameras")
    p.add_argument("--view", choices=["off", "save"], default="off", help="jitter: the live view (a recording)")
    p.add_argument("--view-image-every", type=int, default=1, help="jitter: frames to the view every N steps")
    args = p.parse_args()
    if args.what in ("throughput", "all"):
        throughput(args.transitions, args.capacity, args.warm)
    if args.what in ("weights", "all"):
        weights_latency(args.versions)
    if args.what in ("jitter", "all"):
        jitter(args.seconds, args.images, args.view, args.view_image_every)


if __name__ == "__main__":
    main()
