"""What a replay buffer gained since its previous cut: the unit of an incremental checkpoint.

A delta holds the rows of the slots written in serials [start, end) (actions, rewards, masks,
dones, the observation-slot links, returns, and the RAM-held frames), the returns given since the
previous cut to older slots (episodes that ended after spanning it), and the buffer's small
state (counters, open episodes). Frames kept on disk are not copied: the delta names their
segment files and their CRC32. Applying a chain of deltas in order to an empty buffer of the
same capacity rebuilds it exactly (``ReplayBuffer.cut`` / ``ReplayBuffer.apply``).

On disk a delta is one ``.npz`` in the dataset format's container (``shared.dataset``), so it is
written atomically and zip's CRC catches a damaged file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.dataset import DatasetError, rename_legacy, save_arrays

DELTA_FORMAT = "wsrl-replay-delta-1"
ROWS = ("obs_slot", "actions", "rewards", "masks", "dones", "transition", "mc_returns", "intervened")
EVENTS = ("mc_slot", "mc_serial", "mc_value")


@dataclass
class ReplayDelta:
    start: int  # first serial (write counter) of the rows
    end: int  # one past the last: the buffer's write counter at the cut
    capacity: int
    obs_spec: dict[str, Any]  # spec_to_json of the buffer's observations
    arrays: dict[str, np.ndarray]  # ROWS and "obs/<key>" (RAM keys) with end - start rows; EVENTS
    state: dict[str, Any]  # counters and open episodes at the cut
    disk: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> length, crc, files
    info: dict[str, Any] = field(default_factory=dict)  # the caller's (the learner's ledger)

    @property
    def rows(self) -> int:
        return self.end - self.start

    def files(self) -> list[str]:
        """The frame segment files this delta's rows live in."""
        return sorted({f for d in self.disk.values() for f in d["files"]})

    def save(self, path: str | Path) -> Path:
        meta = {
            "format": DELTA_FORMAT,
            "start": self.start,
            "end": self.end,
            "capacity": self.capacity,
            "obs_spec": self.obs_spec,
            "state": self.state,
            "disk": self.disk,
            "info": self.info,
        }
        return save_arrays(path, self.arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> ReplayDelta:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # a truncated zip, a bad CRC, not an npz at all
            raise DatasetError(f"{path}: unreadable replay delta ({type(e).__name__}: {e})") from e
        meta = _meta(arrays.pop("meta", None), path)
        rename_legacy(arrays)
        try:
            start, end, capacity = int(meta["start"]), int(meta["end"]), int(meta["capacity"])
            delta = cls(start, end, capacity, dict(meta["obs_spec"]), arrays, dict(meta["state"]))
            delta.disk, delta.info = dict(meta.get("disk") or {}), dict(meta.get("info") or {})
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{path}: replay delta meta lacks {e}") from e
        n = delta.rows
        ram_keys = [k for k in delta.obs_spec if k not in delta.disk]
        for name in (*ROWS, *(f"obs/{k}" for k in ram_keys)):
            if name not in arrays or arrays[name].shape[:1] != (n,):
                got = arrays[name].shape if name in arrays else "nothing"
                raise DatasetError(f"{path}: '{name}' should have {n} rows, has {got}")
        m = {arrays[name].shape for name in EVENTS if name in arrays}
        if len(m) != 1 or len(m.pop()) != 1:
            raise DatasetError(f"{path}: the return events {EVENTS} are missing or disagree in length")
        return delta


def _meta(raw: np.ndarray | None, path: Path) -> dict[str, Any]:
    if raw is None:
        raise DatasetError(f"{path}: not a replay delta (no meta)")
    meta = json.loads(str(raw))
    if meta.get("format") != DELTA_FORMAT:
        raise DatasetError(f"{path}: format {meta.get('format')!r}, expected {DELTA_FORMAT!r}")
    return dict(meta)
