"""The measurements the WSRL paper explains its results with, cheap enough to leave on.

On a fixed probe batch (offline transitions held out from training, or the first online ones):
- ``q``: the ensemble's mean Q of the probe's own actions (the paper's Q-value plots: a
  "downward spiral" shows as Q falling on the offline probe after fine-tuning starts);
- ``td_error``: mean |Q(s, a) - target| with the agent's own TD target;
- ``kl_policy``: KL(pi_pre || pi), Monte-Carlo over actions sampled from the pre-trained policy;
- ``kl_means``: the KL between the two policies' Gaussians (before the tanh) with their means and
  a fixed unit covariance: 0.5 |mu_pre - mu|^2. Unlike ``kl_policy`` it does not grow as the
  online policy's entropy shrinks (SAC's temperature falling), only as its actions move;
- ``kl_q_softmax``: KL between the softmax over sampled actions of the pre-trained Q and of the
  current Q (how far the Q-function's preferences moved).
And on rollouts: ``chattering``, the mean size of the change between consecutive actions, and
``q_minus_return``: the ensemble's mean Q of the actions taken minus the discounted return that
followed them in the same episode (``shared.returns.episode_returns``, whose convention gives an
episode that never succeeds the value of failing forever). This is the paper's C3 as a bias: a
pessimistic Q sits below what its policy actually earns, an over-optimistic one above; Q merely
falling (on the offline probe, to -1/(1 - gamma) for a policy that never succeeds) is not it.
On evaluation rollouts the actions are the policy's means, so the return is that of the
deterministic policy, which Q (of the sampled policy) slightly under-values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.agents import Agent
from shared.agents.sac import compute_target
from shared.networks import forward, sample_tanh_gaussian, tanh_gaussian_log_prob
from shared.returns import episode_returns

Batch = dict[str, Any]


def _q(agent: Agent, obs: Any, actions: jax.Array) -> jax.Array:
    """Ensemble-mean Q; ``actions`` [B, A] or [B, N, A]."""
    return forward(agent.nets["critic"], agent.critic.params, obs, actions).mean(axis=0)


def probe_values(agent: Agent, probe: Batch, key: jax.Array) -> dict[str, float]:
    """Mean Q and mean absolute TD error of ``agent`` on a probe batch."""
    q = _q(agent, probe["observations"], probe["actions"])
    target, _ = compute_target(agent, probe, key)
    return {"q": float(q.mean()), "td_error": float(jnp.abs(q - target).mean())}


def policy_kl(pre: Agent, agent: Agent, obs: Any, key: jax.Array, samples: int = 8) -> float:
    """KL(pi_pre || pi) at the probe's states, averaged over them."""
    mean_p, log_std_p = forward(pre.nets["actor"], pre.actor.params, obs)
    actions, logp_pre = sample_tanh_gaussian(key, mean_p, log_std_p, (samples,))  # [B, N, A], [B, N]
    mean, log_std = forward(agent.nets["actor"], agent.actor.params, obs)
    logp = tanh_gaussian_log_prob(mean[:, None], log_std[:, None], actions)
    return float((logp_pre - logp).mean())


def mean_kl(pre: Agent, agent: Agent, obs: Any) -> float:
    """KL(N(mu_pre, I) || N(mu, I)) = 0.5 |mu_pre - mu|^2 at the probe's states, averaged."""
    mean_p, _ = forward(pre.nets["actor"], pre.actor.params, obs)
    mean, _ = forward(agent.nets["actor"], agent.actor.params, obs)
    return float(0.5 * jnp.square(mean_p - mean).sum(-1).mean())


def q_softmax_kl(pre: Agent, agent: Agent, obs: Any, key: jax.Array, samples: int = 16) -> float:
    """KL(softmax Q_pre || softmax Q) over uniformly sampled actions at the probe's states."""
    b = jax.tree.leaves(obs)[0].shape[0]
    actions = jax.random.uniform(key, (b, samples, agent.action_dim), minval=-1.0, maxval=1.0)
    log_p = jax.nn.log_softmax(_q(pre, obs, actions), axis=-1)
    log_q = jax.nn.log_softmax(_q(agent, obs, actions), axis=-1)
    return float((jnp.exp(log_p) * (log_p - log_q)).sum(-1).mean())


def chattering(actions: list[np.ndarray], dones: list[bool]) -> float:
    """Mean L2 norm of the change between consecutive actions within episodes."""
    deltas = [
        float(np.linalg.norm(np.asarray(actions[i]) - np.asarray(actions[i - 1])))
        for i in range(1, len(actions))
        if not dones[i - 1]
    ]
    return float(np.mean(deltas)) if deltas else 0.0


def q_minus_return(agent: Agent, rollout: Batch, r_neg: float | None) -> dict[str, float]:
    """Mean Q of the actions taken, the mean return that followed them, and their difference."""
    returns = episode_returns(rollout["rewards"], rollout["dones"], agent.config.gamma, r_neg)
    q = np.asarray(_q(agent, rollout["observations"], rollout["actions"]), np.float64)
    return {"q": float(q.mean()), "return": float(returns.mean()), "q_minus_return": float((q - returns).mean())}


def diagnose(pre: Agent, agent: Agent, probes: dict[str, Batch], key: jax.Array) -> dict[str, float]:
    """Every probe measurement, named ``<probe>/<measure>``."""
    out: dict[str, float] = {}
    for name, probe in probes.items():
        k1, k2, k3, key = jax.random.split(key, 4)
        for measure, value in probe_values(agent, probe, k1).items():
            out[f"{name}/{measure}"] = value
        out[f"{name}/kl_policy"] = policy_kl(pre, agent, probe["observations"], k2)
        out[f"{name}/kl_means"] = mean_kl(pre, agent, probe["observations"])
        out[f"{name}/kl_q_softmax"] = q_softmax_kl(pre, agent, probe["observations"], k3)
    return out
