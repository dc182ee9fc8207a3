"""The learner's checkpoint: one writer and one reader for everything a resumed learner needs.

A learner checkpoint is an agent checkpoint step (``shared.checkpoint``: agent, the online
config, meta) whose meta carries ``LearnerMeta`` (run identity, task, weights version, the name
of the replay snapshot), plus that replay snapshot in ``replay/`` (the online buffer with the
ingest ledger inside it). Both are written together under the ingest lock, so the buffer, the
ledger and the counters always agree; ``--resume`` restores the newest step whose agent and
snapshot both read back and check out. A damaged step (unreadable, truncated, deleted, a
checksum that does not match) is moved to ``quarantine/`` with the reason, with its snapshot:
the resumed learner will reach that step's id again and must be able to save it, and rotation
must never count a damaged step among the ones it keeps.

Layout of a learner's ``--out``::

    checkpoints/<id>/{agent,config,meta}   orbax steps; id = env steps + critic steps (grows with either)
    replay/buffer_<id>.npz                 the replay snapshot of step <id> (shared/dataset.py format)
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learner.ledger import Ledger
from shared.agents import Agent
from shared.checkpoint import (
    Checkpointer,
    CheckpointError,
    CorruptCheckpointError,
    list_steps,
    load_checkpoint,
    quarantine,
)
from shared.config import OnlineConfig
from shared.dataset import DatasetError, example_obs
from shared.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.learner")


@dataclass(frozen=True)
class LearnerMeta:
    """The learner's own fields of a checkpoint's meta (``CheckpointMeta.extra``)."""

    run: str  # the learner run's identity; actors keep their journal per run
    task: str | None
    weights_version: int
    buffer: str  # file name of the replay snapshot in replay/

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
        self.keep = keep
        self._writer: Checkpointer | None = None
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

    def save(
        self,
        agent: Agent,
        config: OnlineConfig,
        buffer: ReplayBuffer,
        ledger: Ledger,
        lock: threading.Lock,
        grad_steps: int,
        run: str,
        task: str | None,
        weights_version: int,
    ) -> tuple[int, Ledger]:
        """Write one checkpoint; returns its id and the ledger it holds (what is now committed).

        ``lock`` is the ingest lock: held while the buffer and the ledger are snapshotted, so no
        chunk is half-inserted and the two agree."""
        with lock:
            committed = ledger.copy()
            env_steps = committed.transitions()
            step = env_steps + grad_steps  # grows with either counter: a unique, ordered id
            name = f"buffer_{step:012d}.npz"
            buffer.save(self.replay_dir / name, info={"ledger": committed.to_json(), "env_steps": env_steps})
        if self._writer is None:
            self._writer = Checkpointer(self.ckpt_dir, keep=self.keep, async_save=False)
        meta = LearnerMeta(run, task, weights_version, name)
        self._writer.save(
            agent.replace(env_steps=np.int32(env_steps)),
            example_obs(buffer.obs_spec),
            config,
            step=step,
            extra=meta.to_json(),
        )
        self._writer.manager.wait_until_finished()
        keep = {f"buffer_{s:012d}.npz" for s in list_steps(self.ckpt_dir)}
        for f in self.replay_dir.glob("buffer_*.npz"):
            if f.name not in keep:
                f.unlink()
        return step, committed

    def restore(self, capacity: int) -> LearnerState:
        """The newest checkpoint whose agent and replay snapshot both read back and check out;
        damaged newer ones are quarantined. A checkpoint of something else (not a learner's, or
        another architecture) is an error, and nothing is moved."""
        errors = []
        for step in reversed(list_steps(self.ckpt_dir)):
            snapshot = self.replay_dir / f"buffer_{step:012d}.npz"
            try:
                ck = load_checkpoint(self.ckpt_dir, step)
                meta = LearnerMeta.from_json(ck.meta.extra, str(ck.path))
                snapshot = self.replay_dir / meta.buffer
                buffer = ReplayBuffer.load(snapshot, capacity=capacity)
                ledger = Ledger(buffer.info["ledger"])
                config = ck.phase_config(OnlineConfig)
                return LearnerState(ck.agent, config, buffer, ledger, meta, step)
            except (CorruptCheckpointError, DatasetError, KeyError, OSError) as e:
                errors.append(f"step {step}: {e}")
                quarantine(self.ckpt_dir, step, f"{type(e).__name__}: {e}", also=(snapshot,))
            except CheckpointError as e:
                errors.append(f"step {step}: {e}")
                log.warning("learner checkpoint %d is unusable (%s); trying an older one", step, e)
        raise CheckpointError(f"{self.ckpt_dir}: no usable learner checkpoint:\n  " + "\n  ".join(errors))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
