"""Flax networks: MLPs, the vectorised critic ensemble, the tanh-Gaussian policy, scalars.

Every module takes an observation dict and encodes it with its own ``ObsEncoder`` so that the
actor and the critic are independent parameter trees (what the hand-off checks name by name).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.config import AgentConfig, NetworkConfig
from shared.learning.encoders import ObsEncoder
from shared.learning.layer_norm import LayerNorm

ENSEMBLE = "ensemble"  # name of the vmapped critic heads; their leaves carry a leading [E] axis


def _dense(width: int, dtype: Any, name: str | None = None) -> nn.Dense:
    """A hidden layer: ``dtype`` inputs and weights into the matmul, float32 accumulation and
    output (a bfloat16 output would be rounded, and cost a conversion before LayerNorm)."""
    if jnp.dtype(dtype) == jnp.float32:
        return nn.Dense(width, kernel_init=nn.initializers.orthogonal(2**0.5), name=name)
    return nn.Dense(
        width,
        kernel_init=nn.initializers.orthogonal(2**0.5),
        dtype=dtype,
        dot_general=functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32),
        name=name,
    )


class PairDense(nn.Module):
    """``Dense(width)`` of ``concat([features, actions])`` with ``features`` [B, F] shared by the
    actions [B, ..., A] sampled for each row: ``features @ K[:F]`` once per row, ``actions @ K[F:]``
    per sample. The same parameters (``kernel`` [F + A, width], ``bias``) and the same function as
    the dense layer on the broadcast concatenation, without repeating the wide part of the product
    for every sampled action (Cal-QL scores 30 per row, and on image features F is 537: 30.8
    against 7.7 GFLOP a critic step before this, docs/simulation.md)."""

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, actions: jax.Array) -> jax.Array:
        f, a = features.shape[-1], actions.shape[-1]
        kernel = self.param("kernel", nn.initializers.orthogonal(2**0.5), (f + a, self.width))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.width,))
        mm = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
        k = kernel.astype(self.dtype)
        per_row = mm(features.astype(self.dtype), k[:f])
        per_row = per_row.reshape(per_row.shape[:1] + (1,) * (actions.ndim - 2) + per_row.shape[1:])
        return per_row + mm(actions.astype(self.dtype), k[f:]) + bias


def _first_layer(x: jax.Array | tuple[jax.Array, jax.Array], width: int, dtype: Any, name: str) -> jax.Array:
    """A trunk's first dense layer, on one input or on a (features, actions) pair (``PairDense``)."""
    if isinstance(x, tuple):
        return PairDense(width, dtype, name=name)(*x)
    return _dense(width, dtype, name=name)(x)


def _concat_pair(x: jax.Array | tuple[jax.Array, jax.Array]) -> jax.Array:
    """One input from a (features, actions) pair: the features broadcast over the sampled actions."""
    if not isinstance(x, tuple):
        return x
    feats, actions = x
    feats = feats.reshape(feats.shape[:1] + (1,) * (actions.ndim - 2) + feats.shape[1:])
    return jnp.concatenate([jnp.broadcast_to(feats, actions.shape[:-1] + feats.shape[-1:]), actions], axis=-1)


class MLP(nn.Module):
    """Dense layers, each followed by LayerNorm (optional) and ReLU. ``dtype``: the matmuls'
    input type (parameters stay float32; LayerNorm and the output are float32). The input may be a
    (features, actions) pair, the critic's (``PairDense``). Layers are named as flax auto-names
    them (``Dense_<i>``): checkpoints unchanged."""

    hidden_dims: tuple[int, ...]
    use_layer_norm: bool = True
    activate_final: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array | tuple[jax.Array, jax.Array]) -> jax.Array:
        if not self.hidden_dims:
            return _concat_pair(inputs)
        x = _first_layer(inputs, self.hidden_dims[0], self.dtype, "Dense_0")
        for i, width in enumerate(self.hidden_dims):
            if i > 0:
                x = _dense(width, self.dtype, f"Dense_{i}")(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                if self.use_layer_norm:  # named as flax names nn.LayerNorm: checkpoints unchanged
                    x = LayerNorm(relu=True, name=f"LayerNorm_{i}")(x)
                else:
                    x = nn.relu(x)
        return x.astype(jnp.float32)


class MLPResNet(nn.Module):
    """Residual MLP (pre-LayerNorm blocks), the critic/actor trunk of the robot experiments."""

    num_blocks: int
    width: int
    use_layer_norm: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array | tuple[jax.Array, jax.Array]) -> jax.Array:
        # named as flax auto-names them (Dense_0, then two per block): checkpoints unchanged
        x = _first_layer(x, self.width, self.dtype, "Dense_0").astype(jnp.float32)  # residual stream: float32
        for i in range(self.num_blocks):
            y = LayerNorm(name=f"LayerNorm_{i}")(x) if self.use_layer_norm else x
            y = _dense(self.width * 4, self.dtype, f"Dense_{2 * i + 1}")(y)
            y = nn.relu(y)
            y = _dense(self.width, self.dtype, f"Dense_{2 * i + 2}")(y)
            x = x + y.astype(jnp.float32)
        return nn.relu(x)


def forward(module: nn.Module, params: Any, *args: Any, **kwargs: Any) -> Any:
    """``module``'s output for ``params`` (``module.apply`` with no mutable collections; flax types
    ``apply`` as output-or-(output, state), which hides the output's type)."""
    return module.apply({"params": params}, *args, **kwargs)


def make_trunk(cfg: NetworkConfig) -> nn.Module:
    dtype = jnp.dtype(cfg.matmul_dtype)
    if cfg.residual_blocks > 0:
        return MLPResNet(cfg.residual_blocks, cfg.hidden_dims[0], cfg.use_layer_norm, dtype)
    return MLP(cfg.hidden_dims, cfg.use_layer_norm, dtype=dtype)


class QHead(nn.Module):
    """One critic member: trunk + its own scalar output head."""

    net: NetworkConfig

    @nn.compact
    def __call__(self, x: jax.Array | tuple[jax.Array, jax.Array]) -> jax.Array:
        x = make_trunk(self.net)(x)
        return nn.Dense(1)(x)[..., 0]


class QTrunk(nn.Module):
    """One critic member without an output layer (the members share one; see CriticEnsemble)."""

    net: NetworkConfig

    @nn.compact
    def __call__(self, x: jax.Array | tuple[jax.Array, jax.Array]) -> jax.Array:
        return make_trunk(self.net)(x)


class CriticEnsemble(nn.Module):
    """Q(s, a) for ``num`` members, vectorised with ``nn.vmap`` (one parameter set each).

    The encoder runs once and is shared by the members. ``actions`` may carry extra leading
    sample axes: obs features [B, F] with actions [B, N, A] give Q values [E, B, N].
    ``shared_output``: the members' trunks feed one output layer shared by all of them (the
    official WSRL code's ensemble) instead of one each.
    """

    net: NetworkConfig
    encoder: ObsEncoder
    num: int
    shared_output: bool = False

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array], actions: jax.Array, train: bool = False) -> jax.Array:
        feats = self.encoder(obs, train=train)
        # the members' first layer takes the pair: the features' part once per row (PairDense)
        x = (feats, actions)
        heads = nn.vmap(
            QTrunk if self.shared_output else QHead,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )(self.net, name=ENSEMBLE)
        if self.shared_output:
            return nn.Dense(1, name="shared_output")(heads(x))[..., 0]
        return heads(x)


class ValueNet(nn.Module):
    """V(s) for IQL."""

    net: NetworkConfig
    encoder: ObsEncoder

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array], train: bool = False) -> jax.Array:
        x = make_trunk(self.net)(self.encoder(obs, train=train))
        return nn.Dense(1)(x)[..., 0]


class TanhGaussianPolicy(nn.Module):
    """Returns the mean and log-std of the pre-tanh Gaussian."""

    net: NetworkConfig
    encoder: ObsEncoder
    action_dim: int
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array], train: bool = False) -> tuple[jax.Array, jax.Array]:
        x = make_trunk(self.net)(self.encoder(obs, train=train))
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(1e-2))(x)
        log_std = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(1e-2))(x)
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, log_std


class Scalar(nn.Module):
    """A learned positive scalar stored as its log (temperature, Lagrange multiplier)."""

    init_value: float = 1.0

    @nn.compact
    def __call__(self) -> jax.Array:
        log_value = self.param("log_value", lambda _: jnp.full((), jnp.log(self.init_value)))
        return jnp.exp(log_value)


# ------------------------------------------------------------------ tanh-Gaussian distribution

_LOG_2PI = math.log(2 * math.pi)  # not jnp: importing this module must not start the backend


def _tanh_log_det(u: jax.Array) -> jax.Array:
    # log(1 - tanh(u)^2) in a form that stays finite for large |u|.
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def sample_tanh_gaussian(
    key: jax.Array, mean: jax.Array, log_std: jax.Array, sample_shape: tuple[int, ...] = ()
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample and its log-probability.

    ``sample_shape`` is inserted after the batch axis: mean [B, A] -> actions [B, *S, A].
    """
    if sample_shape:
        expand = (slice(None),) + (None,) * len(sample_shape)
        mean = jnp.broadcast_to(mean[expand], mean.shape[:1] + sample_shape + mean.shape[1:])
        log_std = jnp.broadcast_to(log_std[expand], mean.shape)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    u = mean + jnp.exp(log_std) * eps
    log_prob = (-0.5 * eps**2 - log_std - 0.5 * _LOG_2PI).sum(-1) - _tanh_log_det(u).sum(-1)
    return jnp.tanh(u), log_prob


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array, eps: float = 1e-6) -> jax.Array:
    """log pi(a|s) of given (dataset) actions; actions are clipped just inside (-1, 1)."""
    a = jnp.clip(actions, -1.0 + eps, 1.0 - eps)
    u = jnp.arctanh(a)
    z = (u - mean) * jnp.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * _LOG_2PI).sum(-1) - _tanh_log_det(u).sum(-1)


# ------------------------------------------------------------------------------- constructors


@functools.lru_cache(maxsize=64)
def build_networks(cfg: AgentConfig, action_dim: int) -> dict[str, nn.Module]:
    """The module definitions an agent of ``cfg`` needs (no parameters).

    Cached so that the same config always yields the same module objects, which keeps them
    usable as static arguments of compiled functions without recompiling.
    """
    critic_num = cfg.num_critics
    nets: dict[str, Any] = {
        "actor": TanhGaussianPolicy(
            cfg.actor_net, ObsEncoder(cfg.encoder), action_dim, cfg.log_std_min, cfg.log_std_max
        ),
        "critic": CriticEnsemble(
            cfg.critic_net, ObsEncoder(cfg.encoder), critic_num, shared_output=cfg.critic_output == "shared"
        ),
        "temperature": Scalar(cfg.init_temperature),
    }
    if cfg.algo in ("cql", "calql") and cfg.cql.lagrange:
        nets["cql_alpha"] = Scalar(cfg.cql.alpha)
    if cfg.algo == "iql":
        nets["value"] = ValueNet(cfg.critic_net, ObsEncoder(cfg.encoder))
    return nets


def critic_subset_module(critic: nn.Module, k: int) -> CriticEnsemble:
    """The same critic definition with ``k`` members, for applying gathered parameters."""
    if not isinstance(critic, CriticEnsemble):
        raise TypeError(f"expected the critic ensemble, got {type(critic).__name__}")
    return critic.clone(num=k)


def gather_members(critic_params: Any, idx: jax.Array) -> Any:
    """Select ensemble members ``idx`` from critic parameters (the encoder and a shared output
    layer left as they are)."""
    params = dict(critic_params)
    params[ENSEMBLE] = jax.tree.map(lambda p: p[idx], params[ENSEMBLE])
    return params
