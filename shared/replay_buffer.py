"""A numpy ring buffer of transitions that stores every observation frame once.

Layout (the same as the dataset file, see ``shared.dataset``): slot i holds the observation
*after* transition i, and ``obs_slot[i]`` points at the slot holding the observation before it.
An episode's reset observation takes one extra, non-sampleable slot. Several actors can
interleave episodes: each ``stream`` keeps its own open episode.

When an episode ends its Monte-Carlo return-to-go is written (Cal-QL needs it); until then it
is -inf, a vacuous lower bound. Insert and sample are thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared.dataset import (
    FORMAT,
    DatasetError,
    ObsSpec,
    Transition,
    load_arrays,
    save_arrays,
    spec_from_json,
    spec_to_json,
)
from shared.returns import mc_return_to_go

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
    ) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.obs_spec = {k: (tuple(s), str(d)) for k, (s, d) in sorted(obs_spec.items())}
        self.action_dim = int(action_dim)
        self.capacity = int(capacity)
        self.gamma = float(gamma)
        self.r_neg = r_neg
        self.check_continuity = check_continuity
        c = self.capacity
        self.frames = {k: np.zeros((c, *s), dtype=d) for k, (s, d) in self.obs_spec.items()}
        self.obs_slot = np.full(c, -1, np.int64)
        self.actions = np.zeros((c, self.action_dim), np.float32)
        self.rewards = np.zeros(c, np.float32)
        self.masks = np.ones(c, np.float32)
        self.dones = np.zeros(c, bool)
        self.valid = np.zeros(c, bool)
        self.mc_returns = np.full(c, -np.inf, np.float32)
        self._serial = np.full(c, -1, np.int64)  # write counter per slot, to spot overwrites
        self._successor = np.full(c, -1, np.int64)  # the transition whose obs lives here
        self._written = 0  # slots ever written
        self._inserted = 0  # transitions ever inserted
        self._streams: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.discontinuities = 0
        self.info: dict[str, Any] = {}  # the ``info`` a loaded file was saved with

    # ------------------------------------------------------------------------------ writing

    def __len__(self) -> int:
        """Number of sampleable transitions."""
        return int(self.valid.sum())

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
        self._serial[slot] = self._written
        self.mc_returns[slot] = -np.inf
        self._written += 1
        return slot

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
        self._append(obs, next_obs, action, reward, float(t["masks"]), bool(t["dones"]), stream, False)

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
        keys = list(self.frames)
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
            and not all(np.array_equal(self.frames[k][prev], obs[k]) for k in self.frames)
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
        st["episode"] = []
        st["last"], st["last_serial"] = -1, -1

    def _check_obs(self, obs: Mapping[str, Any], what: str) -> None:
        if set(obs) != set(self.frames):
            raise ValueError(f"{what} keys {sorted(obs)} differ from the buffer's {sorted(self.frames)}")
        for k, (shape, dtype) in self.obs_spec.items():
            a = np.asarray(obs[k])
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise ValueError(f"{what}['{k}'] is {a.dtype}{list(a.shape)}, expected {dtype}{list(shape)}")

    # ----------------------------------------------------------------------------- sampling

    def sample(self, batch_size: int, rng: np.random.Generator, leading: tuple[int, ...] = ()) -> dict[str, Any]:
        """Uniform sample of transitions; ``leading=(utd,)`` gives arrays of [utd, B, ...]."""
        n = int(np.prod(leading, dtype=np.int64)) * batch_size
        with self._lock:
            idx = self._sample_indices(n, rng)
            batch = {
                "observations": {k: f[self.obs_slot[idx]] for k, f in self.frames.items()},
                "next_observations": {k: f[idx] for k, f in self.frames.items()},
                "actions": self.actions[idx],
                "rewards": self.rewards[idx],
                "masks": self.masks[idx],
                "dones": self.dones[idx].astype(np.float32),
                "mc_returns": self.mc_returns[idx],
            }
        shape = tuple(leading) + (batch_size,)
        return _reshape(batch, shape)

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
            "streams": self._streams,
            "info": dict(info or {}),
        }

    def save(self, path: str | Path, info: Mapping[str, Any] | None = None) -> Path:
        """Write the whole buffer (including open episodes) in the dataset format."""
        with self._lock:
            filled = min(self._written, self.capacity)
            arrays = {f"obs/{k}": v[:filled] for k, v in self.frames.items()}
            arrays.update(
                obs_slot=self.obs_slot[:filled],
                actions=self.actions[:filled],
                rewards=self.rewards[:filled],
                masks=self.masks[:filled],
                dones=self.dones[:filled],
                valid=self.valid[:filled],
                mc_returns=self.mc_returns[:filled],
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
        for name in ("obs_slot", "actions", "rewards", "masks", "dones", "valid", "mc_returns"):
            getattr(buf, name)[:n] = arrays[name]
        buf._serial[:n] = arrays["serial"] if "serial" in arrays else np.arange(n)
        valid_slots = np.flatnonzero(buf.valid[:n])
        buf._successor[buf.obs_slot[valid_slots]] = valid_slots
        buf._written = written
        buf.info = dict(meta.get("info") or {})
        buf._inserted = int(meta.get("inserted", valid_slots.size))
        buf._streams = {
            str(k): {
                "last": int(v["last"]),
                "last_serial": int(v["last_serial"]),
                "episode": [tuple(e) for e in v["episode"]],
            }
            for k, v in meta.get("streams", {}).items()
        }
        gamma_changed = gamma is not None and (file_gamma is None or gamma != float(file_gamma))
        r_neg_changed = r_neg is not None and r_neg != meta.get("r_neg")
        if gamma_changed or r_neg_changed:
            buf.recompute_mc_returns()
        return buf

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
            if "state" not in self.frames:
                raise KeyError("this buffer's observations have no 'state' key")
            return self.frames["state"][: min(self._written, self.capacity)].copy()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            filled = min(self._written, self.capacity)
            valid = self.valid[:filled]
            return {
                "transitions": int(valid.sum()),
                "episodes": int((valid & self.dones[:filled]).sum()),
                "inserted_total": self.transitions_inserted,
                "discontinuities": self.discontinuities,
            }


def _reshape(tree: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(tree, dict):
        return {k: _reshape(v, shape) for k, v in tree.items()}
    return tree.reshape(shape + tree.shape[1:])


def _int_or(value: Any, default: int) -> int:
    return default if value is None else int(value)
