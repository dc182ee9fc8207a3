"""Agent checkpoints with orbax-checkpoint, and the offline -> online (WSRL) hand-off.

A checkpoint directory holds numbered steps; each step has three items:
``agent`` (every array of the ``Agent``: parameters, target, optimizer states, rng, counters),
``config`` (the phase config that made it, JSON) and ``meta`` (the agent config, action size,
observation spec, counters, extras of the phase). Restoring rebuilds the networks from ``meta``
and checks every saved array against them by path and shape, so a mismatch is an error that
names the parameter, never a silent skip.

``Checkpointer`` is the one writer and ``load_checkpoint`` the one reader: it returns an
``AgentCheckpoint`` whose fields are typed (``meta``, ``reward``, ``obs_spec``), so no caller
reads the JSON items by key. The learner's checkpoints (agent + replay snapshot + ledger) are
built on these in ``learner/checkpoint.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from shared.config import AgentConfig, RewardConfig, from_dict, to_dict
from shared.data.dataset import ObsSpec, example_obs, obs_spec_of, spec_from_json, spec_to_json
from shared.learning.agents.base import Agent, create_agent

log = logging.getLogger("wsrl.checkpoint")

# Parts of an agent the online SAC agent takes over from any pre-trained agent.


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message names the path/parameter."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint step whose bytes are damaged (unreadable, a checksum that does not match,
    non-finite parameters): an older step may be used instead."""


def tree_checksum(tree: Any) -> str:
    """SHA-256 over every array of a nested dict (path, dtype, shape and bytes, in sorted path
    order); empty containers do not count (orbax may drop them)."""
    h = hashlib.sha256()

    def walk(t: Any, path: str) -> None:
        if isinstance(t, Mapping):
            for k in sorted(t, key=str):
                walk(t[k], f"{path}/{k}")
            return
        a = np.ascontiguousarray(np.asarray(jax.device_get(t)))
        h.update(f"{path}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())

    walk(tree, "")
    return h.hexdigest()


def json_checksum(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _nonfinite_parameter(tree: Any, path: str = "") -> str | None:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            found = _nonfinite_parameter(v, f"{path}/{k}" if path else str(k))
            if found:
                return found
        return None
    a = np.asarray(tree)
    return path if a.dtype.kind == "f" and not np.isfinite(a).all() else None


def quarantine(directory: str | Path, step: int, reason: str, also: tuple[Path, ...] = ()) -> Path:
    """Move an unusable checkpoint step (and files that belong to it, like its replay snapshot)
    out of the checkpoint directory, with the reason beside it: later saves can reuse its id and
    rotation never counts it. Returns where it went."""
    directory = Path(directory)
    dest = directory.parent / "quarantine" / f"{directory.name}-{step}-{int(time.time())}"
    dest.mkdir(parents=True, exist_ok=True)
    src = directory / str(step)
    if src.exists():
        shutil.move(str(src), str(dest / str(step)))
    for f in also:
        if f.exists():
            shutil.move(str(f), str(dest / f.name))
    (dest / "reason.txt").write_text(reason + "\n")
    log.warning("quarantined checkpoint %s/%d in %s: %s", directory, step, dest, reason)
    return dest


T = TypeVar("T")


def agent_state(agent: Agent) -> dict[str, Any]:
    return serialization.to_state_dict(agent)


@dataclass(frozen=True)
class CheckpointMeta:
    """The ``meta`` item of a checkpoint step: what rebuilds the agent, and the counters."""

    agent_config: AgentConfig
    action_dim: int
    obs_spec: ObsSpec
    env_steps: int
    grad_steps: int
    saved_at: float
    extra: dict[str, Any] = field(default_factory=dict)  # the phase's own fields (learner/checkpoint.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_config": to_dict(self.agent_config),
            "action_dim": self.action_dim,
            "obs_spec": spec_to_json(self.obs_spec),
            "env_steps": self.env_steps,
            "grad_steps": self.grad_steps,
            "saved_at": self.saved_at,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> CheckpointMeta:
        try:
            return cls(
                agent_config=from_dict(AgentConfig, data["agent_config"]),
                action_dim=int(data["action_dim"]),
                obs_spec=spec_from_json(data["obs_spec"]),
                env_steps=int(data["env_steps"]),
                grad_steps=int(data["grad_steps"]),
                saved_at=float(data.get("saved_at", 0.0)),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: meta is incomplete or invalid: {type(e).__name__}: {e}") from e


@dataclass(frozen=True)
class AgentCheckpoint:
    """One restored checkpoint step: the agent, its meta and the config of the phase that made it."""

    agent: Agent
    meta: CheckpointMeta
    config_type: str  # "PretrainConfig", "OnlineConfig"
    config_json: dict[str, Any]  # that config as saved; ``phase_config`` reads it typed
    path: Path
    step: int
    skipped: tuple[tuple[int, str], ...] = ()  # newer steps found unusable: (step, why)

    @property
    def obs_spec(self) -> ObsSpec:
        return self.meta.obs_spec

    def obs_example(self) -> dict[str, np.ndarray]:
        return example_obs(self.meta.obs_spec)

    @property
    def reward(self) -> RewardConfig:
        """The reward settings the agent was trained with (every phase config has them)."""
        if "reward" not in self.config_json:
            return RewardConfig()
        return from_dict(RewardConfig, self.config_json["reward"])

    def phase_config(self, cls: type[T]) -> T:
        """The saved phase config as ``cls``; an error if the checkpoint was made by another phase."""
        if self.config_type != cls.__name__:
            raise CheckpointError(f"{self.path}: saved by a {self.config_type} run, expected {cls.__name__}")
        return from_dict(cls, self.config_json)


class Checkpointer:
    """Periodic agent checkpoints in one directory (keeps the newest ``keep``)."""

    def __init__(self, directory: str | Path, keep: int = 3, async_save: bool = True) -> None:
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
            item_names=("agent", "config", "meta"),
        )

    def save(
        self,
        agent: Agent,
        obs_example: Mapping[str, Any],
        phase_config: Any,
        step: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> int:
        step = int(agent.grad_steps) if step is None else int(step)
        state = agent_state(agent)
        cfg = {"type": type(phase_config).__name__, "config": to_dict(phase_config)}
        meta = CheckpointMeta(
            agent_config=agent.config,
            action_dim=agent.action_dim,
            obs_spec=obs_spec_of(obs_example),
            env_steps=int(agent.env_steps),
            grad_steps=int(agent.grad_steps),
            saved_at=time.time(),
            extra=dict(extra or {}),
        ).to_json()
        # Checksums of all three items, verified on restore: a flipped bit is found, not trained on.
        meta["checksums"] = {"agent": tree_checksum(state), "config": json_checksum(cfg)}
        meta["checksums"]["meta"] = json_checksum(meta)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                agent=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(cfg),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        return step

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def save_items(directory: str | Path, step: int, tree_name: str, tree: Any, json_items: Mapping[str, Any]) -> Path:
    """One checkpoint step of an array tree (``tree_name``) and JSON items, written synchronously
    (for things saved once, like the reward classifier; agents use ``Checkpointer``)."""
    directory = Path(directory).absolute()
    names = (tree_name, *json_items)
    mgr = ocp.CheckpointManager(
        directory, item_names=names, options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    )
    try:
        args = {tree_name: ocp.args.StandardSave(tree)}
        args.update({k: ocp.args.JsonSave(dict(v)) for k, v in json_items.items()})
        mgr.save(int(step), args=ocp.args.Composite(**args), force=True)
        mgr.wait_until_finished()
    finally:
        mgr.close()
    return directory / str(int(step))


def read_items(directory: str | Path, step: int, tree_name: str, json_names: tuple[str, ...]) -> dict[str, Any]:
    """The items of one step written by ``save_items`` (or ``Checkpointer``); orbax's errors pass through."""
    mgr = ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(create=False),
        item_names=(tree_name, *json_names),
    )
    try:
        args = {tree_name: ocp.args.StandardRestore()}
        args.update({k: ocp.args.JsonRestore() for k in json_names})
        return dict(mgr.restore(step, args=ocp.args.Composite(**args)))
    finally:
        mgr.close()


FILES_MANIFEST = "files.crc32.json"  # in a step's directory: every file's size and CRC32


def write_file_manifest(step_dir: str | Path) -> None:
    """Record the size and CRC32 of every file of a finished step (``verify_file_manifest``)."""
    step_dir = Path(step_dir)
    files = {
        str(f.relative_to(step_dir)): [f.stat().st_size, zlib.crc32(f.read_bytes())]
        for f in sorted(step_dir.rglob("*"))
        if f.is_file() and f.name != FILES_MANIFEST
    }
    tmp = step_dir / f"{FILES_MANIFEST}.tmp"
    tmp.write_text(json.dumps(files))
    tmp.replace(step_dir / FILES_MANIFEST)


def verify_file_manifest(step_dir: str | Path) -> None:
    """Check a step's files against its manifest before orbax reads any of them: a damaged file
    is named here, and orbax never starts a read that fails half-way (its aborted asynchronous
    reads print dozens of "Event loop is closed" tracebacks that would hide real errors). A
    step without a manifest (older versions, or a step saved asynchronously) is not checked."""
    step_dir = Path(step_dir)
    manifest = step_dir / FILES_MANIFEST
    if not manifest.exists():
        return
    try:
        files = json.loads(manifest.read_text())
        expected = {str(k): (int(v[0]), int(v[1])) for k, v in files.items()}
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        raise CorruptCheckpointError(f"{manifest}: unreadable ({type(e).__name__}: {e})") from None
    for name, (size, crc) in expected.items():
        f = step_dir / name
        if not f.is_file():
            raise CorruptCheckpointError(f"{f}: missing")
        data = f.read_bytes()
        if len(data) != size or zlib.crc32(data) != crc:
            raise CorruptCheckpointError(f"{f}: does not match its size and CRC32 (damaged on disk?)")


def list_steps(directory: str | Path) -> list[int]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def load_checkpoint(directory: str | Path, step: int | None = None, seed: int | None = None) -> AgentCheckpoint:
    """Restore one checkpoint step.

    ``step=None`` takes the newest step that reads back and checks out; damaged newer steps
    (unreadable, a checksum mismatch, non-finite parameters) are skipped with a warning and
    listed in ``skipped`` (a crash during a save must not lose the run). An explicit step is
    never skipped. A step that does not fit (another architecture) is an error either way.
    """
    directory = Path(directory).absolute()
    steps = list_steps(directory)
    if not steps:
        raise CheckpointError(f"{directory}: no checkpoints found")
    candidates = [step] if step is not None else steps[::-1]
    errors: list[tuple[int, str]] = []
    for s in candidates:
        if s not in steps:
            raise CheckpointError(f"{directory}: no step {s} (have {steps})")
        where = f"{directory}/{s}"
        try:
            loaded = _read_verified(directory, s, where)
        except CorruptCheckpointError as e:
            if step is not None:
                raise
            errors.append((s, str(e)))
            log.warning("checkpoint %s is unusable: %s", where, e)
            continue
        if errors:
            log.warning("restored step %d of %s after skipping %d unusable step(s)", s, directory, len(errors))
        agent, meta, config_type, config_json = loaded
        if seed is not None:
            agent = agent.replace(rng=jax.random.PRNGKey(seed))
        return AgentCheckpoint(agent, meta, config_type, config_json, directory / str(s), s, tuple(errors))
    raise CorruptCheckpointError(
        f"{directory}: no usable checkpoint:\n  " + "\n  ".join(f"step {s}: {e}" for s, e in errors)
    )


def _read_verified(directory: Path, step: int, where: str) -> tuple[Agent, CheckpointMeta, str, dict[str, Any]]:
    try:
        items = read_items(directory, step, "agent", ("config", "meta"))
    except Exception as e:  # unreadable files (truncated, deleted, garbled): orbax raises many kinds
        raise CorruptCheckpointError(f"unreadable ({type(e).__name__}: {e})") from None
    raw_meta, cfg, state = items["meta"], items["config"], items["agent"]
    sums = raw_meta.get("checksums") if isinstance(raw_meta, dict) else None
    if isinstance(sums, dict):  # checkpoints from before checksums load without the check
        meta_wo = {**raw_meta, "checksums": {k: v for k, v in sums.items() if k != "meta"}}
        for name, got in (
            ("meta", json_checksum(meta_wo)),
            ("config", json_checksum(cfg)),
            ("agent", tree_checksum(state)),
        ):
            if sums.get(name) != got:
                raise CorruptCheckpointError(f"the {name} item does not match its checksum (damaged on disk?)")
    bad = _nonfinite_parameter(state)
    if bad:
        raise CorruptCheckpointError(f"parameter '{bad}' holds non-finite values")
    try:
        config_type, config_json = str(cfg["type"]), dict(cfg["config"])
    except (KeyError, TypeError) as e:
        raise CorruptCheckpointError(f"config item is incomplete: {e}") from None
    meta = CheckpointMeta.from_json(raw_meta, where)
    return _agent_from_state(state, meta, where), meta, config_type, config_json


def _agent_from_state(state: dict[str, Any], meta: CheckpointMeta, where: str) -> Agent:
    template = create_agent(meta.agent_config, example_obs(meta.obs_spec), meta.action_dim)
    merged = merge_state(agent_state(template), state, where)
    return serialization.from_state_dict(template, merged)


def merge_state(template: Any, saved: Any, where: str, path: str = "") -> Any:
    """``saved`` laid onto ``template``'s structure; every leaf must exist with the same shape.

    Empty containers (optax's EmptyState) may be absent from a saved tree.
    """
    if isinstance(template, dict):
        if not isinstance(saved, dict):
            raise CheckpointError(f"{where}: '{path}' is a leaf in the checkpoint, the agent needs a tree")
        extra = set(saved) - set(template)
        extra = {k for k in extra if not _is_empty(saved[k])}
        if extra:
            raise CheckpointError(f"{where}: unexpected parameter '{_join(path, sorted(extra)[0])}'")
        out = {}
        for k, t in template.items():
            if k not in saved:
                if _is_empty(t):
                    out[k] = t
                    continue
                raise CheckpointError(f"{where}: missing parameter '{_join(path, k)}'")
            out[k] = merge_state(t, saved[k], where, _join(path, k))
        return out
    t_shape, s_shape = np.shape(template), np.shape(saved)
    if t_shape != s_shape:
        raise CheckpointError(
            f"{where}: parameter '{path}' has shape {s_shape} in the checkpoint, the agent needs {t_shape}"
        )
    return jnp.asarray(saved, dtype=jnp.asarray(template).dtype)


def _is_empty(tree: Any) -> bool:
    return isinstance(tree, dict) and all(_is_empty(v) for v in tree.values())


def _join(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)
