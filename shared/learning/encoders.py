"""Observation encoders: proprio state, a small conv net, and a ResNet-10 trunk.

Image trunks end in learned spatial embeddings (a learned weighting per spatial location and
channel, which keeps where things are in the picture, unlike global pooling) and a LayerNorm +
tanh bottleneck. A ResNet-10 trunk (SERL's layout) can load pretrained parameters from a local
``.npz`` whose keys are the trunk's parameter paths joined with ``/`` (``conv_init/kernel``, ...;
SERL's ImageNet weights convert to it with ``launch/convert_serl.sh resnet``); it is
frozen with ``stop_gradient`` so its gradients are exactly zero and Adam leaves it unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from shared.config import EncoderConfig
from shared.data.dataset import derived_key
from shared.learning.convolution import conv
from shared.learning.layer_norm import LayerNorm

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _normalise_image(x: jax.Array) -> jax.Array:
    """uint8 RGB -> ImageNet-normalised float32."""
    return (x.astype(jnp.float32) / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD


# SERL's ResNet-10 layout (its ImageNet weights convert to this trunk: learner/serl_assets.py):
# GroupNorm with 4 groups and epsilon 1e-5 everywhere, a 7x7 stem padded by 3 on each side.
_GROUPS, _EPS = 4, 1e-5
# Every convolution goes through ``convolution.conv``: the same function and parameters, fast on
# XLA:CPU where a map is smaller than the kernel (ResNet-10's last block at 64 px).
_Conv: Callable[..., nn.Conv] = functools.partial(nn.Conv, conv_general_dilated=conv)


class ResNetBlock(nn.Module):
    filters: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = _Conv(self.filters, (3, 3), self.strides, use_bias=False, name="conv1")(x)
        y = nn.relu(nn.GroupNorm(num_groups=_GROUPS, epsilon=_EPS, name="norm1")(y))
        y = _Conv(self.filters, (3, 3), 1, use_bias=False, name="conv2")(y)
        y = nn.GroupNorm(num_groups=_GROUPS, epsilon=_EPS, name="norm2")(y)
        if x.shape[-1] != self.filters or self.strides != 1:
            x = _Conv(self.filters, (1, 1), self.strides, use_bias=False, name="proj")(x)
            x = nn.GroupNorm(num_groups=_GROUPS, epsilon=_EPS, name="proj_norm")(x)
        return nn.relu(x + y)


class ResNet10Trunk(nn.Module):
    """ResNet-v1 with one basic block per stage (4 stages): a 32x spatial reduction, in SERL's
    layout. ``base_filters`` must be a multiple of 4 (the GroupNorm groups)."""

    base_filters: int = 64

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if self.base_filters % _GROUPS:
            raise ValueError(f"ResNet-10 base_filters must be a multiple of {_GROUPS}, got {self.base_filters}")
        x = _normalise_image(images)
        x = _Conv(self.base_filters, (7, 7), 2, padding=((3, 3), (3, 3)), use_bias=False, name="conv_init")(x)
        x = nn.relu(nn.GroupNorm(num_groups=_GROUPS, epsilon=_EPS, name="norm_init")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i in range(4):
            x = ResNetBlock(self.base_filters * 2**i, strides=1 if i == 0 else 2, name=f"stage{i}")(x)
        return x


class SmallConvTrunk(nn.Module):
    """Four 3x3 convolutions (DrQ-style), cheap enough for tiny-image tests and CPU."""

    filters: int = 32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) / 255.0
        for i, stride in enumerate((2, 1, 1, 1)):
            x = nn.relu(_Conv(self.filters, (3, 3), stride, padding="VALID", name=f"conv{i}")(x))
        return x


class SpatialLearnedEmbeddings(nn.Module):
    """sum_{h,w} feature[h,w,c] * kernel[h,w,c,k] -> [C * K] features."""

    num_features: int = 8

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        h, w, c = features.shape[-3:]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (h, w, c, self.num_features))
        out = jnp.einsum("...hwc,hwck->...ck", features, kernel)
        return out.reshape(out.shape[:-2] + (c * self.num_features,))


STATE_CLIP = 10.0  # normalised state is clipped: contact transients reach 25 standard deviations
MIN_STATE_STD = 1e-3


def with_state_stats(cfg: EncoderConfig, states: np.ndarray) -> EncoderConfig:
    """The encoder config with ``state_mean``/``state_std`` measured on ``states`` [N, D]
    (constant dimensions get std 1 so they pass through centred)."""
    states = np.asarray(states, np.float64)
    std = states.std(axis=0)
    std = np.where(std < MIN_STATE_STD, 1.0, std)
    return replace(cfg, state_mean=tuple(float(x) for x in states.mean(axis=0)), state_std=tuple(float(x) for x in std))


def feature_key(image_key: str) -> str:
    """The observation key under which an image key's frozen-trunk features travel (cached): a
    derived key (``shared.data.dataset.derived_key``)."""
    return derived_key(image_key, "trunk")


def caches_features(cfg: EncoderConfig) -> bool:
    """A frozen ResNet-10 trunk's output for a stored frame never changes: it can be computed
    once per frame and the heads trained on it (``trunk_features``)."""
    return cfg.kind == "resnet10" and cfg.freeze_trunk


class ObsEncoder(nn.Module):
    """Dict observation -> flat features. ``state`` passes through; images are encoded.

    With a frozen ResNet-10 trunk, an observation may carry the trunk's output for an image key
    instead of the image (``feature_key``, computed by ``trunk_features``): the same function,
    without running the trunk again."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array], train: bool = False) -> jax.Array:
        cfg = self.config
        parts = []
        if cfg.kind != "state":
            for key in cfg.image_keys:
                if feature_key(key) in obs:
                    if not caches_features(cfg):
                        raise ValueError(
                            f"'{feature_key(key)}' given, but only a frozen ResNet-10 trunk caches features"
                        )
                    feats = jax.lax.stop_gradient(obs[feature_key(key)].astype(jnp.float32))
                elif cfg.kind == "resnet10":
                    feats = ResNet10Trunk(cfg.base_filters, name=f"trunk_{key}")(obs[key])
                    if cfg.freeze_trunk:
                        feats = jax.lax.stop_gradient(feats)
                else:
                    feats = SmallConvTrunk(cfg.base_filters, name=f"trunk_{key}")(obs[key])
                x = SpatialLearnedEmbeddings(cfg.num_spatial_features, name=f"pool_{key}")(feats)
                x = nn.Dense(cfg.bottleneck_dim, name=f"bottleneck_{key}")(x)
                x = jnp.tanh(LayerNorm(name=f"bottleneck_norm_{key}")(x))
                parts.append(x)
        if cfg.kind == "state" or cfg.use_state:
            state = obs["state"].astype(jnp.float32)
            if cfg.state_mean is not None:
                mean = jnp.asarray(cfg.state_mean, jnp.float32)
                std = jnp.asarray(cfg.state_std, jnp.float32)
                state = jnp.clip((state - mean) / std, -STATE_CLIP, STATE_CLIP)
            parts.append(state)
        return jnp.concatenate(parts, axis=-1)


def trunk_features(cfg: EncoderConfig, encoder_params: Any, images: dict[str, Any]) -> dict[str, jax.Array]:
    """The frozen trunk's output for each image key in ``images`` ([..., H, W, 3] uint8), under
    ``feature_key``: what ``ObsEncoder`` computes from those images before its heads.
    ``encoder_params``: an encoder's parameters (every network's frozen trunk is the same one)."""
    if not caches_features(cfg):
        raise ValueError("only a frozen ResNet-10 trunk's features can be cached")
    out: dict[str, jax.Array] = {}
    for key, img in images.items():
        trunk = ResNet10Trunk(cfg.base_filters)
        feats = trunk.apply({"params": encoder_params[f"trunk_{key}"]}, jnp.asarray(img))
        out[feature_key(key)] = jnp.asarray(feats)
    return out


# ------------------------------------------------------------------- pretrained trunk weights


def save_trunk_params(path: str | Path, trunk_params: Any) -> None:
    """Write trunk parameters as the ``.npz`` that ``load_pretrained_trunks`` reads."""
    flat: dict[str, Any] = {"/".join(k): np.asarray(v) for k, v in flatten_dict(trunk_params).items()}
    np.savez(path, **flat)


def load_trunk_file(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained encoder file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # a truncated or non-npz file
        raise ValueError(f"pretrained encoder file {path} is not a readable .npz: {e}") from e


def load_pretrained_trunks(params: Any, path: str | Path, where: str = "") -> Any:
    """Replace every ``trunk_*`` ResNet subtree in ``params`` with the file's weights.

    Every parameter path and shape must match; the error names the first that does not.
    """
    weights = load_trunk_file(path)
    params = dict(params)

    def visit(tree: Any, prefix: str) -> Any:
        if not isinstance(tree, dict):
            return tree
        out = {}
        for k, v in tree.items():
            if k.startswith("trunk_") and isinstance(v, dict):
                out[k] = _replace_trunk(v, weights, f"{prefix}{k}", path)
            else:
                out[k] = visit(v, f"{prefix}{k}/")
        return out

    return visit(params, where)


def _replace_trunk(trunk: Any, weights: dict[str, np.ndarray], name: str, path: Any) -> Any:
    flat = {"/".join(k): v for k, v in flatten_dict(trunk).items()}
    missing = sorted(set(flat) - set(weights))
    extra = sorted(set(weights) - set(flat))
    if missing:
        raise ValueError(f"{path}: no weights for {name}/{missing[0]} ({len(missing)} missing)")
    if extra:
        raise ValueError(f"{path}: unexpected parameter {extra[0]} for {name} ({len(extra)} extra)")
    new = {}
    for k, v in flat.items():
        w = weights[k]
        if w.shape != v.shape:
            raise ValueError(f"{path}: {name}/{k} has shape {w.shape}, the network needs {v.shape}")
        new[tuple(k.split("/"))] = jnp.asarray(w, dtype=v.dtype)
    return unflatten_dict(new)
