"""The WSRL hand-off (the paper's initialisation): the online agent starts from the pre-trained
one's actor, critic ensemble, target critic and temperature, with their optimiser states; what
the online algorithm does not use is dropped with a log line, and counters restart."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from flax import serialization

from shared.config import AgentConfig
from shared.learning.agents import Agent, create_agent
from shared.learning.agents.base import unaliased
from shared.storage.checkpoint import CheckpointError, agent_state, merge_state

log = logging.getLogger("wsrl.checkpoint")
HANDOFF_PARTS = ("actor", "critic", "target_critic", "temperature")


def carry_state_normalisation(pre: AgentConfig, online: AgentConfig) -> AgentConfig:
    """State normalisation is part of the model: the online agent uses the pre-trained one's."""
    p, o = pre.encoder, online.encoder
    if (p.state_mean, p.state_std) == (o.state_mean, o.state_std):
        return online
    if o.state_mean is not None:
        raise CheckpointError(
            "hand-off: the online config's state normalisation differs from the "
            "pre-trained agent's; leave state_mean/state_std unset to inherit them"
        )
    log.info("hand-off: using the pre-trained agent's state normalisation")
    enc = replace(o, normalize_state=p.normalize_state, state_mean=p.state_mean, state_std=p.state_std)
    return replace(online, encoder=enc)


def handoff(
    pretrained: Agent,
    online_cfg: AgentConfig,
    obs_example: Mapping[str, Any],
    seed: int = 0,
    parts: tuple[str, ...] = HANDOFF_PARTS,
) -> Agent:
    """Build the online agent from a pre-trained one (WSRL initialisation).

    Keeps ``parts`` (by default actor, critic ensemble, target critic and temperature) with their
    optimizer states (Adam moments and step counts); the rest starts fresh. ``"aux"`` keeps the
    algorithm's own networks too (the CQL Lagrange multiplier, IQL's value network), for an
    online agent of the same algorithm. What is dropped is said in a log line. Counters
    restart at zero for the online phase.
    """
    online_cfg = carry_state_normalisation(pretrained.config, online_cfg)
    if online_cfg.encoder.share_encoder != pretrained.config.encoder.share_encoder:
        # The pre-trained policy learned on its own encoder's features, or on the critic's.
        raise ValueError(
            f"hand-off: encoder.share_encoder is {online_cfg.encoder.share_encoder} online but was "
            f"{pretrained.config.encoder.share_encoder} in pre-training; they must match"
        )
    template = create_agent(online_cfg, dict(obs_example), pretrained.action_dim, seed)
    src, dst = agent_state(pretrained), agent_state(template)
    merged = dict(dst)
    for part in parts:
        merged[part] = merge_state(dst[part], src[part], "hand-off", part)
    if "aux" not in parts:
        for name in src["aux"]:
            log.info(
                "hand-off: dropping '%s' from the %s agent: the online %s agent %s",
                name,
                pretrained.config.algo,
                online_cfg.algo,
                "does not use it" if name not in dst["aux"] else "starts it fresh",
            )
    if pretrained.config.algo == "iql" and "temperature" in parts and online_cfg.algo != "iql":
        log.info(
            "hand-off: IQL learns no temperature; SAC starts from the initial temperature %.3g",
            online_cfg.init_temperature,
        )
    log.info(
        "hand-off: kept %s with optimizer states; counters reset (pre-training did %d gradient steps)",
        ", ".join(parts) or "nothing",
        int(pretrained.grad_steps),
    )
    # The pre-trained parts may share arrays (the frozen trunk); the online update donates them.
    return unaliased(serialization.from_state_dict(template, merged))
