"""A numpy ring buffer of transitions that stores every observation frame once.

Layout (the same as the dataset file, see ``shared.dataset``): slot i holds the observation
*after* transition i, and ``obs_slot[i]`` points at the slot holding the observation before it.
An episode's reset observation takes one extra, non-sampleable slot. Several actors can
interleave episodes: each ``stream`` keeps its own open episode.

Derived keys (``<key>@<what>``, ``shared.dataset.derived_key``: a frozen trunk's features of
an image) are stored like frames; only the continuity check between chunks skips them.

When an episode ends its Monte-Carlo return-to-go is written (Cal-QL needs it); until then it
is -inf, a vacuous lower bound. Insert and sample are thread-safe.

Image frames can live on disk (``frames_dir``: append-only memory-mapped segments,
``shared/frame_store.py``) so that capacity is bounded by disk, not RAM. ``cut`` takes what
changed since the previous cut (``shared/replay_delta.py``) and ``apply`` replays it: a chain
of cuts rebuilds the buffer exactly, which is how the learner checkpoints incrementally.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared.dataset import (
    FORMAT,
    DatasetError,
    ObsSpec,
    Transition,
    is_derived,
    load_arrays,
    save_arrays,
    spec_from_json,
    spec_to_json,
)
from shared.frame_store import SegmentedFrames, segment_length
from shared.replay_delta import ReplayDelta
from shared.returns import mc_return_to_go

log = logging.getLogger("wsrl.replay")
MAX_STREAMS = 1024  # sources whose open episodes are tracked (actor sessions); the oldest is ended beyond


class ReplayBuffer:
    def __init__(
        self,
        obs_spec: ObsSpec,
        action_dim: int,
        capacity: int,
        gamma: float,
        r_neg: float | None = None,
        check_continuity: bool = True,
        frames_dir: str | Path | None = None,
        disk_keys: Collection[str] | None = None,
    ) -> None:
        """``frames_dir`` keeps the frames of ``disk_keys`` (by default every key of two or more
        dimensions: the images) in memory-mapped segments there instead of RAM."""
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.obs_spec = {k: (tuple(s), str(d)) for k, (s, d) in sorted(obs_spec.items())}
        self.action_dim = int(action_dim)
        self.capacity = int(capacity)
        self.gamma = float(gamma)
        self.r_neg = r_neg
        self.check_continuity = check_continuity
        c = self.capacity
        if frames_dir is None:
            disk_keys = ()
        elif disk_keys is None:
            disk_keys = [k for k, (s, _) in self.obs_spec.items() if len(s) >= 2]
        unknown = set(disk_keys) - set(self.obs_spec)
        if unknown:
            raise ValueError(f"disk_keys {sorted(unknown)} are not observation keys {sorted(self.obs_spec)}")
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        # Frames in RAM by slot; on disk by serial (``_serial[slot]``), never overwritten in place.
        self.frames = {k: np.zeros((c, *s), dtype=d) for k, (s, d) in self.obs_spec.items() if k not in disk_keys}
        self.disk_frames = {
            k: SegmentedFrames(frames_dir, k, s, d, segment_length(s, d, c))  # type: ignore[arg-type]
            for k, (s, d) in self.obs_spec.items()
            if k in disk_keys
        }
        self.obs_slot = np.full(c, -1, np.int64)
        self.actions = np.zeros((c, self.action_dim), np.float32)
        self.rewards = np.zeros(c, np.float32)
        self.masks = np.ones(c, np.float32)
        self.dones = np.zeros(c, bool)
        self.valid = np.zeros(c, bool)
        self.mc_returns = np.full(c, -np.inf, np.float32)
        self.intervened = np.zeros(c, bool)  # a person chose the action (actor.teleop)
        self._serial = np.full(c, -1, np.int64)  # write counter per slot, to spot overwrites
        self._successor = np.full(c, -1, np.int64)  # the transition whose obs lives here
        self._written = 0  # slots ever written
        self._inserted = 0  # transitions ever inserted
        self._streams: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.discontinuities = 0
        self.info: dict[str, Any] = {}  # the ``info`` a loaded file was saved with
        self._cut_at: int | None = None  # serial where the next incremental cut starts (None: full)
        self._finished: list[tuple[np.ndarray, np.ndarray]] = []  # (slots, serials) given returns since
        # Disk frames' CRC32 per sealed serial range [s, e), per key: a full cut reuses them rather
        # than reading every frame on disk again (20 GB at the robot preset's 200k transitions).
        self._frame_crcs: dict[str, list[tuple[int, int, int]]] = {}
        self._damaged = np.zeros(c, bool)  # slots whose disk frame failed its checksum on restore
        self.damaged_transitions = 0  # transitions dropped on restore for a damaged frame

    # ------------------------------------------------------------------------------ writing

    def __len__(self) -> int:
        """Number of sampleable transitions."""
        return int(self.valid.sum())

    @property
    def slots_written(self) -> int:
        """Slots ever written (the serial of the next frame)."""
        return self._written

    @property
    def transitions_inserted(self) -> int:
        return self._inserted

    def _write_slot(self, obs_frame: Mapping[str, np.ndarray]) -> int:
        slot = self._written % self.capacity
        # The slot's old content disappears: its transition and the one reading it as obs.
        self.valid[slot] = False
        succ = self._successor[slot]
        if succ >= 0:
            self.valid[succ] = False
            self._successor[slot] = -1
        for k, arr in self.frames.items():
            arr[slot] = obs_frame[k]
        for k, store in self.disk_frames.items():
            store.write(self._written, obs_frame[k])
            if self._written % store.length == 0:
                store.release_below(self._written - self.capacity)
        self._serial[slot] = self._written
        self._damaged[slot] = False
        self.mc_returns[slot] = -np.inf
        self._written += 1
        return slot

    def add_derived(self, key: str, frames: np.ndarray) -> None:
        """Add a derived key (``shared.dataset.derived_key``) with its value for every slot
        (``frames``: [capacity, ...], in RAM); inserts then carry it like any other key."""
        if not is_derived(key):
            raise ValueError(f"{key!r} is not a derived key (<key>@<what>)")
        if key in self.obs_spec:
            raise ValueError(f"the buffer has '{key}' already")
        if frames.shape[0] != self.capacity:
            raise ValueError(f"'{key}' has {frames.shape[0]} rows for a capacity of {self.capacity}")
        with self._lock:
            self.frames[key] = frames
            self.obs_spec = dict(sorted({**self.obs_spec, key: (tuple(frames.shape[1:]), str(frames.dtype))}.items()))

    def frame(self, key: str, slots: np.ndarray | int) -> np.ndarray:
        """Frames of ``key`` stored in ``slots`` (from RAM or disk)."""
        if key in self.frames:
            return self.frames[key][slots]
        store = self.disk_frames[key]
        if isinstance(slots, (int, np.integer)):
            return store.read_one(int(self._serial[slots]))
        return store.read(self._serial[slots])

    @property
    def keys(self) -> list[str]:
        return list(self.obs_spec)

    def _alive(self, slot: int, serial: int) -> bool:
        return slot >= 0 and self._serial[slot] == serial

    def insert(self, transition: Transition, stream: str | int = 0) -> None:
        """Add one transition: keys observations, actions, rewards, next_observations,
        masks (0 on termination) and dones (episode ended: terminal or time limit)."""
        with self._lock:
            self._insert(transition, str(stream))

    def _insert(self, t: Mapping[str, Any], stream: str) -> None:
        obs, next_obs = t["observations"], t["next_observations"]
        self._check_obs(obs, "observations")
        self._check_obs(next_obs, "next_observations")
        action = np.asarray(t["actions"], np.float32).reshape(-1)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"actions must be {self.action_dim} finite numbers, got {action!r}")
        reward = float(t["rewards"])
        if not np.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        self._append(
            obs,
            next_obs,
            action,
            reward,
            float(t["masks"]),
            bool(t["dones"]),
            stream,
            False,
            bool(t.get("intervened")),
        )

    def insert_chunk(
        self,
        frames: Mapping[str, np.ndarray],
        obs_index: np.ndarray,
        next_index: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        masks: np.ndarray,
        dones: np.ndarray,
        stream: str | int = 0,
        intervened: np.ndarray | None = None,
    ) -> None:
        """Insert consecutive transitions given as shared frames plus indices (the wire layout
        of ``shared.chunks``), in order, under one lock. A transition whose observation is the
        previous one's next observation (same frame index) is known to continue the episode,
        so only the first of a chunk is compared with the stream's last frame."""
        n = len(actions)
        for name, a in (
            ("obs_index", obs_index),
            ("next_index", next_index),
            ("rewards", rewards),
            ("masks", masks),
            ("dones", dones),
            ("intervened", np.zeros(n, bool) if intervened is None else intervened),
        ):
            if len(a) != n:
                raise ValueError(f"{name} has {len(a)} entries for {n} actions")
        actions = np.asarray(actions, np.float32)
        if actions.shape != (n, self.action_dim) or not np.isfinite(actions).all() or not np.isfinite(rewards).all():
            raise ValueError(f"actions must be [{n}, {self.action_dim}] finite numbers and rewards finite")
        self._check_obs({k: v[0] for k, v in frames.items()} if n else {}, "frames")
        num = {v.shape[0] for v in frames.values()}
        if (
            len(num) != 1
            or min(obs_index.min(), next_index.min()) < 0
            or max(obs_index.max(), next_index.max()) >= num.pop()
        ):
            raise ValueError("chunk indices point outside its frames")
        keys = self.keys
        with self._lock:
            for i in range(n):
                oi, ni = int(obs_index[i]), int(next_index[i])
                continuous = i > 0 and oi == int(next_index[i - 1]) and not dones[i - 1]
                self._append(
                    {k: frames[k][oi] for k in keys},
                    {k: frames[k][ni] for k in keys},
                    actions[i],
                    float(rewards[i]),
                    float(masks[i]),
                    bool(dones[i]),
                    str(stream),
                    continuous,
                    intervened is not None and bool(intervened[i]),
                )

    def _append(
        self,
        obs: Mapping[str, Any],
        next_obs: Mapping[str, Any],
        action: np.ndarray,
        reward: float,
        mask: float,
        done: bool,
        stream: str,
        continuous: bool,
        intervened: bool = False,
    ) -> None:
        st = self._streams.pop(stream, None) or {"last": -1, "last_serial": -1, "episode": []}
        self._streams[stream] = st  # most recently used last
        if len(self._streams) > MAX_STREAMS:  # an open episode per stream is kept: bound them
            oldest = next(iter(self._streams))
            self._finish_episode(self._streams.pop(oldest))
        prev = st["last"] if self._alive(st["last"], st["last_serial"]) else -1
        if (
            prev >= 0
            and not continuous
            and self.check_continuity
            and not all(np.array_equal(self.frame(k, prev), obs[k]) for k in self.obs_spec if not is_derived(k))
        ):
            self.discontinuities += 1
            self._finish_episode(st)
            prev = -1
        if prev < 0:
            prev = self._write_slot(obs)
            st["episode"] = []
        slot = self._write_slot(next_obs)
        self.obs_slot[slot] = prev
        self._successor[prev] = slot
        self.actions[slot] = action
        self.rewards[slot] = reward
        self.masks[slot] = mask
        self.dones[slot] = done
        self.intervened[slot] = intervened
        self.valid[slot] = True
        self._inserted += 1
        st["episode"].append((slot, int(self._serial[slot])))
        st["last"], st["last_serial"] = slot, int(self._serial[slot])
        if done:
            self._finish_episode(st)

    def drop_stream(self, stream: str) -> None:
        """Forget a stream (an actor session that will send nothing more): its open episode ends."""
        with self._lock:
            st = self._streams.pop(str(stream), None)
            if st is not None:
                self._finish_episode(st)

    def _finish_episode(self, st: dict[str, Any]) -> None:
        live = [s for s, serial in st["episode"] if self._alive(s, serial)]
        if live:
            self.mc_returns[live] = mc_return_to_go(self.rewards[live], self.gamma, self.r_neg)
            if self._cut_at is not None:  # the next cut carries the new returns of older slots
                self._finished.append((np.array(live, np.int64), self._serial[live].copy()))
        st["episode"] = []
        st["last"], st["last_serial"] = -1, -1

    def _check_obs(self, obs: Mapping[str, Any], what: str) -> None:
        if set(obs) != set(self.obs_spec):
            raise ValueError(f"{what} keys {sorted(obs)} differ from the buffer's {sorted(self.obs_spec)}")
        for k, (shape, dtype) in self.obs_spec.items():
            a = np.asarray(obs[k])
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise ValueError(f"{what}['{k}'] is {a.dtype}{list(a.shape)}, expected {dtype}{list(shape)}")

    # ----------------------------------------------------------------------------- sampling

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        leading: tuple[int, ...] = (),
        intervened_fraction: float = 0.0,
        keys: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Uniform sample of transitions; ``leading=(utd,)`` gives arrays of [utd, B, ...].
        ``keys``: the observation keys to read (default all; a learner training on cached trunk
        features leaves the images on disk).

        ``intervened_fraction``: each minibatch's first ``round(fraction * B)`` transitions are
        drawn from the intervened ones alone (a demo buffer's share, HIL-SERL style), the rest
        from all; while none is stored, all are drawn uniformly."""
        rows = int(np.prod(leading, dtype=np.int64))
        n = rows * batch_size
        with self._lock:
            idx = self._sample_indices(n, rng)
            k = round(intervened_fraction * batch_size)
            if k > 0:
                filled = min(self._written, self.capacity)
                pool = np.flatnonzero(self.valid[:filled] & self.intervened[:filled])
                if pool.size:
                    idx.reshape(rows, batch_size)[:, :k] = pool[rng.integers(0, pool.size, (rows, k))]
            batch = self._rows(idx, keys)
        shape = tuple(leading) + (batch_size,)
        return _reshape(batch, shape)

    def first(self, n: int, keys: Collection[str] | None = None) -> dict[str, Any] | None:
        """The first ``n`` transitions still stored, in arrival order (None while fewer are in):
        the learner's online probe."""
        with self._lock:
            filled = min(self._written, self.capacity)
            idx = np.flatnonzero(self.valid[:filled])
            if idx.size < n:
                return None
            if self._written > self.capacity:  # the ring wrapped: arrival order starts at the write head
                idx = np.roll(idx, -int(np.searchsorted(idx, self._written % self.capacity)))
            return self._rows(idx[:n], keys)

    def _rows(self, idx: np.ndarray, keys: Collection[str] | None) -> dict[str, Any]:
        obs_idx = self.obs_slot[idx]
        read = self.obs_spec if keys is None else keys
        return {
            "observations": {k: self.frame(k, obs_idx) for k in read},
            "next_observations": {k: self.frame(k, idx) for k in read},
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "masks": self.masks[idx],
            "dones": self.dones[idx].astype(np.float32),
            "mc_returns": self.mc_returns[idx],
        }

    def _sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        filled = min(self._written, self.capacity)
        if not self.valid[:filled].any():
            raise ValueError("cannot sample from a replay buffer with no transitions")
        idx = rng.integers(0, filled, n)
        bad = ~self.valid[idx]
        while bad.any():  # reset-observation slots are a small fraction: redraw those
            idx[bad] = rng.integers(0, filled, int(bad.sum()))
            bad = ~self.valid[idx]
        return idx

    # ------------------------------------------------------------------------ persistence

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
        buf._streams = _streams_from_json(meta.get("streams", {}))
        gamma_changed = gamma is not None and (file_gamma is None or gamma != float(file_gamma))
        r_neg_changed = r_neg is not None and r_neg != meta.get("r_neg")
        if gamma_changed or r_neg_changed:
            buf.recompute_mc_returns()
        return buf

    # ------------------------------------------------------------------- incremental cuts

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
            self._streams = _streams_from_json(st["streams"])
            self._cut_at, self._finished = delta.end, []
            self.info = dict(delta.info)

    def _streams_json(self) -> dict[str, Any]:
        return {
            k: {"last": v["last"], "last_serial": v["last_serial"], "episode": [list(e) for e in v["episode"]]}
            for k, v in self._streams.items()
        }

    def recompute_mc_returns(self) -> None:
        """Recompute returns of every finished episode by walking ``obs_slot`` back from its end."""
        with self._lock:
            filled = min(self._written, self.capacity)
            for end in np.flatnonzero(self.valid[:filled] & self.dones[:filled]):
                chain = [int(end)]
                while True:
                    prev = int(self.obs_slot[chain[-1]])
                    if prev < 0 or not self.valid[prev] or self.dones[prev]:
                        break
                    chain.append(prev)
                chain.reverse()
                self.mc_returns[chain] = mc_return_to_go(self.rewards[chain], self.gamma, self.r_neg)

    def state_frames(self) -> np.ndarray:
        """Every stored ``state`` frame (a copy), e.g. for normalisation statistics."""
        with self._lock:
            if "state" not in self.obs_spec:
                raise KeyError("this buffer's observations have no 'state' key")
            return self.frame("state", np.arange(min(self._written, self.capacity))).copy()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            filled = min(self._written, self.capacity)
            valid = self.valid[:filled]
            return {
                "transitions": int(valid.sum()),
                "episodes": int((valid & self.dones[:filled]).sum()),
                "inserted_total": self.transitions_inserted,
                "intervened": int((valid & self.intervened[:filled]).sum()),
                "discontinuities": self.discontinuities,
            }


def _reshape(tree: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(tree, dict):
        return {k: _reshape(v, shape) for k, v in tree.items()}
    return tree.reshape(shape + tree.shape[1:])


def _int_or(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _streams_from_json(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(k): {
            "last": int(v["last"]),
            "last_serial": int(v["last_serial"]),
            "episode": [(int(a), int(b)) for a, b in v["episode"]],
        }
        for k, v in data.items()
    }
