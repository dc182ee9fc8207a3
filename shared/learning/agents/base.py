"""The agent pytree shared by SAC, CQL/Cal-QL and IQL, and the functions that build and use it.

An ``Agent`` holds only arrays (parameters, optimizer states, rng, counters) plus two static
fields (its config and action size), so it can be passed to and returned from compiled
updates, saved with orbax, and compared leaf by leaf in tests. No function mutates it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from shared.config import AgentConfig
from shared.learning.encoders import caches_features, load_pretrained_trunks
from shared.learning.networks import build_networks, forward, sample_tanh_gaussian

Params = Any
Batch = dict[str, Any]


class TrainState(struct.PyTreeNode):
    params: Params
    opt_state: Any
    step: jax.Array
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Params, tx: optax.GradientTransformation) -> TrainState:
        return cls(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32), tx=tx)

    def apply_gradients(self, grads: Params) -> TrainState:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state, step=self.step + 1)


class Agent(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    target_critic: Params
    temperature: TrainState
    # Algorithm-specific states: "cql_alpha" (Lagrange CQL) or "value" (IQL).
    aux: dict[str, TrainState]
    rng: jax.Array
    env_steps: jax.Array  # transitions ingested (counted by the learner)
    grad_steps: jax.Array  # critic updates performed
    config: AgentConfig = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)

    @property
    def nets(self) -> dict[str, nn.Module]:
        return build_networks(self.config, self.action_dim)


@functools.lru_cache(maxsize=64)
def _optimizers(cfg: AgentConfig) -> dict[str, optax.GradientTransformation]:
    # Cached: equal configs share optimizer objects, so agents built from the same config
    # (a restored checkpoint, a hand-off) have identical tree structure and reuse compilations.
    return {
        "actor": optax.adam(cfg.actor_lr),
        "critic": optax.adam(cfg.critic_lr),
        "temperature": optax.adam(cfg.temperature_lr),
        "cql_alpha": optax.adam(cfg.cql.alpha_lr),
        "value": optax.adam(cfg.iql.value_lr),
    }


def create_agent(cfg: AgentConfig, obs_example: dict[str, np.ndarray], action_dim: int, seed: int = 0) -> Agent:
    """Initialise an agent. ``obs_example`` is one observation dict (no batch axis)."""
    nets = build_networks(cfg, action_dim)
    obs = jax.tree.map(lambda x: jnp.asarray(x)[None], obs_example)
    act = jnp.zeros((1, action_dim), jnp.float32)
    rng = jax.random.PRNGKey(seed)
    rng, *keys = jax.random.split(rng, 6)
    init_args = {
        "actor": (obs,),
        "critic": (obs, act),
        "temperature": (),
        "cql_alpha": (),
        "value": (obs,),
    }
    # Eager, op by op, on purpose: compiled as one program (2026-12-04, jaxlib 0.10.2) a ResNet
    # image agent's initialisation never finished in 2 of 5 fresh processes on two cores (every
    # XLA:CPU pool thread idle, the caller waiting on the result forever; the image job's
    # pre-training and its learner both hung there), and in none of 6 eagerly.
    params = {name: module.init(key, *init_args[name])["params"] for (name, module), key in zip(nets.items(), keys)}
    if cfg.encoder.kind == "resnet10" and cfg.encoder.pretrained_path:
        for name in ("actor", "critic", "value"):
            if name in params:
                params[name] = load_pretrained_trunks(params[name], cfg.encoder.pretrained_path, f"{name}/")
    if caches_features(cfg.encoder):
        # One frozen trunk for every network (as SERL's one pretrained ResNet): a frame's features
        # are then the same for the actor and the critics, and can be computed once.
        trunks = {k: v for k, v in params["critic"]["encoder"].items() if k.startswith("trunk_")}
        for name in ("actor", "value"):
            if name in params:
                params[name] = {**params[name], "encoder": {**params[name]["encoder"], **trunks}}
    if cfg.encoder.share_encoder:
        params["actor"] = {**params["actor"], "encoder": params["critic"]["encoder"]}
    tx = _optimizers(cfg)
    states = {name: TrainState.create(p, tx[name]) for name, p in params.items()}
    agent = Agent(
        actor=states.pop("actor"),
        critic=states["critic"],
        target_critic=jax.tree.map(jnp.copy, params["critic"]),
        temperature=states["temperature"],
        aux={k: v for k, v in states.items() if k not in ("critic", "temperature")},
        rng=rng,
        env_steps=jnp.zeros((), jnp.int32),
        grad_steps=jnp.zeros((), jnp.int32),
        config=cfg,
        action_dim=action_dim,
    )
    return unaliased(strong_types(agent))


def unaliased(tree: Any) -> Any:
    """``tree`` with every array that appears twice copied, so that each leaf owns its buffer.

    The frozen trunk and ``share_encoder`` put the critic's arrays into the actor's (and value's)
    parameters; an update that donates the agent (every backend but the CPU) then fails with
    "Attempt to donate the same buffer twice" (seen on an H200, 2026-12-04)."""
    seen: set[int] = set()

    def own(x: Any) -> Any:
        if not isinstance(x, jax.Array):
            return x
        if id(x) in seen:
            return jnp.copy(x)
        seen.add(id(x))
        return x

    return jax.tree.map(own, tree)


def strong_types(tree: Any) -> Any:
    """Drop weak types (python-scalar origins) so that updated outputs have exactly the input
    signature; otherwise the first few updates each recompile (seen: 3 x 2 s)."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def soft_update(target: Params, online: Params, tau: float) -> Params:
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def apply_critic_gradients(agent: Agent, grads: Params, rng: jax.Array, **changes: Any) -> Agent:
    """The one critic-step epilogue: Adam step, Polyak target update, gradient-step count."""
    critic = agent.critic.apply_gradients(grads)
    return agent.replace(
        critic=critic,
        target_critic=soft_update(agent.target_critic, critic.params, agent.config.tau),
        rng=rng,
        grad_steps=agent.grad_steps + 1,
        **changes,
    )


def policy_params(agent: Agent, params: Params | None = None) -> Params:
    """The actor's parameters (``params``, default the agent's) as the learner evaluates them: with
    ``share_encoder``, the critic's current encoder with gradients stopped in place of its own."""
    params = agent.actor.params if params is None else params
    if not agent.config.encoder.share_encoder:
        return params
    return {**params, "encoder": jax.lax.stop_gradient(agent.critic.params["encoder"])}


def apply_actor_gradients(agent: Agent, grads: Params) -> TrainState:
    """The actor's Adam step; with ``share_encoder`` its encoder then takes the critic's (what
    is published to the robot and used for acting)."""
    actor = agent.actor.apply_gradients(grads)
    if agent.config.encoder.share_encoder:
        actor = actor.replace(params={**actor.params, "encoder": agent.critic.params["encoder"]})
    return actor


def target_entropy(cfg: AgentConfig, action_dim: int) -> float:
    return -float(action_dim) if cfg.target_entropy is None else cfg.target_entropy


# --------------------------------------------------------------------------- acting (inference)


@functools.partial(jax.jit, static_argnames=("module", "deterministic"))
def act_with_params(params: Params, module: nn.Module, obs: Any, key: jax.Array, deterministic: bool) -> jax.Array:
    """Actions from actor parameters alone (what the robot-side actor holds)."""
    mean, log_std = forward(module, params, obs)
    if deterministic:
        return jnp.tanh(mean)
    return sample_tanh_gaussian(key, mean, log_std)[0]


def act(agent: Agent, obs: dict[str, np.ndarray], key: jax.Array, deterministic: bool = False) -> np.ndarray:
    """Actions for a batch of observations (leading batch axis on every key)."""
    return np.asarray(act_with_params(agent.actor.params, agent.nets["actor"], obs, key, deterministic))


def policy_fn(
    agent: Agent, deterministic: bool = True, seed: int = 0
) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """A callable that maps one (unbatched) observation to one action, for rollouts."""
    key = jax.random.PRNGKey(seed)

    def policy(obs: Mapping[str, np.ndarray]) -> np.ndarray:
        nonlocal key
        key, sub = jax.random.split(key)
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        return act(agent, batch, sub, deterministic)[0]

    return policy
