"""The learner's checkpoint: one writer and one reader for everything a resumed learner needs.

A learner checkpoint is an agent checkpoint step (``shared.storage.checkpoint``: agent, the online
config, meta) whose meta carries ``LearnerMeta`` (run identity, task, weights version, the name
of its replay chain), plus the replay buffer as a chain of incremental deltas in ``replay/``
(``shared/storage/replay_delta.py``): each checkpoint writes only what arrived since the previous one,
so its time and size do not grow with the buffer, and the chain lists the deltas that rebuild
the buffer (those not yet wholly overwritten in the ring). The delta is cut, with the ingest
ledger, under the ingest lock (a copy of the new rows: the buffer, the ledger and the counters
always agree); writing it happens after the lock is released, so acks are not held up.

No single file is shared by every kept checkpoint: a chain holds at most ``keep - 1`` deltas
before the next checkpoint starts a new one with a full cut, so the oldest kept checkpoint never
needs a file the newest needs. What a damaged file can cost is bounded too: the newest
checkpoint that shares no file with the newest one (the last one before its chain began) is
what survives any single damaged file, and that is what actors may forget (``save``'s third
result). Each delta is read back and checked after it is written.

``--resume`` restores the newest step whose agent and chain both read back and check out. A
damaged step (unreadable, truncated, deleted, a checksum that does not match) is moved to
``quarantine/`` with the reason and its own delta: the resumed learner will reach that step's id
again and must be able to save it, and rotation must never count a damaged step among the ones
it keeps. Checkpoints of older versions (a whole-buffer ``buffer_<id>.npz``) still restore.

Layout of a learner's ``--out``::

    checkpoints/<id>/{agent,config,meta}   orbax steps; id = env steps + critic steps (grows with either)
    replay/chain_<id>.json                 the deltas that rebuild step <id>'s buffer, in order
    replay/delta_<id>.npz                  what arrived between the previous checkpoint and <id>
    replay/frames/<key>_<n>.npy            image frames, with ``replay_frames_on_disk``
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import zlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learner.ledger import Ledger
from shared.config import OnlineConfig
from shared.data.dataset import DatasetError, example_obs, spec_from_json, wire_spec
from shared.learning.agents import Agent
from shared.metrics import write_json_atomic
from shared.storage.checkpoint import (
    Checkpointer,
    CheckpointError,
    CorruptCheckpointError,
    list_steps,
    load_checkpoint,
    quarantine,
    verify_file_manifest,
    write_file_manifest,
)
from shared.storage.replay_buffer import ReplayBuffer
from shared.storage.replay_delta import ReplayDelta

# OSErrors that say the read failed, not that the files are bad: never a reason to quarantine
TRANSIENT_ERRNOS = {errno.EIO, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE}
log = logging.getLogger("wsrl.learner")
STEP_FILES = (("buffer", "npz"), ("chain", "json"), ("delta", "npz"))  # replay/<kind>_<step>.<ext>


@dataclass(frozen=True)
class LearnerMeta:
    """The learner's own fields of a checkpoint's meta (``CheckpointMeta.extra``)."""

    run: str  # the learner run's identity; actors keep their journal per run
    task: str | None
    weights_version: int
    buffer: str  # in replay/: the chain (chain_<id>.json), or an older version's snapshot (.npz)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "task": self.task, "weights_version": self.weights_version, "buffer": self.buffer}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> LearnerMeta:
        try:
            task = data.get("task")
            return cls(
                str(data["run"]),
                None if task is None else str(task),
                int(data.get("weights_version", 0)),
                str(data["buffer"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: not a learner checkpoint (meta.extra: {type(e).__name__}: {e})") from e


@dataclass
class LearnerState:
    """What a resumed learner continues from."""

    agent: Agent
    config: OnlineConfig
    buffer: ReplayBuffer
    ledger: Ledger
    meta: LearnerMeta
    step: int

    @property
    def env_steps(self) -> int:
        return self.ledger.transitions()


class LearnerCheckpoints:
    """Saves and restores learner checkpoints under a run directory (keeps the newest ``keep``)."""

    def __init__(self, out_dir: str | Path, keep: int) -> None:
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.replay_dir = self.out / "replay"
        self.frames_dir = self.replay_dir / "frames"
        self.keep = keep
        self._writer: Checkpointer | None = None
        # The deltas of the last checkpoint saved or restored: the next one extends it. None: the
        # next checkpoint starts a chain with a full cut (first save, or after a failed one).
        self._chain: list[dict[str, Any]] | None = None
        # The ledgers of the newest checkpoint, and of the newest one before its chain began
        # (shares no file with it): what survives any one damaged file.
        self.last_ledger = Ledger()
        self._before_chain = Ledger()
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Half-written files of a save that was killed (each can be as large as the buffer)."""
        orphans = [*self.replay_dir.glob("*.tmp"), *self.ckpt_dir.glob("*.orbax-checkpoint-tmp*")]
        for p in orphans:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if orphans:
            log.info("removed %d half-written checkpoint file(s) of an interrupted save", len(orphans))

    def exist(self) -> bool:
        return bool(list_steps(self.ckpt_dir))

    def new_buffer(
        self, obs_spec: Any, action_dim: int, capacity: int, gamma: float, r_neg: float | None, frames_on_disk: bool
    ) -> ReplayBuffer:
        """The online buffer of a new run (its frames under replay/frames/ if ``frames_on_disk``)."""
        if frames_on_disk:
            shutil.rmtree(self.frames_dir, ignore_errors=True)  # no checkpoint refers to them
        frames = self.frames_dir if frames_on_disk else None
        return ReplayBuffer(obs_spec, action_dim, capacity, gamma, r_neg, frames_dir=frames)

    def save(
        self,
        agent: Agent,
        config: OnlineConfig,
        buffer: ReplayBuffer,
        ledger: Ledger,
        lock: AbstractContextManager[Any],
        grad_steps: int,
        run: str,
        task: str | None,
        weights_version: int,
        full: bool = False,
    ) -> tuple[int, Ledger, Ledger]:
        """Write one checkpoint; returns its id, the ledger it holds, and the ledger that
        survives any one of its files being damaged (what actors may forget). ``full``: start a
        new chain whatever the current one's length (a clean stop's last checkpoint).

        ``lock`` is the ingest lock: held only while the ledger is copied and the buffer's new
        rows are cut, so no chunk is half-inserted and the two agree."""
        full = full or self._chain is None or len(self._chain) >= max(1, self.keep - 1)
        with lock:
            committed = ledger.copy()
            env_steps = committed.transitions()
            step = env_steps + grad_steps  # grows with either counter: a unique, ordered id
            delta = buffer.cut(full=full, info={"ledger": committed.to_json(), "env_steps": env_steps})
        chain, self._chain = self._chain, None  # until this save completes, the next must be full
        buffer.seal(delta)
        name = f"delta_{step:012d}.npz"
        delta.save(self.replay_dir / name)
        ReplayDelta.load(self.replay_dir / name)  # read back (zip CRCs): a bad write fails here, not at resume
        entry = {"name": name, "start": delta.start, "end": delta.end, "files": delta.files()}
        # Deltas whose rows are all overwritten in the ring are no longer needed to rebuild it.
        before = [] if delta.state["full"] else chain or []
        new_chain = [e for e in before if e["end"] > delta.end - buffer.capacity] + [entry]
        chain_name = f"chain_{step:012d}.json"
        write_json_atomic(self.replay_dir / chain_name, {"deltas": new_chain, "crc32": _crc(new_chain)})
        if self._writer is None:
            self._writer = Checkpointer(self.ckpt_dir, keep=self.keep, async_save=False)
        meta = LearnerMeta(run, task, weights_version, chain_name)
        self._writer.save(
            agent.replace(env_steps=np.int32(env_steps)),
            example_obs(wire_spec(buffer.obs_spec)),  # the policy's observations, not the cache
            config,
            step=step,
            extra=meta.to_json(),
        )
        self._writer.manager.wait_until_finished()
        write_file_manifest(self.ckpt_dir / str(step))
        self._chain = new_chain
        if delta.state["full"]:
            self._before_chain = self.last_ledger
        self.last_ledger = committed
        self._rotate(buffer)
        return step, committed, self._before_chain

    def _rotate(self, buffer: ReplayBuffer) -> None:
        """Delete replay files no kept checkpoint needs (and, for frames, the live ring neither)."""
        needed: set[str] = set()
        for step in list_steps(self.ckpt_dir):
            chain_file = self.replay_dir / f"chain_{step:012d}.json"
            needed |= {f"buffer_{step:012d}.npz", chain_file.name}
            try:
                entries = json.loads(chain_file.read_text())["deltas"]
            except (OSError, ValueError, KeyError):
                continue
            for e in entries:
                needed.add(e["name"])
                needed.update(e["files"])
        for f in [
            *self.replay_dir.glob("buffer_*.npz"),
            *self.replay_dir.glob("delta_*.npz"),
            *self.replay_dir.glob("chain_*.json"),
        ]:
            if f.name not in needed:
                f.unlink()
        live_from = buffer.slots_written - buffer.capacity
        for store in buffer.disk_frames.values():
            for f in self.frames_dir.glob(f"{store.key}_*.npy"):
                segment = int(f.stem.rsplit("_", 1)[1])
                if f.name not in needed and (segment + 1) * store.length <= live_from:
                    f.unlink()

    def restore(self, capacity: int | None = None) -> LearnerState:
        """The newest checkpoint whose agent and replay chain both read back and check out;
        damaged newer ones are quarantined. ``capacity``: the buffer's (None: the checkpoint's). A checkpoint of something else (not a learner's, or
        another architecture) is an error, and nothing is moved."""
        errors = []
        for step in reversed(list_steps(self.ckpt_dir)):
            # The step's own replay files (shared deltas of older steps stay: those steps may be fine).
            own = tuple(self.replay_dir / f"{k}_{step:012d}.{x}" for k, x in STEP_FILES)
            try:
                verify_file_manifest(self.ckpt_dir / str(step))
                ck = load_checkpoint(self.ckpt_dir, step)
                meta = LearnerMeta.from_json(ck.meta.extra, str(ck.path))
                config = ck.phase_config(OnlineConfig)
                if meta.buffer.endswith(".npz"):  # an older version's whole-buffer snapshot
                    buffer = ReplayBuffer.load(self.replay_dir / meta.buffer, capacity=capacity)
                else:
                    buffer = self._rebuild(self.replay_dir / meta.buffer, capacity)
                ledger = Ledger(buffer.info["ledger"])
                # Just read back and checked: durable. The next save starts a chain of its own,
                # so a file this step shares with older ones never holds anything newer.
                self._chain = None
                self.last_ledger = ledger.copy()
                return LearnerState(ck.agent, config, buffer, ledger, meta, step)
            except OSError as e:
                if e.errno in TRANSIENT_ERRNOS:
                    # A read that failed (EIO, a permission, a full disk, a network mount) says
                    # nothing about the files: move nothing, and let the operator try again.
                    raise CheckpointError(
                        f"{self.ckpt_dir}: reading checkpoint {step} failed ({type(e).__name__}: {e}); nothing "
                        "was moved: fix the cause and --resume again"
                    ) from e
                errors.append(f"step {step}: {e}")
                quarantine(self.ckpt_dir, step, f"{type(e).__name__}: {e}", also=own)
            except (CorruptCheckpointError, DatasetError, KeyError) as e:
                errors.append(f"step {step}: {e}")
                quarantine(self.ckpt_dir, step, f"{type(e).__name__}: {e}", also=own)
            except CheckpointError as e:
                errors.append(f"step {step}: {e}")
                log.warning("learner checkpoint %d is unusable (%s); trying an older one", step, e)
        raise CheckpointError(f"{self.ckpt_dir}: no usable learner checkpoint:\n  " + "\n  ".join(errors))

    def _rebuild(self, chain_file: Path, capacity: int | None) -> ReplayBuffer:
        try:
            data = json.loads(chain_file.read_text())
            entries = list(data["deltas"])
        except ValueError as e:
            raise DatasetError(f"{chain_file}: unreadable ({e})") from e
        # A flipped digit in a name or a serial can still be valid JSON (older chains have no crc32).
        if "crc32" in data and data["crc32"] != _crc(entries):
            raise DatasetError(f"{chain_file}: fails its checksum (damaged)")
        if not entries:
            raise DatasetError(f"{chain_file}: lists no deltas")
        buffer: ReplayBuffer | None = None
        for entry in entries:
            path = self.replay_dir / entry["name"]
            delta = ReplayDelta.load(path)
            if buffer is None:
                if capacity is not None and delta.capacity != capacity:
                    raise ValueError(
                        f"{self.out} was checkpointed with a replay capacity of {delta.capacity}; resume "
                        f"with that capacity (asked for {capacity}): the ring's layout depends on it"
                    )
                buffer = ReplayBuffer(
                    spec_from_json(delta.obs_spec),
                    int(delta.arrays["actions"].shape[1]),
                    delta.capacity,
                    float(delta.state["gamma"]),
                    delta.state["r_neg"],
                    frames_dir=self.frames_dir if delta.disk else None,
                    disk_keys=list(delta.disk),
                )
            buffer.apply(delta, str(path))
        assert buffer is not None
        first = entries[0]
        if first["start"] > max(0, entries[-1]["end"] - buffer.capacity):
            raise DatasetError(f"{chain_file}: its deltas begin at serial {first['start']}: older rows are missing")
        return buffer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _crc(entries: list[dict[str, Any]]) -> int:
    return zlib.crc32(json.dumps(entries, sort_keys=True).encode())
