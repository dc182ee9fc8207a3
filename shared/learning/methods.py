"""The methods the WSRL paper compares, as configurations of the same agents, buffer and envs.

A method is four choices, applied to a pre-trained checkpoint and an offline dataset:
- ``init``: what the online agent takes from pre-training: policy and Q (WSRL), the policy only,
  the Q-function only, or nothing (from scratch);
- ``warmup``: what fills the first ``warmup_steps`` env steps, with no update: the frozen
  pre-trained policy (WSRL), uniform random actions, the method's own policy (``"own"``: the
  official code's ``--warmup_steps`` for RLPD, whose policy is untrained), transitions sampled
  from the offline data (no env steps), or nothing;
- ``online_algo``: the loss online: SAC (WSRL), or the pre-trained agent's own offline loss
  continued online (``"pretrained"``: Cal-QL, CQL or IQL, with what it needs, e.g. IQL's value
  network or CQL's alpha, kept), or Cal-QL with a fresh SAC hand-off (pessimistic online);
- ``offline_fraction``: the share of every batch drawn from the offline data (0: WSRL's "no
  retention"; 0.5: RLPD's symmetric sampling).
And JSRL's roll-in (``jsrl_anneal``): at the start of each episode, with a probability that falls
linearly from 1 to 0 over that fraction of the budget, the pre-trained policy acts for a random
prefix of the episode before the learner's policy takes over.

Two rules follow the official code (``zhouzypaul/wsrl``, ``finetune.py``) unless a method says
otherwise:
- **No update before** ``max(K, utd x batch x (1 - offline_fraction))`` env steps
  (``min_steps_to_update``; the launch scripts pass ``--batch_size 1024 --utd 4``, i.e. 4 x 256):
  "no warmup" still waits 1,024 steps of the unchanged pre-trained policy. ``eager`` methods
  update from the step after their warmup (ours before; kept as named variants).
- **The batch layout** (``batch_layout="concatenated"``): the official update concatenates the
  online and the offline rows of the whole UTD x batch and cuts it into UTD minibatches in order
  (``update_high_utd``), so with half offline data the first critic steps see online rows only
  and the last ones offline rows only; ``"per_minibatch"`` mixes each minibatch (ours before).
  The official schedule counts one more step of no update than ours (its ``<=``); we keep the
  runtime's (``shared.learning.schedule``).

No method has its own update code: the update is ``shared.learning.agents.make_update`` of the resulting
agent config, and the batch is mixed by ``mixed_batch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from shared.config import AgentConfig, Algo
from shared.learning.agents import Agent, create_agent
from shared.learning.handoff import HANDOFF_PARTS, carry_state_normalisation, handoff
from shared.storage.checkpoint import AgentCheckpoint
from shared.storage.replay_buffer import ReplayBuffer
from shared.storage.replay_sampling import reshape_leading

Init = Literal["policy_and_q", "policy", "q", "none"]
Warmup = Literal["policy", "random", "dataset", "own", "none"]
BatchLayout = Literal["concatenated", "per_minibatch"]
OnlineAlgo = Literal["sac", "pretrained", "calql"]


@dataclass(frozen=True)
class MethodConfig:
    init: Init = "policy_and_q"
    warmup: Warmup = "policy"
    warmup_steps: int | None = None  # None: the study's K
    online_algo: OnlineAlgo = "sac"
    offline_fraction: float = 0.0
    jsrl_anneal: float | None = None  # JSRL: the guide's probability reaches 0 at this fraction of the budget
    pretrain_algo: Algo = "calql"  # the offline algorithm of the checkpoint the method starts from
    eager: bool = False  # update from the step after the warmup, without the official min_steps_to_update
    batch_layout: BatchLayout = "concatenated"  # how online and offline rows fill the UTD minibatches

    def __post_init__(self) -> None:
        if self.jsrl_anneal is not None and self.jsrl_anneal <= 0:
            raise ValueError("jsrl_anneal must be positive")
        if not 0.0 <= self.offline_fraction < 1.0:
            raise ValueError("offline_fraction must be in [0, 1)")
        if self.online_algo == "pretrained" and self.init != "policy_and_q":
            raise ValueError("continuing the pre-trained loss online keeps the whole pre-trained agent")

    def guide_probability(self, step: int, budget: int) -> float:
        """JSRL: the chance that an episode starting at env step ``step`` gets a guided prefix."""
        if self.jsrl_anneal is None:
            return 0.0
        return max(0.0, 1.0 - step / (self.jsrl_anneal * budget))

    def k(self, default: int) -> int:
        """The warmup length in env steps (0 for ``warmup="none"``)."""
        if self.warmup == "none":
            return 0
        return default if self.warmup_steps is None else int(self.warmup_steps)

    def no_update_steps(self, default_k: int, utd: int, batch_size: int) -> int:
        """Env steps before the first update: the warmup (K env steps; none for the dataset
        warmup, which fills the buffer without any), and, unless ``eager``, at least the official
        ``min_steps_to_update`` = utd x batch x (1 - offline_fraction)."""
        window = 0 if self.warmup == "dataset" else self.k(default_k)
        if self.eager:
            return window
        return max(window, math.ceil(utd * batch_size * (1.0 - self.offline_fraction)))

    def window_actor(self) -> str:
        """Who acts before the first update: the frozen pre-trained policy, uniform random
        actions, or the method's own agent (unchanged, since nothing updates it yet)."""
        return {"policy": "pretrained", "random": "random"}.get(self.warmup, "agent")


METHODS: dict[str, MethodConfig] = {
    # WSRL and its ablations
    # (the official file and flags each reproduces: docs/study.md, "The methods")
    "wsrl": MethodConfig(),
    "wsrl_no_warmup": MethodConfig(warmup="none"),  # still 1,024 steps of the pre-trained policy
    "wsrl_no_warmup_eager": MethodConfig(warmup="none", eager=True),  # updates from env step 1
    "wsrl_random_warmup": MethodConfig(warmup="random"),
    "wsrl_dataset_warmup": MethodConfig(warmup="dataset"),
    "wsrl_k500": MethodConfig(warmup_steps=500),  # shorter warmups (the paper's Fig. 19)
    "wsrl_k1000": MethodConfig(warmup_steps=1_000),
    "wsrl_retain": MethodConfig(offline_fraction=0.5),
    "wsrl_policy_only": MethodConfig(init="policy"),
    "wsrl_q_only": MethodConfig(init="q"),
    "wsrl_no_init": MethodConfig(init="none"),
    "wsrl_calql_online": MethodConfig(online_algo="calql"),
    # from scratch: SAC on online data, and RLPD (the SERL learner) with the offline data; both
    # wait K env steps with their own (untrained) policy acting, as launch_rlpd.sh's --warmup_steps
    "sac_fast": MethodConfig(init="none", warmup="own"),
    "sac_fast_random": MethodConfig(init="none", warmup="random", eager=True, batch_layout="per_minibatch"),
    "rlpd": MethodConfig(init="none", warmup="own", offline_fraction=0.5),
    "rlpd_eager": MethodConfig(
        init="none", warmup="none", offline_fraction=0.5, eager=True, batch_layout="per_minibatch"
    ),
    # JSRL: the pre-trained policy rolls in for a random prefix, less and less often
    "jsrl": MethodConfig(warmup="none", jsrl_anneal=1.0),
    # the offline methods continued online with their own loss, without and with the offline data
    **{
        f"{algo}{suffix}": MethodConfig(
            warmup="none", online_algo="pretrained", offline_fraction=fraction, pretrain_algo=algo
        )
        for algo in ("calql", "cql", "iql")
        for suffix, fraction in (("", 0.0), ("_retain", 0.5))
    },
}


def method(name: str) -> MethodConfig:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; methods: {sorted(METHODS)}")
    return METHODS[name]


def online_config(m: MethodConfig, online: AgentConfig, pretrained: AgentConfig) -> AgentConfig:
    """The agent config method ``m`` updates with online. ``online`` is the online SAC config
    (ensemble, UTD, learning rates); ``pretrained`` the pre-trained agent's config."""
    if m.online_algo == "pretrained":
        # The pre-trained agent's own loss, with the online UTD and batch.
        return replace(pretrained, utd=online.utd, batch_size=online.batch_size)
    if m.online_algo == "calql":
        return replace(online, algo="calql", cql=pretrained.cql)
    return online


def online_agent(m: MethodConfig, pretrained: AgentCheckpoint, online: AgentConfig, seed: int = 0) -> Agent:
    """The agent a method starts online with (its config from ``online_config``); the
    pre-trained agent's architecture must match ``online`` where parts carry."""
    obs = pretrained.obs_example()
    pre = pretrained.agent
    if pre.config.algo != m.pretrain_algo:
        raise ValueError(f"the method starts from a {m.pretrain_algo} checkpoint, got a {pre.config.algo} one")
    cfg = online_config(m, online, pre.config)
    if m.online_algo == "pretrained":
        # The pre-trained agent, whole (its aux networks too).
        return handoff(pre, cfg, obs, seed, parts=(*HANDOFF_PARTS, "aux"))
    parts = {
        "policy_and_q": HANDOFF_PARTS,
        "policy": ("actor", "temperature"),
        "q": ("critic", "target_critic"),
        "none": (),
    }[m.init]
    if not parts:
        return create_agent(carry_state_normalisation(pre.config, cfg), obs, pre.action_dim, seed)
    return handoff(pre, cfg, obs, seed, parts=parts)


def mixed_batch(
    online: ReplayBuffer,
    offline: ReplayBuffer | None,
    fraction: float,
    batch_size: int,
    rng: np.random.Generator,
    leading: tuple[int, ...] = (),
    layout: BatchLayout = "per_minibatch",
) -> dict[str, Any]:
    """A batch with ``fraction`` of its rows from ``offline`` and the rest from ``online``.
    ``per_minibatch``: every minibatch of the ``leading`` axes has that share (concatenated along
    the batch axis). ``concatenated``: the official layout: ``fraction`` of all the rows, online
    rows first, cut into the leading minibatches in order."""
    if layout == "concatenated" and leading and offline is not None and fraction > 0:
        total = int(np.prod(leading)) * batch_size
        flat = mixed_batch(online, offline, fraction, total, rng)
        return reshape_leading(flat, (*leading, batch_size))
    n_off = round(fraction * batch_size) if offline is not None else 0
    if n_off == 0:
        return online.sample(batch_size, rng, leading)
    if n_off == batch_size:
        return offline.sample(batch_size, rng, leading)  # type: ignore[union-attr]
    a = online.sample(batch_size - n_off, rng, leading)
    b = offline.sample(n_off, rng, leading)  # type: ignore[union-attr]
    axis = len(leading)

    def cat(x: Any, y: Any) -> Any:
        if isinstance(x, dict):
            return {k: cat(x[k], y[k]) for k in x}
        return np.concatenate([x, y], axis=axis)

    return cat(a, b)
