"""Implicit Q-Learning: expectile value regression and advantage-weighted actor updates."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from shared.learning.agents.base import Agent, Batch, apply_actor_gradients, apply_critic_gradients, policy_params
from shared.learning.agents.sac import augment_batch
from shared.learning.networks import forward, tanh_gaussian_log_prob


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """|tau - 1(diff < 0)| * diff^2, elementwise; diff = Q - V."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def critic_step(agent: Agent, batch: Batch) -> tuple[Agent, dict[str, jax.Array]]:
    """V update (expectile of the target Q's min), then Q update towards r + gamma V(s')."""
    cfg = agent.config
    nets = agent.nets
    rng, k_aug = jax.random.split(agent.rng)
    batch = augment_batch(agent, batch, k_aug)
    obs = batch["observations"]
    q_target = forward(nets["critic"], agent.target_critic, obs, batch["actions"]).min(axis=0)

    def value_loss(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        v = forward(nets["value"], params, obs)
        loss = expectile_loss(q_target - v, cfg.iql.expectile).mean()
        return loss, {"value_loss": loss, "v": v.mean()}

    grads, v_info = jax.grad(value_loss, has_aux=True)(agent.aux["value"].params)
    value = agent.aux["value"].apply_gradients(grads)
    next_v = forward(nets["value"], value.params, batch["next_observations"])
    target = batch["rewards"] + cfg.gamma * batch["masks"] * next_v

    def q_loss(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        q = forward(nets["critic"], params, obs, batch["actions"])
        loss = ((q - target[None]) ** 2).mean()
        return loss, {"critic_loss": loss, "q": q.mean()}

    grads, q_info = jax.grad(q_loss, has_aux=True)(agent.critic.params)
    agent = apply_critic_gradients(agent, grads, rng, aux={**agent.aux, "value": value})
    return agent, {**v_info, **q_info, "target_q": target.mean()}


def actor_step(agent: Agent, batch: Batch) -> tuple[Agent, dict[str, jax.Array]]:
    """Maximise exp(beta * (Q - V)) * log pi(a_data | s), weights capped at ``max_weight``."""
    cfg = agent.config
    nets = agent.nets
    rng, k_aug = jax.random.split(agent.rng)
    obs = augment_batch(agent, batch, k_aug)["observations"]
    q = forward(nets["critic"], agent.target_critic, obs, batch["actions"]).min(axis=0)
    v = forward(nets["value"], agent.aux["value"].params, obs)
    weights = jnp.minimum(jnp.exp(cfg.iql.beta * (q - v)), cfg.iql.max_weight)

    def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        mean, log_std = forward(nets["actor"], policy_params(agent, params), obs)
        log_prob = tanh_gaussian_log_prob(mean, log_std, batch["actions"])
        loss = -(weights * log_prob).mean()
        return loss, {"actor_loss": loss, "adv_weight": weights.mean()}

    grads, info = jax.grad(loss_fn, has_aux=True)(agent.actor.params)
    return agent.replace(actor=apply_actor_gradients(agent, grads), rng=rng), info
