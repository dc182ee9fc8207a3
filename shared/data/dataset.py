"""The project's one on-disk transition format (offline datasets and replay-buffer snapshots).

A file is an uncompressed ``.npz`` (read with ``allow_pickle=False``) holding ``N`` *slots*:

| key                 | shape / dtype           | meaning                                              |
|---------------------|-------------------------|------------------------------------------------------|
| ``obs/<name>``      | [N, ...] float32|uint8  | the observation stored in slot i (see below)         |
| ``obs_slot``        | [N] int64               | slot holding the *previous* observation of slot i    |
| ``actions``         | [N, A] float32          | action taken, in [-1, 1]                             |
| ``rewards``         | [N] float32             | reward, already scaled (``RewardConfig``)            |
| ``masks``           | [N] float32             | 0 where the episode terminated (no bootstrap), else 1|
| ``dones``           | [N] bool                | last transition of its episode (terminal or timeout) |
| ``valid``           | [N] bool                | slot i is a transition (False: an episode's reset obs)|
| ``mc_returns``      | [N] float32             | Monte-Carlo return-to-go (-inf while unknown)        |
| ``intervened``      | [N] bool (optional)     | a person chose the action (absent in older files: no)|
| ``meta``            | 0-d str (JSON)          | format, obs spec, action_dim, gamma, r_neg, ...      |

A valid slot i is the transition ``(obs[obs_slot[i]], actions[i], rewards[i], obs[i])``: each
frame is stored once, so image datasets do not keep every picture twice. An episode's first
observation sits in an invalid slot that its first transition points to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

FORMAT = "wsrl-transitions-v1"
OBS_DTYPES = ("float32", "uint8")
TRANSITION_FIELDS = {
    "obs_slot": ("int64", 1),
    "actions": ("float32", 2),
    "rewards": ("float32", 1),
    "masks": ("float32", 1),
    "dones": ("bool", 1),
    "valid": ("bool", 1),
    "mc_returns": ("float32", 1),
}
# Added after the format's first files: absent means "none" (read as zeros of this dtype).
OPTIONAL_FIELDS = {"intervened": "bool"}
# Earlier names of a field, read as today's (files written before the intervention flag had one name).
LEGACY_NAMES = {"interventions": "intervened"}
META_KEYS = ("format", "obs_spec", "action_dim")


ObsSpec = dict[str, tuple[tuple[int, ...], str]]  # key -> (shape, dtype name)


class Transition(TypedDict):
    """One env step as the actor's loop hands it on (to the sender's chunk builder) and as
    ``ReplayBuffer.insert`` takes it. A plain dict at run time: nothing is added to the loop."""

    observations: Mapping[str, np.ndarray]
    actions: np.ndarray  # in [-1, 1]; the human's action where one intervened
    rewards: float  # after ``RewardConfig``
    next_observations: Mapping[str, np.ndarray]
    masks: float  # 0.0 where the episode terminated (no bootstrap), else 1.0
    dones: bool  # the episode ended here (terminated or truncated)
    intervened: NotRequired[bool]  # a person chose the action


def step_transition(
    obs: Mapping[str, np.ndarray],
    action: np.ndarray,
    reward: Any,
    next_obs: Mapping[str, np.ndarray],
    terminated: bool,
    truncated: bool,
) -> Transition:
    """The transition of one gym step: no bootstrap past a termination, an episode ends at
    either a termination or a truncation."""
    return Transition(
        observations=obs,
        actions=action,
        rewards=float(reward),
        next_observations=next_obs,
        masks=0.0 if terminated else 1.0,
        dones=bool(terminated or truncated),
    )


def obs_spec_of(obs: Mapping[str, Any]) -> ObsSpec:
    """The spec of one observation dict (no batch axis)."""
    return {k: (tuple(np.shape(v)), str(np.asarray(v).dtype)) for k, v in sorted(obs.items())}


# A derived observation key, ``<key>@<what>``, holds something computed from ``<key>``'s frame by
# the learner (a frozen trunk's features): stored and sampled like any other key, but never sent
# by an actor, never part of the policy's contract, and not compared for episode continuity (a
# recomputation may differ in the last bits).
DERIVED = "@"


def derived_key(key: str, what: str) -> str:
    return f"{key}{DERIVED}{what}"


def is_derived(key: str) -> bool:
    return DERIVED in key


def wire_spec(spec: ObsSpec) -> ObsSpec:
    """``spec`` without its derived keys: what an actor observes and sends."""
    return {k: v for k, v in spec.items() if not is_derived(k)}


def spec_to_json(spec: ObsSpec) -> dict[str, Any]:
    return {k: {"shape": list(s), "dtype": d} for k, (s, d) in spec.items()}


def spec_from_json(data: Mapping[str, Any]) -> ObsSpec:
    return {k: (tuple(v["shape"]), str(v["dtype"])) for k, v in sorted(data.items())}


def example_obs(spec: ObsSpec) -> dict[str, np.ndarray]:
    """A zero observation of ``spec``: what network initialisation needs."""
    return {k: np.zeros(s, d) for k, (s, d) in spec.items()}


@dataclass(frozen=True)
class ValueLimits:
    """What the numbers of a valid transition may be: the one definition that the learner's
    ingest (``shared/wire/chunks.py``) and the dataset and replay-snapshot loader both apply, so
    nothing the learner accepts can make a checkpoint it cannot read back.

    Actions are the contract's [-1, 1]. The defaults for rewards and float observations only
    keep out absurd values (1e30, 3e38); the learner derives tighter ones from its reward
    settings and config (``learner.online``)."""

    action: float = 1.0
    reward: float = 1e6
    observation: float = 1e6
    tolerance: float = 1e-5

    def problem(self, actions: np.ndarray, rewards: np.ndarray, observations: Mapping[str, np.ndarray]) -> str | None:
        """The first thing wrong with these arrays (``None``: they are valid)."""
        if not np.isfinite(actions).all() or np.abs(actions).max(initial=0) > self.action + self.tolerance:
            return f"actions must be finite and within [-{self.action:g}, {self.action:g}]"
        if not np.isfinite(rewards).all() or np.abs(rewards).max(initial=0) > self.reward:
            return f"rewards must be finite and within [-{self.reward:g}, {self.reward:g}]"
        for key, a in observations.items():
            if a.dtype.kind == "f" and (not np.isfinite(a).all() or np.abs(a).max(initial=0) > self.observation):
                return f"observation '{key}' must be finite and within [-{self.observation:g}, {self.observation:g}]"
        return None


class DatasetError(ValueError):
    """A dataset or snapshot file that does not follow the format; the message says where."""


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written file."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        payload: dict[str, Any] = {"meta": np.array(json.dumps(meta)), **arrays}
        np.savez(f, **payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and validate a file; raises ``DatasetError`` naming what is missing or mis-shaped."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise DatasetError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    if "meta" not in arrays:
        raise DatasetError(f"{path}: missing 'meta' (is this a {FORMAT} file?)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: 'meta' is not JSON: {e}") from e
    rename_legacy(arrays)
    validate(arrays, meta, str(path))
    return arrays, meta


def rename_legacy(arrays: dict[str, np.ndarray]) -> None:
    """Give arrays saved under an earlier name (``LEGACY_NAMES``) today's name, in place."""
    for old, new in LEGACY_NAMES.items():
        if old in arrays and new not in arrays:
            arrays[new] = arrays.pop(old)


def validate(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], where: str = "dataset", limits: ValueLimits | None = None
) -> None:
    for key in META_KEYS:
        if key not in meta:
            raise DatasetError(f"{where}: meta is missing '{key}'")
    if meta["format"] != FORMAT:
        raise DatasetError(f"{where}: format is {meta['format']!r}, expected {FORMAT!r}")
    n = None
    for name, (dtype, ndim) in TRANSITION_FIELDS.items():
        if name not in arrays:
            raise DatasetError(f"{where}: missing array '{name}'")
        a = arrays[name]
        if a.dtype != np.dtype(dtype) or a.ndim != ndim:
            raise DatasetError(f"{where}: '{name}' is {a.dtype}{list(a.shape)}, expected {dtype} with {ndim} dims")
        n = a.shape[0] if n is None else n
        if a.shape[0] != n:
            raise DatasetError(f"{where}: '{name}' has {a.shape[0]} rows, other arrays have {n}")
    for name, dtype in OPTIONAL_FIELDS.items():
        if name not in arrays:
            arrays[name] = np.zeros(n or 0, dtype)
        elif arrays[name].dtype != np.dtype(dtype) or arrays[name].shape != (n,):
            a = arrays[name]
            raise DatasetError(f"{where}: '{name}' is {a.dtype}{list(a.shape)}, expected {dtype}[{n}]")
    action_dim = int(meta["action_dim"])
    if arrays["actions"].shape[1] != action_dim:
        raise DatasetError(f"{where}: 'actions' is {action_dim}-D in meta but {arrays['actions'].shape[1]}-D")
    spec = meta["obs_spec"]
    if not spec:
        raise DatasetError(f"{where}: obs_spec names no observation keys")
    for key, s in spec.items():
        name = f"obs/{key}"
        if name not in arrays:
            raise DatasetError(f"{where}: missing array '{name}'")
        a = arrays[name]
        if s["dtype"] not in OBS_DTYPES or a.dtype != np.dtype(s["dtype"]):
            raise DatasetError(f"{where}: '{name}' has dtype {a.dtype}, obs_spec says {s['dtype']}")
        if a.shape != (n, *s["shape"]):
            raise DatasetError(f"{where}: '{name}' has shape {list(a.shape)}, expected {[n, *s['shape']]}")
    extra = {k[4:] for k in arrays if k.startswith("obs/")} - set(spec)
    if extra:
        raise DatasetError(f"{where}: observation arrays {sorted(extra)} are not in obs_spec")
    valid = arrays["valid"]
    slots = arrays["obs_slot"][valid]
    if slots.size and (slots.min() < 0 or slots.max() >= n):
        raise DatasetError(f"{where}: 'obs_slot' points outside [0, {n})")
    problem = (limits or ValueLimits()).problem(
        arrays["actions"][valid], arrays["rewards"][valid], {k: arrays[f"obs/{k}"] for k in spec}
    )
    if problem:
        raise DatasetError(f"{where}: {problem}")
