"""CQL and Cal-QL critic updates (the actor update is SAC's).

Cal-QL (Nakamoto et al., 2023) is CQL whose pushed-down Q values for policy actions are first
lower-bounded by the Monte-Carlo return-to-go of the data, so the learned Q stays calibrated
(never below the behaviour policy's value) and online fine-tuning does not start with a dip.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.config import CQLConfig
from shared.learning.agents.base import Agent, Batch, apply_critic_gradients, policy_params
from shared.learning.agents.sac import augment_batch, compute_target
from shared.learning.networks import critic_subset_module, forward, gather_members, sample_tanh_gaussian


def cql_regularizer(
    q_data: jax.Array,
    q_rand: jax.Array,
    q_cur: jax.Array,
    q_next: jax.Array,
    log_prob_cur: jax.Array,
    log_prob_next: jax.Array,
    mc_returns: jax.Array | None,
    action_dim: int,
    cfg: CQLConfig,
) -> jax.Array:
    """logsumexp over sampled actions minus Q(s, a_data), per critic and sample.

    q_data: [E, B]; q_rand, q_cur, q_next: [E, B, N] for uniform actions, pi(s) and pi(s')
    actions (all evaluated at s); log_prob_*: [B, N]; mc_returns: [B] or None (plain CQL).
    The Cal-QL bound max(Q, mc_return) applies to the policy-action values only, before the
    importance weights and the log-sum-exp.
    """
    if mc_returns is not None:
        bound = mc_returns[None, :, None]
        q_cur = jnp.maximum(q_cur, bound)
        q_next = jnp.maximum(q_next, bound)
    if cfg.importance_sample:
        log_uniform_density = action_dim * np.log(0.5)  # uniform on [-1, 1]^A
        cat = jnp.concatenate(
            [q_rand - log_uniform_density, q_next - log_prob_next[None], q_cur - log_prob_cur[None]],
            axis=-1,
        )
    else:
        cat = jnp.concatenate([q_rand, q_data[..., None], q_next, q_cur], axis=-1)
    t = cfg.temperature
    ood = t * jax.nn.logsumexp(cat / t, axis=-1)
    return jnp.clip(ood - q_data, cfg.clip_diff_min, cfg.clip_diff_max)


def penalty_members(num_critics: int, k: int, key: jax.Array) -> jax.Array:
    """The ``k`` critics the CQL penalty applies to this step, drawn without replacement from a
    key of their own (so runs that penalise every critic keep their random stream)."""
    return jax.random.choice(jax.random.fold_in(key, 1), num_critics, (k,), replace=False)


def critic_step(agent: Agent, batch: Batch) -> tuple[Agent, dict[str, jax.Array]]:
    cfg = agent.config
    ccfg = cfg.cql
    nets = agent.nets
    rng, k_aug, k_target, k_rand, k_cur, k_next = jax.random.split(agent.rng, 6)
    batch = augment_batch(agent, batch, k_aug)
    target, info = compute_target(agent, batch, k_target)
    obs = batch["observations"]
    n = ccfg.num_actions
    b = batch["actions"].shape[0]

    actor = lambda o: forward(nets["actor"], policy_params(agent), o)
    a_rand = jax.random.uniform(k_rand, (b, n, agent.action_dim), minval=-1.0, maxval=1.0)
    mean_cur, log_std_cur = actor(obs)
    mean_next, log_std_next = actor(batch["next_observations"])
    a_cur, lp_cur = sample_tanh_gaussian(k_cur, mean_cur, log_std_cur, (n,))
    a_next, lp_next = sample_tanh_gaussian(k_next, mean_next, log_std_next, (n,))
    a_cur, lp_cur, a_next, lp_next = jax.lax.stop_gradient((a_cur, lp_cur, a_next, lp_next))
    sampled = jnp.concatenate([a_rand, a_cur, a_next], axis=1)  # [B, 3N, A]
    mc = batch["mc_returns"] if cfg.algo == "calql" else None

    if ccfg.lagrange:
        alpha = forward(nets["cql_alpha"], agent.aux["cql_alpha"].params)
        alpha = jnp.clip(alpha, 0.0, 1e6)
    else:
        alpha = ccfg.alpha

    k = ccfg.penalty_critics
    penalised = penalty_members(cfg.num_critics, k, k_rand) if k is not None else None

    def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        q_data = forward(nets["critic"], params, obs, batch["actions"])
        td = ((q_data - target[None]) ** 2).mean()
        if penalised is None:
            q_s = forward(nets["critic"], params, obs, sampled)  # [E, B, 3N]
            q_pen = q_data
        else:  # only the chosen members are evaluated at the sampled actions
            q_s = forward(
                critic_subset_module(nets["critic"], len(penalised)), gather_members(params, penalised), obs, sampled
            )
            q_pen = q_data[penalised]
        q_rand, q_cur, q_next = q_s[..., :n], q_s[..., n : 2 * n], q_s[..., 2 * n :]
        diff = cql_regularizer(q_pen, q_rand, q_cur, q_next, lp_cur, lp_next, mc, agent.action_dim, ccfg)
        gap = diff.mean()
        penalty = jax.lax.stop_gradient(alpha) * (gap - (ccfg.target_action_gap if ccfg.lagrange else 0.0))
        loss = td + penalty
        return loss, {"critic_loss": loss, "td_loss": td, "cql_gap": gap, "q": q_data.mean()}

    grads, loss_info = jax.grad(loss_fn, has_aux=True)(agent.critic.params)
    aux = dict(agent.aux)
    if ccfg.lagrange:
        gap = jax.lax.stop_gradient(loss_info["cql_gap"])

        def alpha_loss(params: Any) -> jax.Array:
            a = forward(nets["cql_alpha"], params)
            return -a * (gap - ccfg.target_action_gap)  # ascent on alpha: grows while gap > target

        aux["cql_alpha"] = aux["cql_alpha"].apply_gradients(jax.grad(alpha_loss)(aux["cql_alpha"].params))
    agent = apply_critic_gradients(agent, grads, rng, aux=aux)
    return agent, {**info, **loss_info, "cql_alpha": jnp.asarray(alpha, jnp.float32)}
