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
followed them in the same episode (``shared.data.returns.episode_returns``, whose convention gives an
episode that never succeeds the value of failing forever). This is the paper's C3 as a bias: a
pessimistic Q sits below what its policy actually earns, an over-optimistic one above; Q merely
falling (on the offline probe, to -1/(1 - gamma) for a policy that never succeeds) is not it.
On evaluation rollouts the actions are the policy's means, so the return is that of the
deterministic policy, which Q (of the sampled policy) slightly under-values.
On a probe whose rows carry Monte-Carlo returns (``mc_returns``, finite where the episode
finished) ``q_minus_return`` is the same difference; on offline data the return is that of the
policy that collected it, so a good fine-tuned policy sits above it.

Each measurement is one compiled call (``diagnose`` is one per probe): run eagerly, each
network call was traced op by op again, about 50 ms per forward pass with tiny networks, and the
smoke study spent 61 s of its 270 in them. Rollout batches, whose length varies, are padded to a
power of two so that a few shapes serve every evaluation.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.data.returns import episode_returns
from shared.learning.agents import Agent
from shared.learning.agents.sac import compute_target
from shared.learning.networks import forward, sample_tanh_gaussian, tanh_gaussian_log_prob

Batch = dict[str, Any]


def _q(agent: Agent, obs: Any, actions: jax.Array) -> jax.Array:
    """Ensemble-mean Q; ``actions`` [B, A] or [B, N, A]."""
    return forward(agent.nets["critic"], agent.critic.params, obs, actions).mean(axis=0)


def _probe_values(agent: Agent, probe: Batch, key: jax.Array) -> dict[str, jax.Array]:
    q = _q(agent, probe["observations"], probe["actions"])
    target, _ = compute_target(agent, probe, key)
    out = {"q": q.mean(), "td_error": jnp.abs(q - target).mean()}
    if "mc_returns" in probe:  # rows of finished episodes: Q minus the return that followed (NaN: none)
        mc = probe["mc_returns"]
        known = jnp.isfinite(mc)
        bias = jnp.where(known, q - jnp.where(known, mc, 0.0), 0.0).sum() / jnp.maximum(known.sum(), 1)
        out["q_minus_return"] = jnp.where(known.any(), bias, jnp.nan)
    return out


def _policy_kl(pre: Agent, agent: Agent, obs: Any, key: jax.Array, samples: int = 8) -> jax.Array:
    mean_p, log_std_p = forward(pre.nets["actor"], pre.actor.params, obs)
    actions, logp_pre = sample_tanh_gaussian(key, mean_p, log_std_p, (samples,))  # [B, N, A], [B, N]
    mean, log_std = forward(agent.nets["actor"], agent.actor.params, obs)
    logp = tanh_gaussian_log_prob(mean[:, None], log_std[:, None], actions)
    return (logp_pre - logp).mean()


def _mean_kl(pre: Agent, agent: Agent, obs: Any) -> jax.Array:
    mean_p, _ = forward(pre.nets["actor"], pre.actor.params, obs)
    mean, _ = forward(agent.nets["actor"], agent.actor.params, obs)
    return 0.5 * jnp.square(mean_p - mean).sum(-1).mean()


def _q_softmax_kl(pre: Agent, agent: Agent, obs: Any, key: jax.Array, samples: int = 16) -> jax.Array:
    b = jax.tree.leaves(obs)[0].shape[0]
    actions = jax.random.uniform(key, (b, samples, agent.action_dim), minval=-1.0, maxval=1.0)
    log_p = jax.nn.log_softmax(_q(pre, obs, actions), axis=-1)
    log_q = jax.nn.log_softmax(_q(agent, obs, actions), axis=-1)
    return (jnp.exp(log_p) * (log_p - log_q)).sum(-1).mean()


def probe_values(agent: Agent, probe: Batch, key: jax.Array) -> dict[str, float]:
    """Mean Q and mean absolute TD error of ``agent`` on a probe batch (and ``q_minus_return``
    where it carries Monte-Carlo returns)."""
    return {k: float(v) for k, v in _jit_probe_values(agent, probe, key).items()}


def policy_kl(pre: Agent, agent: Agent, obs: Any, key: jax.Array, samples: int = 8) -> float:
    """KL(pi_pre || pi) at the probe's states, averaged over them."""
    return float(_jit_policy_kl(pre, agent, obs, key, samples))


def mean_kl(pre: Agent, agent: Agent, obs: Any) -> float:
    """KL(N(mu_pre, I) || N(mu, I)) = 0.5 |mu_pre - mu|^2 at the probe's states, averaged."""
    return float(_jit_mean_kl(pre, agent, obs))


def q_softmax_kl(pre: Agent, agent: Agent, obs: Any, key: jax.Array, samples: int = 16) -> float:
    """KL(softmax Q_pre || softmax Q) over uniformly sampled actions at the probe's states."""
    return float(_jit_q_softmax_kl(pre, agent, obs, key, samples))


_jit_probe_values = jax.jit(_probe_values)
_jit_policy_kl = jax.jit(_policy_kl, static_argnames="samples")
_jit_mean_kl = jax.jit(_mean_kl)
_jit_q_softmax_kl = jax.jit(_q_softmax_kl, static_argnames="samples")
_jit_q = jax.jit(_q)


def chattering(actions: list[np.ndarray], dones: list[bool]) -> float:
    """Mean L2 norm of the change between consecutive actions within episodes."""
    deltas = [
        float(np.linalg.norm(np.asarray(actions[i]) - np.asarray(actions[i - 1])))
        for i in range(1, len(actions))
        if not dones[i - 1]
    ]
    return float(np.mean(deltas)) if deltas else 0.0


def padded_q(agent: Agent, obs: Any, actions: np.ndarray) -> np.ndarray:
    """Ensemble-mean Q of each row, compiled for the next power of two rows (at least 64): the
    rows beyond ``len(actions)`` repeat the last one and are dropped (each row's Q is its own)."""
    n = len(actions)
    size = max(64, 1 << max(n - 1, 0).bit_length())

    def pad(x: Any) -> np.ndarray:
        x = np.asarray(x)
        return np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)]) if size > n else x

    return np.asarray(_jit_q(agent, jax.tree.map(pad, obs), pad(actions)))[:n]


def q_minus_return(agent: Agent, rollout: Batch, r_neg: float | None) -> dict[str, float]:
    """Mean Q of the actions taken, the mean return that followed them, and their difference."""
    returns = episode_returns(rollout["rewards"], rollout["dones"], agent.config.gamma, r_neg)
    q = padded_q(agent, rollout["observations"], rollout["actions"]).astype(np.float64)
    return {"q": float(q.mean()), "return": float(returns.mean()), "q_minus_return": float((q - returns).mean())}


@jax.jit
def _diagnose_probe(pre: Agent, agent: Agent, probe: Batch, key: jax.Array) -> dict[str, jax.Array]:
    k1, k2, k3 = jax.random.split(key, 3)
    out = dict(_probe_values(agent, probe, k1))
    out["kl_policy"] = _policy_kl(pre, agent, probe["observations"], k2)
    out["kl_means"] = _mean_kl(pre, agent, probe["observations"])
    out["kl_q_softmax"] = _q_softmax_kl(pre, agent, probe["observations"], k3)
    return out


def diagnose(pre: Agent, agent: Agent, probes: dict[str, Batch], key: jax.Array) -> dict[str, float]:
    """Every probe measurement, named ``<probe>/<measure>`` (``q_minus_return`` only for a probe
    that carries ``mc_returns``). One compiled call per probe: the study's offline and online
    probes have the same rows and keys, so one compilation serves both (compiled together they
    were one program twice the size, 12 s to compile per method in the smoke study)."""
    out: dict[str, float] = {}
    for name, probe in probes.items():
        key, sub = jax.random.split(key)
        # cut to what the measurements read, a probe without returns given "unknown" ones (-inf):
        # probes of one size then have one signature
        n = len(probe["actions"])
        batch = {k: probe[k] for k in ("observations", "next_observations")}
        for k in ("actions", "rewards", "masks"):
            batch[k] = np.asarray(probe[k], np.float32)
        batch["mc_returns"] = np.asarray(probe.get("mc_returns", np.full(n, -np.inf)), np.float32)
        values = jax.device_get(_diagnose_probe(pre, agent, batch, sub))
        for measure, v in values.items():
            if measure != "q_minus_return" or "mc_returns" in probe:
                out[f"{name}/{measure}"] = float(v)
    return out
