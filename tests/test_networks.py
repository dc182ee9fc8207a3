import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.learning.agents import create_agent
from shared.learning.agents.sac import critic_step
from shared.learning.augmentation import random_shift, shift_by
from shared.learning.encoders import ResNet10Trunk, save_trunk_params
from shared.learning.networks import (
    ENSEMBLE,
    critic_subset_module,
    gather_members,
    sample_tanh_gaussian,
    tanh_gaussian_log_prob,
)
from tests.helpers import image_config, image_obs, random_batch, state_obs, tiny_config, trees_equal


def test_critic_ensemble_members_have_own_heads_and_differ():
    agent = create_agent(tiny_config(num_critics=5), state_obs(), 2)
    heads = agent.critic.params[ENSEMBLE]
    leaves = jax.tree.leaves(heads)
    assert all(x.shape[0] == 5 for x in leaves)
    out_kernel = heads["Dense_0"]["kernel"]  # the per-member output head
    assert out_kernel.shape == (5, 32, 1)
    q = agent.nets["critic"].apply({"params": agent.critic.params}, {"state": jnp.ones((3, 5))}, jnp.zeros((3, 2)))
    assert q.shape == (5, 3)
    assert len(np.unique(np.round(np.asarray(q[:, 0]), 6))) == 5


def test_layer_norm_in_critic_and_actor():
    agent = create_agent(tiny_config(), state_obs(), 2)
    flat = jax.tree_util.tree_flatten_with_path(agent.critic.params)[0]
    assert any("LayerNorm" in jax.tree_util.keystr(p) for p, _ in flat)
    flat = jax.tree_util.tree_flatten_with_path(agent.actor.params)[0]
    assert any("LayerNorm" in jax.tree_util.keystr(p) for p, _ in flat)


def test_subset_critic_equals_selected_rows_of_full_ensemble():
    agent = create_agent(tiny_config(num_critics=6), state_obs(), 2)
    critic = agent.nets["critic"]
    obs = {"state": jax.random.normal(jax.random.PRNGKey(1), (4, 5))}
    act = jax.random.uniform(jax.random.PRNGKey(2), (4, 3, 2), minval=-1, maxval=1)  # N = 3 actions
    full = critic.apply({"params": agent.critic.params}, obs, act)
    assert full.shape == (6, 4, 3)
    idx = jnp.array([4, 1])
    sub = critic_subset_module(critic, 2).apply({"params": gather_members(agent.critic.params, idx)}, obs, act)
    np.testing.assert_allclose(sub, full[idx], rtol=1e-5, atol=1e-6)


def test_tanh_gaussian_log_prob_matches_sampler():
    mean = jnp.array([[0.3, -1.0]])
    log_std = jnp.array([[-0.5, 0.2]])
    a, lp = sample_tanh_gaussian(jax.random.PRNGKey(0), mean, log_std, (5,))
    assert a.shape == (1, 5, 2) and lp.shape == (1, 5)
    assert np.all(np.abs(a) < 1)
    lp2 = tanh_gaussian_log_prob(mean[:, None], log_std[:, None], a)
    np.testing.assert_allclose(lp, lp2, rtol=1e-3, atol=1e-3)


def test_tanh_gaussian_density_integrates_to_one():
    # 1-D: integrate exp(log_prob) over (-1, 1) numerically
    xs = jnp.linspace(-0.999999, 0.999999, 200001)[:, None]
    lp = tanh_gaussian_log_prob(jnp.array([[0.4]]), jnp.array([[-0.3]]), xs)
    assert abs(float(jnp.trapezoid(jnp.exp(lp), xs[:, 0])) - 1.0) < 1e-3


def test_random_shift_matches_manual_crop():
    imgs = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    padded = jnp.pad(imgs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    out = shift_by(padded, jnp.array([[0, 2], [1, 1]]), 4, 4)
    np.testing.assert_array_equal(out[0], padded[0, 0:4, 2:6])
    np.testing.assert_array_equal(out[1], imgs[1])  # offset (pad, pad) is the identity
    shifted = jax.jit(random_shift, static_argnums=2)(jax.random.PRNGKey(0), imgs.astype(jnp.uint8), 2)
    assert shifted.shape == imgs.shape and shifted.dtype == jnp.uint8
    assert random_shift(jax.random.PRNGKey(0), imgs, 0) is imgs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["small_conv", "resnet10"])
def test_image_agent_updates(kind):
    cfg = image_config(kind)
    agent = create_agent(cfg, image_obs(), 2)
    batch = random_batch(image_obs(), 2, (8,))
    new, info = jax.jit(critic_step)(agent, batch)
    assert np.isfinite(float(info["critic_loss"]))
    assert not trees_equal(new.critic.params, agent.critic.params)


@pytest.mark.slow
def test_resnet_loads_pretrained_trunk_and_freezes_it(tmp_path):
    trunk = ResNet10Trunk(base_filters=8)
    pretrained = trunk.init(jax.random.PRNGKey(42), jnp.zeros((1, 16, 16, 3), jnp.uint8))["params"]
    path = tmp_path / "trunk.npz"
    save_trunk_params(path, pretrained)
    cfg = image_config("resnet10")
    cfg = cfg.__class__(
        **{
            **cfg.__dict__,
            "encoder": cfg.encoder.__class__(
                **{**cfg.encoder.__dict__, "pretrained_path": str(path), "freeze_trunk": True}
            ),
        }
    )
    agent = create_agent(cfg, image_obs(), 2)
    loaded = agent.critic.params["encoder"]["trunk_wrist_1"]
    assert trees_equal(loaded, pretrained)
    assert trees_equal(agent.actor.params["encoder"]["trunk_wrist_1"], pretrained)
    new, _ = jax.jit(critic_step)(agent, random_batch(image_obs(), 2, (8,)))
    assert trees_equal(new.critic.params["encoder"]["trunk_wrist_1"], pretrained)  # frozen
    assert not trees_equal(new.critic.params["encoder"]["pool_wrist_1"], agent.critic.params["encoder"]["pool_wrist_1"])


def test_pretrained_trunk_mismatch_names_the_parameter(tmp_path):
    wide = ResNet10Trunk(base_filters=16).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3), jnp.uint8))["params"]
    path = tmp_path / "wide.npz"
    save_trunk_params(path, wide)
    cfg = image_config("resnet10")
    enc = cfg.encoder.__class__(**{**cfg.encoder.__dict__, "pretrained_path": str(path)})
    with pytest.raises(ValueError, match=r"trunk_wrist_1/conv_init/kernel has shape"):
        create_agent(cfg.__class__(**{**cfg.__dict__, "encoder": enc}), image_obs(), 2)


def test_state_normalisation_from_dataset_statistics():
    from dataclasses import replace

    from shared.config import EncoderConfig
    from shared.learning.encoders import STATE_CLIP, ObsEncoder, with_state_stats

    states = np.array([[0.0, 1.0, 0.01], [2.0, 1.0, 0.03]])
    cfg = with_state_stats(EncoderConfig(normalize_state=True), states)
    # mean (1, 1, 0.02); std (1, constant -> 1, 0.01)
    np.testing.assert_allclose(cfg.state_mean, [1.0, 1.0, 0.02])
    np.testing.assert_allclose(cfg.state_std, [1.0, 1.0, 0.01])
    enc = ObsEncoder(cfg)
    out = enc.apply({}, {"state": jnp.array([[3.0, 5.0, 0.025], [100.0, 1.0, 0.02]])})
    np.testing.assert_allclose(out, [[2.0, 4.0, 0.5], [STATE_CLIP, 0.0, 0.0]], rtol=1e-5, atol=1e-5)
    raw = ObsEncoder(replace(cfg, state_mean=None, state_std=None)).apply({}, {"state": jnp.array([[3.0, 5.0, 0.025]])})
    np.testing.assert_allclose(raw, [[3.0, 5.0, 0.025]])


@pytest.mark.slow
def test_bf16_matmuls_keep_float32_parameters_and_outputs_and_stay_close():
    from dataclasses import replace

    from shared.config import NetworkConfig
    from shared.learning.agents import make_update

    for net in (NetworkConfig(hidden_dims=(64, 64)), NetworkConfig(hidden_dims=(32,), residual_blocks=1)):
        f32 = tiny_config(critic_net=net, actor_net=net)
        bf16 = tiny_config(
            critic_net=replace(net, matmul_dtype="bfloat16"), actor_net=replace(net, matmul_dtype="bfloat16")
        )
        a32, a16 = create_agent(f32, state_obs(), 2, seed=0), create_agent(bf16, state_obs(), 2, seed=0)
        assert trees_equal(a32.critic.params, a16.critic.params)  # the same float32 parameters
        batch = random_batch(state_obs(), 2, (16,))
        q32 = a32.nets["critic"].apply({"params": a32.critic.params}, batch["observations"], batch["actions"])
        q16 = a16.nets["critic"].apply({"params": a16.critic.params}, batch["observations"], batch["actions"])
        assert q16.dtype == jnp.float32
        np.testing.assert_allclose(q16, q32, rtol=0.05, atol=0.05)  # bf16 keeps 8 bits of mantissa
        new, info = make_update(bf16, donate=False)(a16, random_batch(state_obs(), 2, (1, 16)))
        leaves = jax.tree.leaves((new.critic, new.actor))
        assert all(x.dtype in (jnp.float32, jnp.int32) for x in leaves)  # params and Adam moments
        assert all(np.isfinite(float(v)) for v in info.values())


@pytest.mark.parametrize("blocks", [0, 2])
def test_the_critics_first_layer_on_the_pair_is_the_dense_layer_on_the_concatenation(blocks):
    """``PairDense``: the features' part of the first layer once per row, the actions' part per
    sampled action; the same parameters and function as one dense layer on the features broadcast
    over the actions and concatenated (what the critic computed before), to float rounding."""
    from shared.learning.networks import MLP, MLPResNet, _concat_pair

    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(5, 40)).astype(np.float32))
    for actions in (rng.normal(size=(5, 6)), rng.normal(size=(5, 7, 6))):  # one action a row, or 7 sampled
        actions = jnp.asarray(actions.astype(np.float32))
        net = MLPResNet(blocks, 16) if blocks else MLP((16, 16))
        params = net.init(jax.random.PRNGKey(0), (feats, actions))
        assert params["params"]["Dense_0"]["kernel"].shape == (46, 16)  # one kernel over [features, action]
        pair = net.apply(params, (feats, actions))
        concat = net.apply(params, _concat_pair((feats, actions)))
        assert pair.shape == actions.shape[:-1] + (16,)
        np.testing.assert_allclose(np.asarray(pair), np.asarray(concat), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "hw, kernel, strides, padding",
    [
        (2, 3, 1, "SAME"),  # ResNet-10's last 3x3 at 64 px: the case XLA:CPU was slow on
        (1, 3, 1, "SAME"),
        (2, 3, 2, "SAME"),
        (3, 5, 2, ((2, 2), (2, 2))),
        (2, 3, 1, ((1, 0), (0, 1))),
        (4, 3, 1, "SAME"),  # not small: lax's own convolution
        (2, 1, 1, "VALID"),
    ],
)
def test_small_input_convolution_is_lax_convolution(hw, kernel, strides, padding):
    from jax import lax

    from shared.learning.convolution import conv

    rng = np.random.default_rng(hw * 10 + kernel)
    x = jnp.asarray(rng.standard_normal((3, hw, hw + 1, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 5, 4)), jnp.float32)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def ref(x, w):
        return lax.conv_general_dilated(x, w, (strides, strides), padding, dimension_numbers=dn)

    def ours(x, w):
        return conv(x, w, (strides, strides), padding, dimension_numbers=dn)

    np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    # and its gradient, for a trunk trained end to end
    g_ref = jax.grad(lambda x, w: (ref(x, w) ** 2).sum(), argnums=(0, 1))(x, w)
    g_ours = jax.grad(lambda x, w: (ours(x, w) ** 2).sum(), argnums=(0, 1))(x, w)
    for a, b in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_resnet_trunk_on_small_images_is_flax_convolutions():
    """The trunk through ``convolution.conv`` is the one through flax's own convolution: same
    parameter tree, same output (at 32 px its last two blocks run on 2x2 and 1x1 maps)."""
    import flax.linen as nn

    from shared.learning import encoders

    imgs = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    trunk = ResNet10Trunk(8)
    params = trunk.init(jax.random.PRNGKey(0), imgs)
    ours = trunk.apply(params, imgs)
    original = encoders._Conv
    try:
        encoders._Conv = nn.Conv
        plain = ResNet10Trunk(8)
        assert jax.tree.structure(plain.init(jax.random.PRNGKey(0), imgs)) == jax.tree.structure(params)
        assert trees_equal(plain.init(jax.random.PRNGKey(0), imgs), params)
        theirs = plain.apply(params, imgs)
    finally:
        encoders._Conv = original
    assert ours.shape == (2, 1, 1, 64)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
