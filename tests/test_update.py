"""UTD with actor delay: critic-only steps must not move actor or temperature state."""

import jax
import numpy as np
import pytest
from helpers import random_batch, state_obs, tiny_config, trees_equal

from shared.agents import PHASES, create_agent, make_update


@pytest.mark.parametrize("algo", ["sac", "calql", "iql"])
def test_fused_update_is_utd_critic_steps_then_one_actor_step(algo):
    cfg = tiny_config(algo, utd=4, num_critics=4 if algo != "iql" else 2, num_min_critics=2)
    agent = create_agent(cfg, state_obs(), 2, seed=3)
    batch = random_batch(state_obs(), 2, (4, 16))
    fused, info = make_update(cfg, donate=False)(agent, batch)

    critic_phase, actor_phase = PHASES[algo]
    critic_phase, actor_phase = jax.jit(critic_phase), jax.jit(actor_phase)
    manual = agent
    for i in range(4):
        prev = manual
        manual, _ = critic_phase(manual, jax.tree.map(lambda x, i=i: x[i], batch))
        # critic-only step: actor and temperature parameters AND optimizer moments untouched
        assert trees_equal(manual.actor, prev.actor)
        assert trees_equal(manual.temperature, prev.temperature)
        assert not trees_equal(manual.critic.params, prev.critic.params)
    manual, _ = actor_phase(manual, jax.tree.map(lambda x: x[3], batch))

    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(manual)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    assert int(fused.critic.step) == 4 and int(fused.grad_steps) == 4
    assert int(fused.actor.step) == 1
    assert not trees_equal(fused.actor.params, agent.actor.params)
    assert all(np.isfinite(float(v)) for v in info.values())


def test_unfused_path_matches_fused():
    cfg = tiny_config("sac", utd=3)
    agent = create_agent(cfg, state_obs(), 2, seed=0)
    batch = random_batch(state_obs(), 2, (3, 8))
    a, _ = make_update(cfg.__class__(**{**cfg.__dict__, "fuse_utd": True}), donate=False)(agent, batch)
    b, _ = make_update(cfg.__class__(**{**cfg.__dict__, "fuse_utd": False}), donate=False)(agent, batch)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


def test_update_does_not_recompile_after_first_call():
    cfg = tiny_config("sac", utd=2)
    agent = create_agent(cfg, state_obs(), 2)
    update = make_update(cfg, donate=False)
    batch = random_batch(state_obs(), 2, (2, 8))
    agent, _ = update(agent, batch)
    size = update._cache_size()
    for _ in range(3):
        agent, _ = update(agent, batch)
    assert update._cache_size() == size == 1


def test_lagrange_alpha_moves_with_the_gap():
    cfg = tiny_config("cql", utd=1)
    cfg = cfg.__class__(
        **{**cfg.__dict__, "cql": cfg.cql.__class__(lagrange=True, alpha=1.0, target_action_gap=-100.0)}
    )
    agent = create_agent(cfg, state_obs(), 2)
    batch = random_batch(state_obs(), 2, (1, 16))
    new, _info = make_update(cfg, donate=False)(agent, batch)
    # gap >> target: gradient ascent on alpha raises it
    assert float(new.aux["cql_alpha"].params["log_value"]) > float(agent.aux["cql_alpha"].params["log_value"])
