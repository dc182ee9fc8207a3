"""Agent snapshots to roll back to, the run's event log, and rollback requests.

- ``Snapshots``: the agent with its optimiser state at every learner checkpoint, in
  ``<out>/snapshots/<critic step>``, scored by the success rate of the episodes before it; the
  hand-off agent is snapshot 0 (the reference for the KL measures too).
- ``events.jsonl`` in the learner's ``--out``: every alarm, its clearing and every rollback, one
  JSON object per line, synced as written.
- ``rollback_request.json``: how ``launch/rollback.sh`` asks a running learner for a rollback.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.config import OnlineConfig
from shared.learning.agents import Agent
from shared.metrics import write_json_atomic
from shared.storage.checkpoint import Checkpointer, list_steps, load_checkpoint

log = logging.getLogger("wsrl.health")

EVENTS_FILE = "events.jsonl"
REQUEST_FILE = "rollback_request.json"
SNAPSHOTS_DIR = "snapshots"


class Snapshots:
    """Agents to roll back to, in ``<out>/snapshots/<critic step>`` (agent with its optimiser
    state, the online config, meta), and an index of their scores. Step 0 is the hand-off agent,
    always kept; of the rest the newest ``keep``, the best-scoring one, and the best-scoring of
    those older than the newest ``keep``."""

    def __init__(self, out_dir: str | Path, keep: int) -> None:
        self.dir = Path(out_dir) / SNAPSHOTS_DIR
        self.keep = keep
        self.ckpt = Checkpointer(self.dir, keep=10**9, async_save=False)
        self.index_file = self.dir / "index.json"
        self.index: dict[int, dict[str, Any]] = {}
        if self.index_file.exists():
            self.index = {int(k): v for k, v in json.loads(self.index_file.read_text()).items()}
        present = set(list_steps(self.dir))
        self.index = {s: v for s, v in self.index.items() if s in present}

    def save(
        self,
        agent: Agent,
        obs_example: Mapping[str, Any],
        cfg: OnlineConfig,
        step: int,
        info: Mapping[str, Any],
    ) -> None:
        """``info``: env_steps, weights_version and score (the success window before it, or None)."""
        if step in self.index:
            return
        self.ckpt.save(agent, obs_example, cfg, step=step, extra={"snapshot": dict(info)})
        self.index[step] = dict(info)
        self._rotate()
        write_json_atomic(self.index_file, {str(k): v for k, v in sorted(self.index.items())})

    def _rotate(self) -> None:
        rest = sorted(s for s in self.index if s != 0)
        keep = set(rest[-self.keep :])
        if (b := self.best()) is not None:
            keep.add(b)
        # and the best of the older ones: an alarm's evidence can reach back past the newest (a
        # rollback goes to before it), where the best overall is usually one of the newest too
        older = [(self.index[s]["score"], s) for s in rest[: -self.keep] if self.index[s].get("score") is not None]
        if older:
            keep.add(max(older)[1])
        for s in rest:
            if s not in keep:
                self.ckpt.manager.delete(s)
                del self.index[s]

    def best(self, before_env_steps: int | None = None) -> int | None:
        """The best-scoring snapshot (the newest of equals), of those saved at or before
        ``before_env_steps``; None when none has a score."""
        scored = [
            (v["score"], s)
            for s, v in self.index.items()
            if v.get("score") is not None and (before_env_steps is None or v["env_steps"] <= before_env_steps)
        ]
        return max(scored)[1] if scored else None

    def load(self, step: int) -> Agent:
        if step not in self.index:
            raise KeyError(f"no snapshot {step}; have {sorted(self.index)}")
        return load_checkpoint(self.dir, step).agent

    def listing(self) -> dict[str, dict[str, Any]]:
        return {str(k): v for k, v in sorted(self.index.items())}

    def close(self) -> None:
        self.ckpt.close()


# ------------------------------------------------------------------------------------- events


def write_event(out_dir: str | Path, event: Mapping[str, Any]) -> None:
    """One line in ``events.jsonl``, flushed and synced: the operator's record of the run."""
    with open(Path(out_dir) / EVENTS_FILE, "a") as f:
        f.write(json.dumps({"time": time.time(), **event}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_events(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / EVENTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def request_rollback(out_dir: str | Path, step: int | None) -> Path:
    """Ask the learner running in ``out_dir`` to roll back to snapshot ``step`` (None: the best)."""
    path = Path(out_dir) / REQUEST_FILE
    write_json_atomic(path, {"to": step, "time": time.time()})
    return path


def take_request(out_dir: str | Path) -> dict[str, Any] | None:
    """A pending rollback request, removed as it is read (None: none, or unreadable: logged)."""
    path = Path(out_dir) / REQUEST_FILE
    if not path.exists():
        return None
    try:
        req = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.error("ignoring an unreadable rollback request %s: %s", path, e)
        req = None
    path.unlink(missing_ok=True)
    if req is not None and not (req.get("to") is None or isinstance(req.get("to"), int)):
        log.error("ignoring a rollback request whose 'to' is not a step: %r", req.get("to"))
        return None
    return req
