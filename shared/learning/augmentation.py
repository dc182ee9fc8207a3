"""DrQ random-shift augmentation, written to run inside a compiled update."""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp


def random_shift(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
    """Pad each image by ``pad`` (edge replicate) and crop back at a random offset.

    images: [B, H, W, C]; each image gets its own integer shift in [-pad, pad] on both axes.
    """
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
    return shift_by(padded, offsets, h, w)


def shift_by(padded: jax.Array, offsets: jax.Array, h: int, w: int) -> jax.Array:
    """Crop [h, w] windows of ``padded`` at per-image (row, col) offsets."""

    def crop(img: jax.Array, off: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def augment_observations(
    key: jax.Array, obs: dict[str, jax.Array], image_keys: Iterable[str], pad: int
) -> dict[str, jax.Array]:
    """Shift each image key independently; other keys pass through. An image key whose frozen
    trunk's features travel instead of the image (``shared.learning.encoders.feature_key``) is absent and
    not augmented: a pixel shift happens before the trunk."""
    image_keys = tuple(k for k in image_keys if k in obs)
    if pad <= 0 or not image_keys:
        return obs
    keys = jax.random.split(key, len(image_keys))
    out = dict(obs)
    for k, sub in zip(image_keys, keys):
        out[k] = random_shift(sub, obs[k], pad)
    return out


def random_brightness(key: jax.Array, images: jax.Array, amount: float) -> jax.Array:
    """Scale each image by its own factor in [1 - amount, 1 + amount] (lighting changes between
    sessions); float32 in [0, 255] out, which the encoders take like uint8."""
    if amount <= 0:
        return images
    factor = jax.random.uniform(key, (images.shape[0], 1, 1, 1), minval=1.0 - amount, maxval=1.0 + amount)
    return jnp.clip(images.astype(jnp.float32) * factor, 0.0, 255.0)
