"""Transitions on the wire: the columnar CHUNK message the actor sends and the learner checks.

A chunk holds ``n`` consecutive transitions of one actor. Observation frames are stored once:
within an episode the observation of transition i+1 is the next observation of transition i,
so a chunk of one episode carries n+1 frames instead of 2n (half the bytes of agentlace's
per-transition pickles). ``obs_index`` and ``next_index`` say which frame each transition reads.

The learner validates a whole chunk before inserting any of it, so a chunk goes in entirely
or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.data.dataset import Transition, ValueLimits
from shared.wire.protocol import MessageType, ProtocolError, make_message

MAX_CHUNK_TRANSITIONS = 4096
MAX_ID_CHARS = 64  # actor ids and session ids


class ChunkBuilder:
    """Accumulates transitions into one chunk."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._frames: dict[str, list[np.ndarray]] = {}
        self._obs_index: list[int] = []
        self._next_index: list[int] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._masks: list[float] = []
        self._dones: list[bool] = []
        self._intervened: list[bool] = []
        self._last_next: Any = None
        self._num_frames = 0
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._actions)

    def _add_frame(self, obs: Mapping[str, Any]) -> int:
        if not self._frames:
            self._frames = {k: [] for k in sorted(obs)}
        elif set(obs) != set(self._frames):
            raise ValueError(f"observation keys {sorted(obs)} differ from the chunk's {sorted(self._frames)}")
        for k, frames in self._frames.items():
            a = np.asarray(obs[k])
            frames.append(a)
            self.nbytes += a.nbytes
        self._num_frames += 1
        return self._num_frames - 1

    def add(self, t: Transition) -> None:
        # The control loop passes the same dict on as the next step's observation, so identity
        # is the (cheap) test that the frame is already in the chunk.
        if self._last_next is not None and t["observations"] is self._last_next:
            obs_i = self._num_frames - 1
        else:
            obs_i = self._add_frame(t["observations"])
        next_i = self._add_frame(t["next_observations"])
        self._last_next = t["next_observations"]
        self._obs_index.append(obs_i)
        self._next_index.append(next_i)
        self._actions.append(np.asarray(t["actions"], np.float32).reshape(-1))
        self._rewards.append(float(t["rewards"]))
        self._masks.append(float(t["masks"]))
        self._dones.append(bool(t["dones"]))
        self._intervened.append(bool(t.get("intervened", False)))
        self.nbytes += 4 * self._actions[-1].size + 16

    def build(self, actor: str, session: str, seq: int) -> dict[str, Any]:
        """The CHUNK message for what was added; the builder is then empty."""
        if not self._actions:
            raise ValueError("empty chunk")
        msg = make_message(
            MessageType.CHUNK,
            actor=actor,
            session=session,
            seq=int(seq),
            frames={k: np.stack(v) for k, v in self._frames.items()},
            obs_index=np.asarray(self._obs_index, np.int32),
            next_index=np.asarray(self._next_index, np.int32),
            actions=np.stack(self._actions),
            rewards=np.asarray(self._rewards, np.float32),
            masks=np.asarray(self._masks, np.float32),
            dones=np.asarray(self._dones, bool),
            intervened=np.asarray(self._intervened, bool),
        )
        self.clear()
        return msg


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise ProtocolError(f"{what} must be a printable string of 1-{MAX_ID_CHARS} characters, got {value!r}")
    return value


def check_seq(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise ProtocolError(f"seq must be a non-negative integer, got {value!r}")
    return value


def _array(msg: Mapping[str, Any], name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    a = msg.get(name)
    if not isinstance(a, np.ndarray):
        raise ProtocolError(f"chunk field '{name}' must be an array")
    if a.dtype != np.dtype(dtype) or a.shape != shape:
        raise ProtocolError(f"chunk field '{name}' is {a.dtype}{list(a.shape)}, expected {dtype}{list(shape)}")
    return a


@dataclass(frozen=True)
class Chunk:
    """A validated chunk: the arrays of ``ReplayBuffer.insert_chunk``."""

    frames: dict[str, np.ndarray]
    obs_index: np.ndarray
    next_index: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    masks: np.ndarray
    dones: np.ndarray
    intervened: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)

    def arrays(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("frames", "obs_index", "next_index", "actions", "rewards", "masks", "dones", "intervened")
        }

    def transitions(self) -> list[dict[str, Any]]:
        """One ``ReplayBuffer.insert`` dict per transition (views of the frames)."""
        return [
            {
                "observations": {k: f[self.obs_index[i]] for k, f in self.frames.items()},
                "next_observations": {k: f[self.next_index[i]] for k, f in self.frames.items()},
                "actions": self.actions[i],
                "rewards": self.rewards[i],
                "masks": self.masks[i],
                "dones": self.dones[i],
                "intervened": bool(self.intervened[i]),
            }
            for i in range(len(self))
        ]


def unpack_chunk(
    msg: Mapping[str, Any],
    obs_spec: Mapping[str, tuple[tuple[int, ...], str]],
    action_dim: int,
    limits: ValueLimits | None = None,
) -> Chunk:
    """The transitions of a decoded CHUNK message, checked whole against the buffer's spec and
    the value limits (the same ``ValueLimits.problem`` the replay loader applies).

    Raises ``ProtocolError`` naming the first defect; nothing is returned for a bad chunk.
    """
    check_id(msg.get("actor"), "actor")
    check_id(msg.get("session"), "session")
    check_seq(msg.get("seq"))
    obs_index = msg.get("obs_index")
    if not isinstance(obs_index, np.ndarray) or obs_index.ndim != 1:
        raise ProtocolError("chunk field 'obs_index' must be a 1-D array")
    n = obs_index.shape[0]
    if not 0 < n <= MAX_CHUNK_TRANSITIONS:
        raise ProtocolError(f"a chunk holds 1-{MAX_CHUNK_TRANSITIONS} transitions, this one {n}")
    obs_index = _array(msg, "obs_index", "int32", (n,))
    next_index = _array(msg, "next_index", "int32", (n,))
    actions = _array(msg, "actions", "float32", (n, action_dim))
    rewards = _array(msg, "rewards", "float32", (n,))
    masks = _array(msg, "masks", "float32", (n,))
    dones = _array(msg, "dones", "bool", (n,))
    _array(msg, "intervened", "bool", (n,))
    frames = msg.get("frames")
    if not isinstance(frames, dict) or set(frames) != set(obs_spec):
        got = sorted(frames) if isinstance(frames, dict) else type(frames).__name__
        raise ProtocolError(f"chunk frames have keys {got}, the learner expects {sorted(obs_spec)}")
    num_frames = None
    for k, (shape, dtype) in obs_spec.items():
        f = frames[k]
        if not isinstance(f, np.ndarray) or f.dtype != np.dtype(dtype) or f.shape[1:] != tuple(shape):
            desc = f"{f.dtype}{list(f.shape[1:])}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ProtocolError(f"chunk frames['{k}'] are {desc}, expected {dtype}{list(shape)}")
        if num_frames is None:
            num_frames = f.shape[0]
        elif f.shape[0] != num_frames:
            raise ProtocolError("chunk frame arrays differ in length")
    if num_frames is None or not 0 < num_frames <= 2 * n:
        raise ProtocolError(f"a chunk of {n} transitions cannot hold {num_frames} frames")
    for name, idx in (("obs_index", obs_index), ("next_index", next_index)):
        if idx.min() < 0 or idx.max() >= num_frames:
            raise ProtocolError(f"chunk '{name}' points outside its {num_frames} frames")
    problem = (limits or ValueLimits()).problem(actions, rewards, frames)
    if problem:
        raise ProtocolError(f"chunk {problem}")
    if not np.isin(masks, (0.0, 1.0)).all():
        raise ProtocolError("chunk masks must be 0 or 1")
    return Chunk(
        {k: frames[k] for k in obs_spec}, obs_index, next_index, actions, rewards, masks, dones, msg["intervened"]
    )
