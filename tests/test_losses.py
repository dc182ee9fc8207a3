"""Loss functions against values computed by hand on tiny fixed inputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.config import CQLConfig
from shared.learning.agents.cql import cql_regularizer
from shared.learning.agents.iql import expectile_loss
from shared.learning.agents.sac import subset_indices, td_target


def test_td_target_takes_min_over_subset():
    next_q = jnp.array([[1.0, 5.0, -2.0], [3.0, 4.0, 0.0]])  # [k=2, B=3]
    rewards = jnp.array([0.0, 1.0, -1.0])
    masks = jnp.array([1.0, 0.0, 1.0])
    logp = jnp.array([0.2, 0.4, -1.0])
    out = td_target(next_q, rewards, masks, 0.9, logp, 0.5, backup_entropy=False)
    # min -> [1, 4, -2]; r + 0.9 * m * min
    np.testing.assert_allclose(out, [0.9, 1.0, -1.0 + 0.9 * -2.0], rtol=1e-6)


def test_td_target_entropy_backup():
    next_q = jnp.array([[1.0, 5.0, -2.0], [3.0, 4.0, 0.0]])
    out = td_target(next_q, jnp.zeros(3), jnp.ones(3), 0.9, jnp.array([0.2, 0.4, -1.0]), 0.5, True)
    # (min - 0.5 * logp) = [0.9, 3.8, -1.5], times 0.9
    np.testing.assert_allclose(out, [0.81, 3.42, -1.35], rtol=1e-6)


def test_td_target_max_over_sampled_actions_uses_chosen_log_prob():
    next_q = jnp.array([[[1.0, 3.0, 2.0]], [[2.0, 0.0, 5.0]]])  # [k=2, B=1, N=3]
    logp = jnp.array([[9.0, 9.0, 0.4]])
    # min over k -> [1, 0, 2]; max over actions -> 2 (action 2, logp 0.4)
    plain = td_target(next_q, jnp.array([1.0]), jnp.array([1.0]), 0.5, logp, 1.0, False)
    np.testing.assert_allclose(plain, [1.0 + 0.5 * 2.0])
    ent = td_target(next_q, jnp.array([1.0]), jnp.array([1.0]), 0.5, logp, 1.0, True)
    np.testing.assert_allclose(ent, [1.0 + 0.5 * (2.0 - 0.4)], rtol=1e-6)


def test_subset_indices_without_replacement_are_distinct():
    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    draws = np.stack([np.asarray(subset_indices(k, 10, 2, False)) for k in keys])
    assert (draws[:, 0] != draws[:, 1]).all()
    assert set(np.unique(draws)) == set(range(10))  # every member gets used
    with_repl = np.stack([np.asarray(subset_indices(k, 10, 2, True)) for k in keys])
    assert (with_repl[:, 0] == with_repl[:, 1]).any()  # ~10% of pairs repeat a member


def _cql_inputs(q_rand):
    # E = 1 critic, B = 1 sample, N = 1 action per source, A = 1
    a = lambda v: jnp.array([[[v]]])
    return {
        "q_data": jnp.array([[1.0]]),
        "q_rand": a(q_rand),
        "q_cur": a(-2.0),
        "q_next": a(0.0),
        "log_prob_cur": jnp.array([[0.1]]),
        "log_prob_next": jnp.array([[-0.3]]),
        "action_dim": 1,
    }


def test_calql_bound_applies_to_policy_actions_before_logsumexp():
    cfg = CQLConfig(importance_sample=True, temperature=1.0)
    out = cql_regularizer(**_cql_inputs(0.5), mc_returns=jnp.array([-1.0]), cfg=cfg)
    # Bound: q_cur = max(-2, -1) = -1, q_next = max(0, -1) = 0.
    # Importance weights: uniform density on [-1, 1] is 0.5 -> subtract log(0.5).
    terms = [0.5 - math.log(0.5), 0.0 - (-0.3), -1.0 - 0.1]
    expected = math.log(sum(math.exp(t) for t in terms)) - 1.0
    np.testing.assert_allclose(out, [[expected]], rtol=1e-5)
    assert abs(expected - 0.60542) < 1e-4


def test_calql_bound_does_not_raise_uniform_action_values():
    cfg = CQLConfig(importance_sample=True)
    out = cql_regularizer(**_cql_inputs(-5.0), mc_returns=jnp.array([-1.0]), cfg=cfg)
    terms = [-5.0 - math.log(0.5), 0.3, -1.1]  # the uniform -5 stays below the bound of -1
    expected = math.log(sum(math.exp(t) for t in terms)) - 1.0
    np.testing.assert_allclose(out, [[expected]], rtol=1e-5)


def test_plain_cql_has_no_bound():
    cfg = CQLConfig(importance_sample=True)
    out = cql_regularizer(**_cql_inputs(0.5), mc_returns=None, cfg=cfg)
    terms = [0.5 - math.log(0.5), 0.3, -2.0 - 0.1]
    expected = math.log(sum(math.exp(t) for t in terms)) - 1.0
    np.testing.assert_allclose(out, [[expected]], rtol=1e-5)


def test_cql_without_importance_sampling_includes_data_action():
    cfg = CQLConfig(importance_sample=False, temperature=2.0)
    out = cql_regularizer(**_cql_inputs(0.5), mc_returns=None, cfg=cfg)
    values = [0.5, 1.0, 0.0, -2.0]  # uniform, data, pi(s'), pi(s)
    expected = 2.0 * math.log(sum(math.exp(v / 2.0) for v in values)) - 1.0
    np.testing.assert_allclose(out, [[expected]], rtol=1e-5)


@pytest.mark.parametrize("tau", [0.7, 0.9])
def test_expectile_loss(tau):
    out = expectile_loss(jnp.array([2.0, -2.0, 0.5]), tau)
    np.testing.assert_allclose(out, [tau * 4.0, (1 - tau) * 4.0, tau * 0.25], rtol=1e-6)
