"""UTD with actor delay: critic-only steps must not move actor or temperature state."""

import jax
import numpy as np
import pytest

from shared.learning.agents import PHASES, create_agent, make_update
from tests.helpers import TINY, random_batch, state_obs, tiny_config, trees_equal


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


def test_the_official_codes_actor_batch_is_every_utd_minibatch():
    from dataclasses import replace

    cfg = tiny_config("sac", utd=3, actor_batch="all")
    agent = create_agent(cfg, state_obs(), 2, seed=1)
    batch = random_batch(state_obs(), 2, (3, 8))
    for fuse in (True, False):
        got, _ = make_update(replace(cfg, fuse_utd=fuse), donate=False)(agent, batch)
        critic_phase, actor_phase = (jax.jit(p) for p in PHASES["sac"])
        manual = agent
        for i in range(3):
            manual, _ = critic_phase(manual, jax.tree.map(lambda x, i=i: x[i], batch))
        flat = jax.tree.map(lambda x: x.reshape((24, *x.shape[2:])), batch)  # 3 x 8 rows, one batch
        manual, _ = actor_phase(manual, flat)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(manual)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("reduction", ["mean", "min"])
def test_the_actor_objective_reduces_the_ensemble_as_configured(reduction):
    from shared.learning.agents import sac
    from shared.learning.networks import forward, sample_tanh_gaussian

    cfg = tiny_config("sac", num_critics=4, actor_q=reduction)
    agent = create_agent(cfg, state_obs(), 2, seed=2)
    batch = jax.tree.map(lambda x: x[0], random_batch(state_obs(), 2, (1, 16)))
    _, info = jax.jit(sac.actor_step)(agent, batch)  # compiled once, not op by op
    # the same loss by hand, from the same random draws
    _, _, k_pi = jax.random.split(agent.rng, 3)
    mean, log_std = forward(agent.nets["actor"], agent.actor.params, batch["observations"])
    actions, log_prob = sample_tanh_gaussian(k_pi, mean, log_std)
    qs = np.asarray(forward(agent.nets["critic"], agent.critic.params, batch["observations"], actions))
    q = qs.min(axis=0) if reduction == "min" else qs.mean(axis=0)
    temperature = float(forward(agent.nets["temperature"], agent.temperature.params))
    assert float(info["actor_loss"]) == pytest.approx(float(np.mean(temperature * np.asarray(log_prob) - q)), rel=1e-5)


@pytest.mark.slow
def test_the_cql_penalty_on_a_random_subset_moves_only_those_critics_beyond_td():
    from dataclasses import replace

    from shared.config import CQLConfig
    from shared.learning.agents import cql

    base = tiny_config("calql", utd=1, num_critics=4)
    pen = replace(base, cql=CQLConfig(alpha=5.0, penalty_critics=2))
    none = replace(base, cql=CQLConfig(alpha=0.0))  # TD only
    batch = jax.tree.map(lambda x: x[0], random_batch(state_obs(), 2, (1, 16)))
    a = create_agent(pen, state_obs(), 2, seed=4)
    b = create_agent(none, state_obs(), 2, seed=4)
    step = jax.jit(cql.critic_step)  # compiled once: run eagerly, each of its small ops compiles alone (minutes)
    with_pen, info = step(a, batch)
    td_only, _ = step(b, batch)
    # which members this step penalised: the same draw the step makes
    _, _, _, k_rand, _, _ = jax.random.split(a.rng, 6)
    chosen = set(np.asarray(cql.penalty_members(4, 2, k_rand)).tolist())
    assert len(chosen) == 2 and np.isfinite(float(info["cql_gap"]))
    # Adam's first step is lr * sign(gradient): members the penalty never touched move exactly as
    # with TD alone; a penalised member moves differently somewhere (where the penalty flips a sign).
    moved_alike = dict.fromkeys(range(4), True)
    for leaf_p, leaf_t in zip(jax.tree.leaves(with_pen.critic.params), jax.tree.leaves(td_only.critic.params)):
        p, t = np.asarray(leaf_p), np.asarray(leaf_t)
        if p.ndim == 0 or p.shape[0] != 4:  # not per member
            continue
        for m in range(4):
            moved_alike[m] &= bool(np.allclose(p[m], t[m], rtol=1e-6, atol=1e-7))
    assert {m for m, alike in moved_alike.items() if not alike} == chosen


@pytest.mark.slow
def test_a_shared_output_layer_is_one_dense_over_each_members_trunk():
    from shared.learning.networks import QTrunk, forward, gather_members

    cfg = tiny_config("calql", utd=2, num_critics=3, critic_output="shared")
    agent = create_agent(cfg, state_obs(), 2, seed=5)
    params = agent.critic.params
    w, b = np.asarray(params["shared_output"]["kernel"]), np.asarray(params["shared_output"]["bias"])
    assert w.shape == (TINY.hidden_dims[-1], 1) and b.shape == (1,)  # one layer, no member axis
    batch = jax.tree.map(lambda x: x[0], random_batch(state_obs(), 2, (1, 8)))
    q = np.asarray(forward(agent.nets["critic"], params, batch["observations"], batch["actions"]))
    assert q.shape == (3, 8)
    x = np.concatenate([batch["observations"]["state"], batch["actions"]], axis=-1)  # the state encoder is identity
    for m in range(3):
        member = jax.tree.map(lambda p, m=m: p[m], params["ensemble"])
        h = np.asarray(forward(QTrunk(cfg.critic_net), member, x))
        np.testing.assert_allclose(q[m], h @ w[:, 0] + b[0], rtol=1e-5, atol=1e-5)
    # a subset of members keeps the shared layer; the update trains it and stays finite
    sub = agent.nets["critic"].clone(num=2)
    q_sub = np.asarray(forward(sub, gather_members(params, np.array([2, 0])), batch["observations"], batch["actions"]))
    np.testing.assert_allclose(q_sub, q[[2, 0]], rtol=1e-6)
    new, info = make_update(cfg, donate=False)(agent, random_batch(state_obs(), 2, (2, 8)))
    assert np.isfinite(float(info["critic_loss"]))
    assert not np.allclose(np.asarray(new.critic.params["shared_output"]["kernel"]), w)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["sac", "calql", "iql"])
def test_a_shared_encoder_is_trained_by_the_critic_alone_and_the_actor_carries_it(algo):
    from dataclasses import replace

    from tests.helpers import image_config, image_obs

    cfg = image_config("small_conv", algo=algo, utd=2, num_critics=2, num_min_critics=2)
    cfg = replace(cfg, encoder=replace(cfg.encoder, share_encoder=True))
    agent = create_agent(cfg, image_obs(16), 2, seed=1)
    assert trees_equal(agent.actor.params["encoder"], agent.critic.params["encoder"])
    batch = random_batch(image_obs(16), 2, (2, 8))
    critic_phase, actor_phase = (jax.jit(p) for p in PHASES[algo])
    after_actor, _ = actor_phase(agent, jax.tree.map(lambda x: x[0], batch))
    # The actor's loss moved its head but not the encoder (the critic's, with gradients stopped).
    assert trees_equal(after_actor.actor.params["encoder"], agent.critic.params["encoder"])
    assert not trees_equal(after_actor.actor.params, agent.actor.params)
    # The critic's loss trains the encoder, and the actor takes it at its next step.
    after_critic, _ = critic_phase(agent, jax.tree.map(lambda x: x[0], batch))
    assert not trees_equal(after_critic.critic.params["encoder"], agent.critic.params["encoder"])
    fused, _ = make_update(cfg, donate=False)(agent, batch)
    assert trees_equal(fused.actor.params["encoder"], fused.critic.params["encoder"])
    # Without sharing, the actor's loss trains the actor's own encoder.
    own = create_agent(replace(cfg, encoder=replace(cfg.encoder, share_encoder=False)), image_obs(16), 2, seed=1)
    moved, _ = jax.jit(PHASES[algo][1])(own, jax.tree.map(lambda x: x[0], batch))
    assert not trees_equal(moved.actor.params["encoder"], own.actor.params["encoder"])


@pytest.mark.slow
def test_an_update_on_cached_trunk_features_is_the_update_on_the_images():
    """A frozen ResNet-10 trunk's output for a frame never changes: computed once
    (``trunk_features``) and given in place of the images, the update is the same function
    (augmentation off): the same losses and the same new parameters, to float rounding."""
    from shared.config import AgentConfig, EncoderConfig
    from shared.learning.encoders import feature_key, trunk_features

    keys = ("wrist_1", "wrist_2")
    enc = EncoderConfig(
        kind="resnet10", image_keys=keys, base_filters=8, bottleneck_dim=16, num_spatial_features=2, augment_pad=0
    )
    cfg = AgentConfig(algo="sac", encoder=enc, num_critics=2, batch_size=8, utd=2)
    rng = np.random.default_rng(0)

    def observations(n):
        images = {k: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for k in keys}
        return {**images, "state": rng.normal(size=(n, 19)).astype(np.float32)}

    agent = create_agent(cfg, {k: v[0] for k, v in observations(1).items()}, 6)
    # one frozen trunk for every network: the actor's is the critic's
    for k in keys:
        assert trees_equal(agent.actor.params["encoder"][f"trunk_{k}"], agent.critic.params["encoder"][f"trunk_{k}"])

    def cached(obs):
        feats = trunk_features(enc, agent.critic.params["encoder"], {k: obs[k] for k in keys})
        assert feats[feature_key("wrist_1")].shape == (16, 1, 1, 64)  # 32 px / 32, 8 x 8 filters
        return {"state": obs["state"], **feats}

    obs, next_obs = observations(16), observations(16)
    batch = {
        "observations": obs,
        "next_observations": next_obs,
        "actions": rng.uniform(-1, 1, (16, 6)).astype(np.float32),
        "rewards": -np.ones(16, np.float32),
        "masks": np.ones(16, np.float32),
        "dones": np.zeros(16, np.float32),
    }
    with_features = {**batch, "observations": cached(obs), "next_observations": cached(next_obs)}
    as_utd = lambda b: jax.tree.map(lambda x: x.reshape(2, 8, *x.shape[1:]), b)
    update = make_update(cfg, donate=False)
    a_images, info_images = update(agent, as_utd(batch))
    a_features, info_features = update(agent, as_utd(with_features))
    for name in ("critic_loss", "q", "target_q", "actor_loss", "entropy"):
        np.testing.assert_allclose(np.asarray(info_features[name]), np.asarray(info_images[name]), rtol=1e-5)
    for part in ("critic", "actor"):
        a, b = getattr(a_images, part).params, getattr(a_features, part).params
        jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5), a, b)
    # a trunk that trains cannot take cached features
    from shared.learning.networks import forward

    small = create_agent(
        AgentConfig(algo="sac", encoder=EncoderConfig(kind="small_conv", image_keys=keys, base_filters=4)),
        {k: v[0] for k, v in observations(1).items()},
        6,
    )
    with pytest.raises(ValueError, match="only a frozen ResNet-10 trunk"):
        forward(small.nets["actor"], small.actor.params, with_features["observations"])


@pytest.mark.slow
def test_the_learners_feature_cache_adds_each_frames_features_and_the_buffer_samples_them():
    """``learner.features.TrunkFeatures`` at ingest: chunks of any length (whole batches, then
    powers of two: nothing padded) get each frame's trunk features under the derived key, the same as one trunk call on all of
    them; the buffer stores them beside the frames, ignores them for continuity, and an update
    reads them instead of the images."""
    from learner.features import TrunkFeatures, block_sizes
    from shared.config import AgentConfig, EncoderConfig
    from shared.data.dataset import wire_spec
    from shared.learning.encoders import trunk_features
    from shared.storage.replay_buffer import ReplayBuffer

    keys = ("wrist_1", "wrist_2")
    enc = EncoderConfig(kind="resnet10", image_keys=keys, base_filters=8, bottleneck_dim=16, num_spatial_features=2)
    cfg = AgentConfig(algo="sac", encoder=enc, num_critics=2, batch_size=4, utd=1)
    wire = {"state": ((19,), "float32"), **dict.fromkeys(keys, ((32, 32, 3), "uint8"))}
    agent = create_agent(cfg, {k: np.zeros(s, d) for k, (s, d) in wire.items()}, 6)
    params = agent.critic.params["encoder"]
    cache = TrunkFeatures(enc, params, wire, batch=4)
    assert cache.spec == {"wrist_1@trunk": ((1, 1, 64), "float32"), "wrist_2@trunk": ((1, 1, 64), "float32")}
    spec = cache.buffer_spec(wire)
    assert wire_spec(spec) == wire and cache.sample_keys(spec) == ["state", "wrist_1@trunk", "wrist_2@trunk"]
    rng = np.random.default_rng(0)
    assert [block_sizes(n, 32) for n in (0, 1, 9, 32, 70)] == [[], [1], [8, 1], [32], [32, 32, 4, 2]]
    for n in (0, 1, 4, 7):  # empty, under one batch, exactly one, one and a remainder of 2 + 1
        frames = {k: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for k in keys}
        frames["state"] = rng.normal(size=(n, 19)).astype(np.float32)
        out = cache(frames)
        assert set(out) == set(spec) and all(out[k] is frames[k] for k in frames)
        if n:
            direct = trunk_features(enc, params, {k: frames[k] for k in keys})
            for k in cache.spec:
                np.testing.assert_allclose(out[k], np.asarray(direct[k]), atol=1e-5)
        else:
            assert out["wrist_1@trunk"].shape == (0, 1, 1, 64)
    # into a buffer: two chunks of one episode; the second's first frame is the first's last,
    # its features recomputed in another batch: no false episode break
    buf = ReplayBuffer(spec, 6, 64, 0.99)
    frames = {k: rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8) for k in keys}
    frames["state"] = rng.normal(size=(5, 19)).astype(np.float32)
    first, second = cache({k: v[:3] for k, v in frames.items()}), cache({k: v[2:] for k, v in frames.items()})
    # a recomputation in another batch may differ in the last bits: make the shared frame's differ
    second["wrist_1@trunk"] = np.nextafter(second["wrist_1@trunk"], np.float32(np.inf))
    assert not np.array_equal(second["wrist_1@trunk"][0], first["wrist_1@trunk"][2])
    z = np.zeros(2)
    for chunk in (first, second):
        buf.insert_chunk(chunk, np.array([0, 1]), np.array([1, 2]), np.zeros((2, 6)), z, z + 1, np.zeros(2, bool))
    assert buf.discontinuities == 0 and len(buf) == 4
    batch = buf.sample(3, rng, leading=(1,), keys=cache.sample_keys(spec))
    assert sorted(batch["observations"]) == ["state", "wrist_1@trunk", "wrist_2@trunk"]
    assert batch["observations"]["wrist_1@trunk"].shape == (1, 3, 1, 1, 64)
    _, info = make_update(cfg, donate=False)(agent, {**batch, "mc_returns": np.zeros((1, 3), np.float32)})
    assert np.isfinite(float(info["critic_loss"]))
    # only a frozen ResNet-10 trunk caches, and the encoder's cameras must be observed
    with pytest.raises(ValueError, match="frozen ResNet-10"):
        TrunkFeatures(EncoderConfig(kind="resnet10", image_keys=keys, freeze_trunk=False), params, wire)
    with pytest.raises(ValueError, match="do not have"):
        TrunkFeatures(enc, params, {"state": wire["state"], "wrist_1": wire["wrist_1"]})


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "share"), [("resnet10", False), ("small_conv", True)])
def test_a_donated_update_runs_on_every_image_layout(kind, share):
    """Off the CPU the update donates the agent's buffers, and XLA refuses one buffer donated twice.
    The frozen trunk and ``share_encoder`` put the critic's arrays into the actor's parameters, so
    the agent (new, and handed off from a pre-trained one) must own each buffer once (seen failing
    on an H200: "Attempt to donate the same buffer twice"). The CPU donates when asked, so this
    runs here."""
    from dataclasses import replace

    from shared.learning.handoff import handoff
    from tests.helpers import image_config, image_obs

    cfg = image_config(kind, utd=2, num_critics=2, num_min_critics=2)
    cfg = replace(cfg, encoder=replace(cfg.encoder, share_encoder=share))

    def buffers(agent):
        return [x.unsafe_buffer_pointer() for x in jax.tree.leaves(agent) if isinstance(x, jax.Array)]

    update = make_update(cfg, donate=True)
    batch = random_batch(image_obs(16), 2, (2, 4))
    pretrained = create_agent(replace(cfg, algo="calql"), image_obs(16), 2, seed=1)
    for agent in (create_agent(cfg, image_obs(16), 2, seed=1), handoff(pretrained, cfg, image_obs(16))):
        for _ in range(2):  # the first update's outputs are the second's donated inputs
            ptrs = buffers(agent)
            assert len(set(ptrs)) == len(ptrs)
            agent, info = update(agent, batch)
            assert np.isfinite(float(info["critic_loss"]))
