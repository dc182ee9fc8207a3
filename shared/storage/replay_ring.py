"""The replay ring: a numpy ring buffer of transitions that stores every observation frame once.

Layout (the same as the dataset file, see ``shared.data.dataset``): slot i holds the observation
*after* transition i, and ``obs_slot[i]`` points at the slot holding the observation before it.
An episode's reset observation takes one extra, non-sampleable slot. Several actors can
interleave episodes: each ``stream`` keeps its own open episode.

Derived keys (``<key>@<what>``, ``shared.data.dataset.derived_key``: a frozen trunk's features of
an image) are stored like frames; only the continuity check between chunks skips them.

When an episode ends its Monte-Carlo return-to-go is written (Cal-QL needs it); until then it
is -inf, a vacuous lower bound. Insert is thread-safe.

Image frames can live on disk (``frames_dir``: append-only memory-mapped segments,
``shared/storage/frame_store.py``) so that capacity is bounded by disk, not RAM.

This file holds the storage and the writing; the sampling rules (``shared/storage/replay_sampling.py``),
the incremental cuts (``shared/storage/replay_delta.py``) and whole-file save/load
(``shared/storage/replay_buffer.py``) build on it, and ``ReplayBuffer`` is all of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared.data.dataset import ObsSpec, Transition, is_derived
from shared.data.returns import mc_return_to_go
from shared.storage.frame_store import SegmentedFrames, segment_length

log = logging.getLogger("wsrl.replay")
MAX_STREAMS = 1024  # sources whose open episodes are tracked (actor sessions); the oldest is ended beyond


class ReplayRing:
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
        """Add a derived key (``shared.data.dataset.derived_key``) with its value for every slot
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
        of ``shared.wire.chunks``), in order, under one lock. A transition whose observation is the
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


def streams_from_json(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(k): {
            "last": int(v["last"]),
            "last_serial": int(v["last_serial"]),
            "episode": [(int(a), int(b)) for a, b in v["episode"]],
        }
        for k, v in data.items()
    }
