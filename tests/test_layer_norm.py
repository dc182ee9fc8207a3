"""The LayerNorm with a hand-written gradient against hand-computed values and flax's own."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from shared.learning.layer_norm import EPSILON, LayerNorm, layer_norm
from shared.learning.networks import MLP, MLPResNet


def test_hand_computed_values():
    # x = [1, 2, 3, 4]: mean 2.5, variance 1.25, so x̂ = (x - 2.5) / sqrt(1.25 + eps)
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    scale, bias = jnp.array([1.0, 1.0, 2.0, 1.0]), jnp.array([0.0, 0.5, 0.0, -2.0])
    xhat = np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(1.25 + EPSILON)
    want = xhat * np.array([1, 1, 2, 1]) + np.array([0, 0.5, 0, -2])  # [-1.342, 0.053, 0.894, -0.658]
    np.testing.assert_allclose(layer_norm(x, scale, bias), want[None], rtol=1e-6)
    np.testing.assert_allclose(layer_norm(x, scale, bias, EPSILON, True), np.maximum(want, 0)[None], rtol=1e-6)
    # d/d bias of the sum of the ReLU's output: 1 where the output is positive
    g_bias = jax.grad(lambda b: layer_norm(x, scale, b, EPSILON, True).sum())(bias)
    np.testing.assert_array_equal(g_bias, [0.0, 1.0, 1.0, 0.0])
    # the sum of a LayerNorm's output does not depend on x (Σ x̂ = 0): a zero gradient
    g_x = jax.grad(lambda v: layer_norm(v, jnp.ones(4), jnp.zeros(4)).sum())(x)
    np.testing.assert_allclose(g_x, np.zeros((1, 4)), atol=1e-6)


@pytest.mark.parametrize("relu", [False, True])
def test_matches_flax_values_and_gradients_in_an_ensemble(relu):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, (5, 64, 32)), jnp.float32)  # [members, batch, features]
    scale = jnp.asarray(1 + 0.3 * rng.normal(size=(5, 32)), jnp.float32)
    bias = jnp.asarray(0.3 * rng.normal(size=(5, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 64, 32)), jnp.float32)

    def flax_ln(x, s, b):
        y = nn.LayerNorm().apply({"params": {"scale": s, "bias": b}}, x)
        return nn.relu(y) if relu else y

    def ours(x, s, b):
        return layer_norm(x, s, b, EPSILON, relu)

    def loss(f):
        return lambda x, s, b: (jax.vmap(f)(x, s, b) * w).sum()

    np.testing.assert_allclose(jax.vmap(ours)(x, scale, bias), jax.vmap(flax_ln)(x, scale, bias), atol=2e-6)
    want = jax.grad(loss(flax_ln), argnums=(0, 1, 2))(x, scale, bias)
    got = jax.grad(loss(ours), argnums=(0, 1, 2))(x, scale, bias)
    for g, f in zip(got, want):
        np.testing.assert_allclose(g, f, rtol=1e-4, atol=1e-4 * float(jnp.abs(f).max()))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
    scale = jnp.asarray(1 + 0.2 * rng.normal(size=8), jnp.float32)
    bias = jnp.asarray(0.2 * rng.normal(size=8), jnp.float32)
    f = lambda x, s, b: layer_norm(x, s, b, EPSILON, False)
    check_grads(f, (x, scale, bias), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


class _FlaxMLP(nn.Module):
    """The MLP trunk as it was written with flax's nn.LayerNorm (what older checkpoints hold)."""

    @nn.compact
    def __call__(self, x):
        for width in (16, 16):
            x = nn.relu(nn.LayerNorm()(nn.Dense(width)(x)))
        return x


def test_checkpoints_of_the_flax_layer_norm_trunk_load_and_compute_the_same():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 7))
    old = _FlaxMLP().init(jax.random.PRNGKey(0), x)["params"]
    # trained-looking values, so that scale and bias matter
    old = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(2), v.shape), old)
    new = MLP((16, 16)).init(jax.random.PRNGKey(0), x)["params"]
    assert jax.tree.structure(new) == jax.tree.structure(old)
    assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, old)
    np.testing.assert_allclose(MLP((16, 16)).apply({"params": old}, x), _FlaxMLP().apply({"params": old}, x), atol=1e-5)
    # the residual trunk keeps flax's names too
    res = MLPResNet(2, 16).init(jax.random.PRNGKey(0), x)["params"]
    assert {k for k in res if k.startswith("LayerNorm")} == {"LayerNorm_0", "LayerNorm_1"}
    assert all(set(res[k]) == {"scale", "bias"} for k in ("LayerNorm_0", "LayerNorm_1"))
    flax_params = nn.LayerNorm().init(jax.random.PRNGKey(0), x)["params"]
    ours = LayerNorm().init(jax.random.PRNGKey(0), x)["params"]
    assert jax.tree.map(jnp.shape, flax_params) == jax.tree.map(jnp.shape, ours)
