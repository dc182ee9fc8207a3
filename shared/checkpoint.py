"""Agent checkpoints with orbax-checkpoint, and the offline -> online (WSRL) hand-off.

A checkpoint directory holds numbered steps; each step has three items:
``agent`` (every array of the ``Agent``: parameters, target, optimizer states, rng, counters),
``config`` (the phase config that made it, JSON) and ``meta`` (the agent config, action size,
observation spec, counters, free-form extras). Restoring rebuilds the networks from ``meta``
and checks every saved array against them by path and shape, so a mismatch is an error that
names the parameter, never a silent skip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from shared.agents.base import Agent, create_agent
from shared.config import AgentConfig, from_dict, to_dict
from shared.dataset import example_obs, obs_spec_of, spec_from_json, spec_to_json

log = logging.getLogger("wsrl.checkpoint")

# Parts of an agent the online SAC agent takes over from any pre-trained agent.
HANDOFF_PARTS = ("actor", "critic", "target_critic", "temperature")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message names the path/parameter."""


def agent_state(agent: Agent) -> dict[str, Any]:
    return serialization.to_state_dict(agent)


class Checkpointer:
    """Periodic agent checkpoints in one directory (keeps the newest ``keep``)."""

    def __init__(self, directory: str | Path, keep: int = 3, async_save: bool = True) -> None:
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save
            ),
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
        meta = {
            "agent_config": to_dict(agent.config),
            "action_dim": agent.action_dim,
            "obs_spec": spec_to_json(obs_spec_of(obs_example)),
            "env_steps": int(agent.env_steps),
            "grad_steps": int(agent.grad_steps),
            "saved_at": time.time(),
            "extra": dict(extra or {}),
        }
        cfg = {"type": type(phase_config).__name__, "config": to_dict(phase_config)}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                agent=ocp.args.StandardSave(agent_state(agent)),
                config=ocp.args.JsonSave(cfg),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        return step

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _read_step(directory: Path, step: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    out = read_items(directory, step, "agent", ("config", "meta"))
    return out["agent"], out["config"], out["meta"]


def save_items(directory: str | Path, step: int, tree_name: str, tree: Any, json_items: Mapping[str, Any]) -> Path:
    """One checkpoint step of an array tree (``tree_name``) and JSON items, written synchronously
    (for things saved once, like the reward classifier; agents use ``Checkpointer``)."""
    directory = Path(directory).absolute()
    names = (tree_name, *json_items)
    mgr = ocp.CheckpointManager(directory, item_names=names, options=ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=False))
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
    mgr = ocp.CheckpointManager(Path(directory).absolute(), options=ocp.CheckpointManagerOptions(create=False),
                                item_names=(tree_name, *json_names))
    try:
        args = {tree_name: ocp.args.StandardRestore()}
        args.update({k: ocp.args.JsonRestore() for k in json_names})
        return dict(mgr.restore(step, args=ocp.args.Composite(**args)))
    finally:
        mgr.close()


def list_steps(directory: str | Path) -> list[int]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def load_checkpoint(
    directory: str | Path, step: int | None = None, seed: int | None = None
) -> tuple[Agent, dict[str, Any], dict[str, Any]]:
    """Restore ``(agent, phase_config_json, meta)``.

    ``step=None`` takes the newest step that reads back; corrupt newer steps are skipped with a
    warning (a crash during a save must not lose the run). An explicit step is never skipped.
    """
    directory = Path(directory).absolute()
    steps = list_steps(directory)
    if not steps:
        raise CheckpointError(f"{directory}: no checkpoints found")
    candidates = [step] if step is not None else steps[::-1]
    errors = []
    for s in candidates:
        if s not in steps:
            raise CheckpointError(f"{directory}: no step {s} (have {steps})")
        try:
            state, cfg, meta = _read_step(directory, s)
            agent = _agent_from_state(state, meta, f"{directory}/{s}")
        except CheckpointError:
            raise
        except Exception as e:  # unreadable files: try the previous step
            errors.append(f"step {s}: {type(e).__name__}: {e}")
            log.warning("checkpoint %s/%d is unreadable (%s: %s)", directory, s, type(e).__name__, e)
            continue
        if errors:
            log.warning("restored step %d of %s after skipping %d unreadable step(s)", s, directory, len(errors))
        if seed is not None:
            agent = agent.replace(rng=jax.random.PRNGKey(seed))
        return agent, cfg, meta
    raise CheckpointError(f"{directory}: no readable checkpoint:\n  " + "\n  ".join(errors))


def _agent_from_state(state: dict[str, Any], meta: dict[str, Any], where: str) -> Agent:
    try:
        cfg = from_dict(AgentConfig, meta["agent_config"])
        obs_example = example_obs(spec_from_json(meta["obs_spec"]))
        action_dim = int(meta["action_dim"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: meta is incomplete or invalid: {e}") from e
    template = create_agent(cfg, obs_example, action_dim)
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


# ------------------------------------------------------------------------------- the hand-off


def _carry_state_normalisation(pre: AgentConfig, online: AgentConfig) -> AgentConfig:
    """State normalisation is part of the model: the online agent uses the pre-trained one's."""
    p, o = pre.encoder, online.encoder
    if (p.state_mean, p.state_std) == (o.state_mean, o.state_std):
        return online
    if o.state_mean is not None:
        raise CheckpointError("hand-off: the online config's state normalisation differs from the "
                              "pre-trained agent's; leave state_mean/state_std unset to inherit them")
    log.info("hand-off: using the pre-trained agent's state normalisation")
    enc = replace(o, normalize_state=p.normalize_state, state_mean=p.state_mean, state_std=p.state_std)
    return replace(online, encoder=enc)


def handoff(pretrained: Agent, online_cfg: AgentConfig, obs_example: Mapping[str, Any], seed: int = 0) -> Agent:
    """Build the online SAC agent from a pre-trained one (WSRL initialisation).

    Keeps actor, critic ensemble, target critic and temperature with their optimizer states
    (Adam moments and step counts). Drops what SAC does not use (the CQL Lagrange multiplier,
    IQL's value network) with a log line. Counters restart at zero for the online phase.
    """
    online_cfg = _carry_state_normalisation(pretrained.config, online_cfg)
    template = create_agent(online_cfg, obs_example, pretrained.action_dim, seed)
    src, dst = agent_state(pretrained), agent_state(template)
    merged = dict(dst)
    for part in HANDOFF_PARTS:
        merged[part] = merge_state(dst[part], src[part], "hand-off", part)
    for name in src["aux"]:
        if name not in dst["aux"]:
            log.info("hand-off: dropping '%s' from the %s agent: the online %s agent does not use it",
                     name, pretrained.config.algo, online_cfg.algo)
    if pretrained.config.algo == "iql":
        log.info("hand-off: IQL learns no temperature; SAC starts from the initial temperature %.3g",
                 online_cfg.init_temperature)
    log.info("hand-off: kept %s with optimizer states; counters reset (pre-training did %d gradient steps)",
             ", ".join(HANDOFF_PARTS), int(pretrained.grad_steps))
    return serialization.from_state_dict(template, merged)
