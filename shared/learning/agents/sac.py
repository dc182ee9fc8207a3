"""Soft Actor-Critic with a critic ensemble, subset-min targets and UTD with actor delay.

``critic_step`` and ``actor_step`` are the two phases every algorithm here is made of;
``shared.learning.agents.update`` fuses ``utd`` critic steps and one actor step into one compiled call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from shared.learning.agents.base import (
    Agent,
    Batch,
    apply_actor_gradients,
    apply_critic_gradients,
    policy_params,
    target_entropy,
)
from shared.learning.augmentation import augment_observations
from shared.learning.networks import critic_subset_module, forward, gather_members, sample_tanh_gaussian


def td_target(
    next_q: jax.Array,
    rewards: jax.Array,
    masks: jax.Array,
    gamma: float,
    next_log_prob: jax.Array,
    temperature: jax.Array | float,
    backup_entropy: bool,
) -> jax.Array:
    """r + gamma * mask * backup.

    next_q: [k, B] target Q of the sampled subset, or [k, B, N] for N sampled next actions.
    The backup is the min over the k members; with N actions, the max over actions of that min
    (the entropy term, when on, uses the log-probability of the chosen action).
    """
    q = next_q.min(axis=0)
    if q.ndim == 2:
        best = jnp.argmax(q, axis=-1)[:, None]
        q = jnp.take_along_axis(q, best, axis=-1)[:, 0]
        next_log_prob = jnp.take_along_axis(next_log_prob, best, axis=-1)[:, 0]
    if backup_entropy:
        q = q - temperature * next_log_prob
    return rewards + gamma * masks * q


def subset_indices(key: jax.Array, num: int, k: int, with_replacement: bool) -> jax.Array:
    if with_replacement:
        return jax.random.randint(key, (k,), 0, num)
    return jax.random.choice(key, num, (k,), replace=False)


def augment_batch(agent: Agent, batch: Batch, key: jax.Array) -> Batch:
    enc = agent.config.encoder
    if enc.kind == "state" or enc.augment_pad <= 0:
        return batch
    k1, k2 = jax.random.split(key)
    return {
        **batch,
        "observations": augment_observations(k1, batch["observations"], enc.image_keys, enc.augment_pad),
        "next_observations": augment_observations(k2, batch["next_observations"], enc.image_keys, enc.augment_pad),
    }


def compute_target(agent: Agent, batch: Batch, key: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """The SAC TD target from a random subset of the target critics (only those are evaluated)."""
    cfg = agent.config
    nets = agent.nets
    k_pi, k_sub = jax.random.split(key)
    next_obs = batch["next_observations"]
    mean, log_std = forward(nets["actor"], policy_params(agent), next_obs)
    shape = (cfg.num_backup_actions,) if cfg.num_backup_actions > 1 else ()
    next_actions, next_log_prob = sample_tanh_gaussian(k_pi, mean, log_std, shape)
    idx = subset_indices(k_sub, cfg.num_critics, cfg.num_min_critics, cfg.subsample_with_replacement)
    subset = critic_subset_module(nets["critic"], cfg.num_min_critics)
    next_q = forward(subset, gather_members(agent.target_critic, idx), next_obs, next_actions)
    temperature = forward(nets["temperature"], agent.temperature.params)
    target = td_target(
        next_q, batch["rewards"], batch["masks"], cfg.gamma, next_log_prob, temperature, cfg.backup_entropy
    )
    return jax.lax.stop_gradient(target), {"target_q": target.mean()}


def critic_step(agent: Agent, batch: Batch) -> tuple[Agent, dict[str, jax.Array]]:
    """One TD update of the whole ensemble; touches only critic, target critic, rng, counters."""
    rng, k_aug, k_target = jax.random.split(agent.rng, 3)
    batch = augment_batch(agent, batch, k_aug)
    target, info = compute_target(agent, batch, k_target)
    critic = agent.nets["critic"]

    def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        q = forward(critic, params, batch["observations"], batch["actions"])
        loss = ((q - target[None]) ** 2).mean()
        return loss, {"critic_loss": loss, "q": q.mean()}

    grads, loss_info = jax.grad(loss_fn, has_aux=True)(agent.critic.params)
    return apply_critic_gradients(agent, grads, rng), {**info, **loss_info}


def actor_step(agent: Agent, batch: Batch) -> tuple[Agent, dict[str, jax.Array]]:
    """Policy update (reparameterised, ensemble-mean Q) then the temperature update."""
    cfg = agent.config
    nets = agent.nets
    rng, k_aug, k_pi = jax.random.split(agent.rng, 3)
    obs = batch["observations"]
    if cfg.encoder.kind != "state":
        obs = augment_observations(k_aug, obs, cfg.encoder.image_keys, cfg.encoder.augment_pad)
    temperature = forward(nets["temperature"], agent.temperature.params)

    def actor_loss(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        mean, log_std = forward(nets["actor"], policy_params(agent, params), obs)
        actions, log_prob = sample_tanh_gaussian(k_pi, mean, log_std)
        qs = forward(nets["critic"], agent.critic.params, obs, actions)
        q = qs.min(axis=0) if cfg.actor_q == "min" else qs.mean(axis=0)
        loss = (temperature * log_prob - q).mean()
        return loss, {"actor_loss": loss, "entropy": -log_prob.mean()}

    grads, info = jax.grad(actor_loss, has_aux=True)(agent.actor.params)
    actor = apply_actor_gradients(agent, grads)
    entropy = jax.lax.stop_gradient(info["entropy"])
    goal = target_entropy(cfg, agent.action_dim)

    def temp_loss(params: Any) -> jax.Array:
        return forward(nets["temperature"], params) * (entropy - goal)

    temp = agent.temperature.apply_gradients(jax.grad(temp_loss)(agent.temperature.params))
    info["temperature"] = temperature
    return agent.replace(actor=actor, temperature=temp, rng=rng), info
