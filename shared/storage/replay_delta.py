"""What a replay buffer gained since its previous cut: the unit of an incremental checkpoint.

A delta holds the rows of the slots written in serials [start, end) (actions, rewards, masks,
dones, the observation-slot links, returns, and the RAM-held frames), the returns given since the
previous cut to older slots (episodes that ended after spanning it), and the buffer's small
state (counters, open episodes). Frames kept on disk are not copied: the delta names their
segment files and their CRC32. Applying a chain of deltas in order to an empty buffer of the
same capacity rebuilds it exactly (``RingDeltas.cut`` / ``RingDeltas.apply``, below: the part of
``ReplayBuffer`` that makes and replays deltas, with the checksums of the frames on disk).

On disk a delta is one ``.npz`` in the dataset format's container (``shared.data.dataset``), so it is
written atomically and zip's CRC catches a damaged file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.data.dataset import DatasetError, rename_legacy, save_arrays, spec_to_json
from shared.storage.replay_ring import ReplayRing, streams_from_json

log = logging.getLogger("wsrl.replay")

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


class RingDeltas(ReplayRing):
    """Incremental cuts of a replay ring and their replay."""

    def cut(self, full: bool = False, info: Mapping[str, Any] | None = None) -> ReplayDelta:
        """What changed since the previous cut (everything live if ``full`` or the first cut).

        Cheap (a copy of the new rows' small arrays and RAM frames), so it can run under the
        ingest lock; frames on disk are not read here (``seal`` does that, outside the lock)."""
        with self._lock:
            end = self._written
            full = full or self._cut_at is None
            start = max(end - self.capacity, 0 if full else self._cut_at or 0)
            serials = np.arange(start, end, dtype=np.int64)
            slots = serials % self.capacity
            arrays: dict[str, np.ndarray] = {f"obs/{k}": f[slots] for k, f in self.frames.items()}
            arrays.update(
                obs_slot=self.obs_slot[slots],
                actions=self.actions[slots],
                rewards=self.rewards[slots],
                masks=self.masks[slots],
                dones=self.dones[slots],
                # Valid at the cut means inserted as a transition: a slot that is invalid now
                # never becomes valid again, so it can be replayed as a plain frame slot.
                transition=self.valid[slots],
                mc_returns=self.mc_returns[slots],
                intervened=self.intervened[slots],
            )
            ev_slots = np.concatenate([a for a, _ in self._finished]) if self._finished else np.zeros(0, np.int64)
            ev_serials = np.concatenate([b for _, b in self._finished]) if self._finished else np.zeros(0, np.int64)
            alive = (self._serial[ev_slots] == ev_serials) & (ev_serials < start)
            arrays.update(
                mc_slot=ev_slots[alive], mc_serial=ev_serials[alive], mc_value=self.mc_returns[ev_slots[alive]]
            )
            self._finished = []
            self._cut_at = end
            state = {
                "full": full,  # a chain's first delta: it needs none before it
                "gamma": self.gamma,
                "r_neg": self.r_neg,
                "written": self._written,
                "inserted": self._inserted,
                "discontinuities": self.discontinuities,
                "streams": self._streams_json(),
            }
        disk = {k: {"length": d.length, "files": d.files(start, end)} for k, d in self.disk_frames.items()}
        return ReplayDelta(
            start, end, self.capacity, spec_to_json(self.obs_spec), arrays, state, disk, dict(info or {})
        )

    def seal(self, delta: ReplayDelta) -> None:
        """Make the delta's disk frames durable and record their checksums (outside any lock:
        rows below the write counter are never written again). The checksums are per serial
        range: ranges sealed (or verified) before are reused, only new frames are read."""
        for k, d in self.disk_frames.items():
            d.flush(delta.start, delta.end)
            # Known ranges (sorted, disjoint) inside the delta are reused; the gaps are read.
            ranges: list[tuple[int, int, int]] = []
            at = delta.start
            for s, e, crc in self._frame_crcs.get(k, []):
                if s < at or e > delta.end:
                    continue
                if at < s:
                    ranges.append((at, s, d.checksum(at, s)))
                ranges.append((s, e, crc))
                at = e
            if at < delta.end:
                ranges.append((at, delta.end, d.checksum(at, delta.end)))
            delta.disk[k]["ranges"] = [list(r) for r in ranges]
            self._remember_crcs(k, ranges)

    def _remember_crcs(self, key: str, ranges: list[tuple[int, int, int]]) -> None:
        # Sorted and disjoint; a range the ring has begun to overwrite can never lie inside a
        # later cut, so it is dropped.
        live_from = self._written - self.capacity
        merged = {(s, e): c for s, e, c in [*self._frame_crcs.get(key, []), *ranges] if s >= live_from}
        kept: list[tuple[int, int, int]] = []
        for (s, e), c in sorted(merged.items()):
            if not kept or s >= kept[-1][1]:
                kept.append((s, e, c))
        self._frame_crcs[key] = kept

    def apply(self, delta: ReplayDelta, where: str = "replay delta") -> None:
        """Replay a delta cut from a buffer of this layout, after the deltas before it."""
        if delta.capacity != self.capacity or delta.obs_spec != spec_to_json(self.obs_spec):
            raise DatasetError(
                f"{where}: cut from a buffer of capacity {delta.capacity} with observations "
                f"{delta.obs_spec}, not {self.capacity} with {spec_to_json(self.obs_spec)}"
            )
        if sorted(delta.disk) != sorted(self.disk_frames):
            raise DatasetError(
                f"{where}: frames on disk for {sorted(delta.disk)}, this buffer {sorted(self.disk_frames)}"
            )
        # A chain may begin past serial 0 (its older deltas were wholly overwritten), and a delta of
        # a whole ring needs nothing before it; otherwise rows must follow on.
        if 0 < self._written < delta.start and delta.rows < self.capacity:
            raise DatasetError(f"{where}: starts at serial {delta.start}, the buffer holds {self._written}: a gap")
        # Frames of a range whose checksum fails (or whose segment is gone) are lost, not the
        # whole chain: the transitions reading them are dropped and counted (``damaged_transitions``).
        damaged: list[tuple[int, int]] = []
        for k, d in self.disk_frames.items():
            missing = {f for f in delta.disk[k]["files"] if not (d.directory / f).exists()}
            if d.length != int(delta.disk[k]["length"]):
                raise DatasetError(f"{where}: '{k}' segments of {delta.disk[k]['length']} frames, expected {d.length}")
            if "ranges" in delta.disk[k]:
                ranges = [(int(s), int(e), int(c)) for s, e, c in delta.disk[k]["ranges"]]
            elif "crc" in delta.disk[k]:  # an older version's single checksum
                ranges = [(delta.start, delta.end, int(delta.disk[k]["crc"]))]
            else:
                ranges = []
            # contiguous: start = s0, each e = the next s, the last e = end
            bounds = [delta.start] + [x for s, e, _ in ranges for x in (s, e)] + [delta.end]
            if (delta.rows and not ranges) or any(bounds[i] != bounds[i + 1] for i in range(0, len(bounds), 2)):
                raise DatasetError(f"{where}: the checksums of '{k}' do not cover the delta's frames")
            good = []
            for s, e, c in ranges:
                if {d.path(g).name for g in d.segments(s, e)} & missing:
                    damaged.append((s, e))  # reading would create the segment afresh: never touched
                    continue
                try:
                    ok = d.checksum(s, e) == c
                except (OSError, ValueError):  # a truncated or rewritten segment file
                    ok = False
                if ok:
                    good.append((s, e, c))
                else:
                    damaged.append((s, e))
            self._remember_crcs(k, good)
        if damaged:
            log.error(
                "%s: frames on disk of serials %s are damaged or missing; their transitions are dropped",
                where,
                ", ".join(f"{s}..{e - 1}" for s, e in sorted(set(damaged))),
            )
        lost = np.zeros(delta.rows, bool)
        for s, e in damaged:
            lost[max(s - delta.start, 0) : max(e - delta.start, 0)] = True
        a = delta.arrays
        with self._lock:
            for i in range(delta.rows):
                serial = delta.start + i
                slot = serial % self.capacity
                self.valid[slot] = False  # the old occupant and the transition reading it go
                succ = self._successor[slot]
                if succ >= 0:
                    self.valid[succ] = False
                    self._successor[slot] = -1
                self._serial[slot] = serial
                self.obs_slot[slot] = a["obs_slot"][i]
                self._damaged[slot] = lost[i]
                if a["transition"][i]:
                    if lost[i] or self._damaged[a["obs_slot"][i]]:
                        self.damaged_transitions += 1
                    else:
                        self.valid[slot] = True
                        self._successor[a["obs_slot"][i]] = slot
            slots = np.arange(delta.start, delta.end, dtype=np.int64) % self.capacity
            for k, f in self.frames.items():
                f[slots] = a[f"obs/{k}"]
            for name in ("actions", "rewards", "masks", "dones", "mc_returns", "intervened"):
                getattr(self, name)[slots] = a[name]
            ok = self._serial[a["mc_slot"]] == a["mc_serial"]
            self.mc_returns[a["mc_slot"][ok]] = a["mc_value"][ok]
            st = delta.state
            self._written, self._inserted = int(st["written"]), int(st["inserted"])
            self.discontinuities = int(st["discontinuities"])
            self._streams = streams_from_json(st["streams"])
            self._cut_at, self._finished = delta.end, []
            self.info = dict(delta.info)
