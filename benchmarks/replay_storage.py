"""Replay storage at robot scale: bytes per image transition, checkpoint cost against buffer size,
and how long a chunk's insert (and so its ack) waits while a checkpoint runs.

Observations are the robot's: a 19-D state and two 128x128x3 uint8 wrist images of random
(incompressible) pixels, in episodes of 100 steps. For each buffer size N it fills a buffer of
capacity N + 2,000, takes the process's first checkpoint (a full cut), inserts 500 more
transitions and times the second checkpoint, three ways:

- ``disk``: frames on disk (``replay_frames_on_disk``), incremental checkpoint (today's robot preset);
- ``ram``: frames in RAM, incremental checkpoint (the delta carries the new frames);
- ``snapshot``: frames in RAM, the whole buffer written under the ingest lock (before issue 17);
- ``disk_full``: frames on disk, the timed checkpoint is the third, which starts a new chain with
  a full cut (``keep_checkpoints`` 3: no file is shared by every kept checkpoint); its frames'
  CRCs come from the earlier seals, so it writes the small arrays of the whole ring only.

During each timed checkpoint a thread inserts 32-transition chunks under the ingest lock every
10 ms, as the learner's ingest thread does; the figures are how long the checkpoint held the
lock, and the longest such insert, i.e. the most an ack was held up (an ack is sent right after
its chunk's insert; besides the lock, an insert also waits for the GIL and a core).

Usage: .venv/bin/python benchmarks/replay_storage.py [--sizes 2000 8000 32000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

IMG = (128, 128, 3)
SPEC = {"state": ((19,), "float32"), "wrist_1": (IMG, "uint8"), "wrist_2": (IMG, "uint8")}
CHUNK = 32
NEW = 500  # transitions between the two checkpoints (about what the learner takes between two)


class Traffic:
    """Chunks of consecutive transitions in the wire layout (shared frames + indices)."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.pool: dict[str, np.ndarray] = {
            "state": rng.normal(size=(256, 19)).astype(np.float32),
            "wrist_1": rng.integers(0, 256, (256, *IMG), dtype=np.uint8),
            "wrist_2": rng.integers(0, 256, (256, *IMG), dtype=np.uint8),
        }
        self.rng, self.t, self.at = rng, 0, 0

    def chunk(self, n: int = CHUNK) -> dict[str, np.ndarray]:
        first = self.at % 200
        frames = {k: v[first : first + n + 1] for k, v in self.pool.items()}
        self.at += n
        steps = (self.t + np.arange(n)) % 100
        self.t += n
        dones = steps == 99
        return {
            "frames": frames,
            "obs_index": np.arange(n),
            "next_index": np.arange(1, n + 1),
            "actions": self.rng.uniform(-1, 1, (n, 6)).astype(np.float32),
            "rewards": np.full(n, -1.0, np.float32),
            "masks": np.ones(n, np.float32),
            "dones": dones,
        }


class TimedLock:
    """The ingest lock, recording how long the checkpointing thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held: list[float] = []
        self._t = 0.0
        self.main = threading.main_thread()

    def __enter__(self) -> None:
        self._lock.acquire()
        self._t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is self.main:
            self.held.append(time.perf_counter() - self._t)
        self._lock.release()


def _fill(buf, traffic: Traffic, n: int, lock: AbstractContextManager[Any]) -> None:
    while n > 0:
        with lock:
            buf.insert_chunk(**traffic.chunk(min(CHUNK, n)), stream="robot")
        n -= CHUNK


def _inserter(
    buf, traffic: Traffic, lock: AbstractContextManager[Any], stop: threading.Event, waits: list[float]
) -> None:
    while not stop.is_set():
        c = traffic.chunk()
        t0 = time.perf_counter()
        with lock:
            buf.insert_chunk(**c, stream="robot")
        waits.append(time.perf_counter() - t0)
        time.sleep(0.01)


def run(kind: str, size: int, root: Path) -> dict[str, float]:
    from learner.checkpoint import LearnerCheckpoints
    from learner.ledger import Ledger
    from shared.config import AgentConfig, NetworkConfig, OnlineConfig
    from shared.learning.agents import create_agent

    out = root / f"{kind}_{size}"
    shutil.rmtree(out, ignore_errors=True)
    ckpts = LearnerCheckpoints(out, keep=3)
    capacity = size + 2_000
    buf = ckpts.new_buffer(SPEC, 6, capacity, 0.98, -1.0, frames_on_disk=kind in ("disk", "disk_full"))
    lock, traffic = TimedLock(), Traffic()
    small = NetworkConfig(hidden_dims=(32, 32))
    cfg = OnlineConfig(agent=AgentConfig(num_critics=2, critic_net=small, actor_net=small), buffer_capacity=capacity)
    agent = create_agent(cfg.agent, {"state": np.zeros(19, np.float32)}, 6)
    ledger = Ledger()

    def checkpoint(env_steps: int) -> None:
        if kind == "snapshot":  # the whole buffer, under the ingest lock (the old way)
            with lock:
                buf.save(out / "replay" / f"buffer_{env_steps:012d}.npz")
        else:
            ckpts.save(agent, cfg, buf, ledger, lock, 0, "bench", None, 0)

    _fill(buf, traffic, size, lock)
    ledger.add("robot", "s", 0, size)
    checkpoint(size)
    if kind == "disk_full":  # a second, incremental one: the chain is then as long as keep - 1
        _fill(buf, traffic, NEW, lock)
        ledger.add("robot", "s", 2, NEW)
        checkpoint(size + NEW)
    _fill(buf, traffic, NEW, lock)
    ledger.add("robot", "s", 1, NEW)
    waits: list[float] = []
    stop = threading.Event()
    th = threading.Thread(target=_inserter, args=(buf, Traffic(1), lock, stop, waits), daemon=True)
    th.start()
    time.sleep(0.2)  # the inserter's uncontended waits, for the baseline
    base = len(waits)
    lock.held.clear()
    t0 = time.perf_counter()
    checkpoint(size + NEW)
    elapsed = time.perf_counter() - t0
    stop.set()
    th.join()
    during = waits[base:] or [0.0]
    # The checkpoint's replay file (the agent's orbax files are the same small size for all).
    newest = sorted((out / "replay").glob("buffer_*.npz" if kind == "snapshot" else "delta_*.npz"))[-1]
    written = newest.stat().st_size
    ckpts.close()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": elapsed,
        "mb_written": written / 2**20,
        "max_insert_wait_ms": 1e3 * max(during),
        "lock_held_ms": 1e3 * sum(lock.held),
        "base_insert_ms": 1e3 * float(np.median(waits[:base])) if base else float("nan"),
    }


def bytes_per_transition() -> None:
    from shared.storage.replay_buffer import ReplayBuffer

    with tempfile.TemporaryDirectory() as d:
        for name, frames_dir in (("ram", None), ("disk", d)):
            buf = ReplayBuffer(SPEC, 6, 10_100, 0.98, -1.0, frames_dir=frames_dir)
            _fill(buf, Traffic(), 10_000, threading.Lock())
            ram = sum(a.nbytes for a in buf.frames.values())
            ram += sum(
                getattr(buf, n).nbytes
                for n in (
                    "obs_slot",
                    "actions",
                    "rewards",
                    "masks",
                    "dones",
                    "valid",
                    "mc_returns",
                    "_serial",
                    "_successor",
                )
            )
            # Allocated blocks: a segment file is created at full length but filled as frames come.
            disk = sum(f.stat().st_blocks * 512 for f in Path(d).glob("*.npy")) if frames_dir else 0
            per = buf.transitions_inserted
            print(
                f"bytes_per_transition[{name}]: {ram / per:,.0f} in RAM, {disk / per:,.0f} on disk "
                f"(10,000 transitions in episodes of 100: {buf.slots_written:,} frames slots)"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2_000, 8_000, 32_000])
    p.add_argument("--kinds", nargs="+", default=["disk", "disk_full", "ram", "snapshot"])
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    args = p.parse_args()
    bytes_per_transition()
    root = args.dir or Path(tempfile.mkdtemp(prefix="replay_storage_"))
    print(f"checkpoint after {NEW} new transitions; inserts of {CHUNK} every 10 ms meanwhile")
    print(
        f"{'kind':>9} {'buffer':>7} {'ckpt s':>7} {'MB written':>10} {'max insert wait ms':>18} {'idle insert ms':>14}"
    )
    try:
        for size in args.sizes:
            for kind in args.kinds:
                r = run(kind, size, root)
                print(
                    f"{kind:>9} {size:>7} {r['seconds']:>7.2f} {r['mb_written']:>10.1f} {r['lock_held_ms']:>12.1f} "
                    f"{r['max_insert_wait_ms']:>18.1f} {r['base_insert_ms']:>14.2f}",
                    flush=True,
                )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
