"""The replay buffer: the ring (``shared/storage/replay_ring.py``), its sampling rules
(``shared/storage/replay_sampling.py``) and its incremental cuts (``shared/storage/replay_delta.py``), with
whole-file save and load in the dataset format (``shared/data/dataset.py``).

``cut`` takes what changed since the previous cut and ``apply`` replays it: a chain of cuts
rebuilds the buffer exactly, which is how the learner checkpoints incrementally; ``save`` and
``load`` write and read the whole buffer (datasets, snapshots).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared.data.dataset import FORMAT, DatasetError, load_arrays, save_arrays, spec_from_json, spec_to_json
from shared.storage.replay_delta import RingDeltas
from shared.storage.replay_ring import MAX_STREAMS, ReplayRing, streams_from_json
from shared.storage.replay_sampling import RingSampling

__all__ = ["MAX_STREAMS", "ReplayBuffer", "ReplayRing"]


class ReplayBuffer(RingSampling, RingDeltas):
    """Transitions for training: insert (one, or a chunk from an actor), sample, save and load,
    cut and apply. Insert and sample are thread-safe."""

    def _meta(self, info: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "obs_spec": spec_to_json(self.obs_spec),
            "action_dim": self.action_dim,
            "capacity": self.capacity,
            "gamma": self.gamma,
            "r_neg": self.r_neg,
            "written": self._written,
            "inserted": self.transitions_inserted,
            "streams": self._streams_json(),
            "info": dict(info or {}),
        }

    def save(self, path: str | Path, info: Mapping[str, Any] | None = None) -> Path:
        """Write the whole buffer (including open episodes) in the dataset format."""
        with self._lock:
            filled = min(self._written, self.capacity)
            arrays = {f"obs/{k}": self.frame(k, np.arange(filled)) for k in self.obs_spec}
            arrays.update(
                obs_slot=self.obs_slot[:filled],
                actions=self.actions[:filled],
                rewards=self.rewards[:filled],
                masks=self.masks[:filled],
                dones=self.dones[:filled],
                valid=self.valid[:filled],
                mc_returns=self.mc_returns[:filled],
                intervened=self.intervened[:filled],
                serial=self._serial[:filled],
            )
            return save_arrays(path, arrays, self._meta(info))

    @classmethod
    def load(
        cls,
        path: str | Path,
        capacity: int | None = None,
        gamma: float | None = None,
        r_neg: float | None = None,
    ) -> ReplayBuffer:
        """Load a dataset or snapshot. Passing ``gamma`` (and ``r_neg``) different from the
        file's recomputes the Monte-Carlo returns for that discount."""
        arrays, meta = load_arrays(path)
        n = arrays["valid"].shape[0]
        spec = spec_from_json(meta["obs_spec"])
        file_gamma = meta.get("gamma")
        buf = cls(
            spec,
            int(meta["action_dim"]),
            capacity or max(_int_or(meta.get("capacity"), n), n),
            gamma if gamma is not None else float(file_gamma if file_gamma is not None else 0.99),
            r_neg if r_neg is not None else meta.get("r_neg"),
        )
        if buf.capacity < n:
            raise DatasetError(f"{path}: holds {n} slots, more than capacity {buf.capacity}")
        written = _int_or(meta.get("written"), n)
        if written > n and buf.capacity != n:
            # A wrapped ring must keep its slot positions: only the same capacity restores it.
            raise DatasetError(f"{path}: a wrapped buffer of capacity {n} cannot change capacity")
        for k in buf.frames:
            buf.frames[k][:n] = arrays[f"obs/{k}"]
        for name in ("obs_slot", "actions", "rewards", "masks", "dones", "valid", "mc_returns", "intervened"):
            getattr(buf, name)[:n] = arrays[name]
        buf._serial[:n] = arrays["serial"] if "serial" in arrays else np.arange(n)
        valid_slots = np.flatnonzero(buf.valid[:n])
        buf._successor[buf.obs_slot[valid_slots]] = valid_slots
        buf._written = written
        buf.info = dict(meta.get("info") or {})
        buf._inserted = int(meta.get("inserted", valid_slots.size))
        buf._streams = streams_from_json(meta.get("streams", {}))
        gamma_changed = gamma is not None and (file_gamma is None or gamma != float(file_gamma))
        r_neg_changed = r_neg is not None and r_neg != meta.get("r_neg")
        if gamma_changed or r_neg_changed:
            buf.recompute_mc_returns()
        return buf


def _int_or(value: Any, default: int) -> int:
    return default if value is None else int(value)
