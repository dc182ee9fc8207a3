"""The learner's trunk-feature cache: a frozen ResNet-10 trunk's output, computed once per frame.

Online, the image trunk is frozen (as SERL's pretrained ResNet-10 is), so its output for a stored
frame never changes. Recomputing it for every row of every minibatch cost about 6,000 trunk
passes per env step at UTD 4 (a 128 px robot-preset update: 14-47 s on a CPU core,
docs/benchmarks.md). Here each frame that arrives is passed through the trunk once, at ingest,
and its features are stored beside it in the replay buffer under a derived key
(``shared.learning.encoders.feature_key``); the update samples the features and leaves the frames on disk,
where they stay so that a user can unfreeze or swap the trunk later and recompute.

The actors never see any of this: they send frames, and the policy's contract and the published
weights are those of the image policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from shared.config import EncoderConfig
from shared.data.dataset import ObsSpec
from shared.learning.encoders import caches_features, trunk_features
from shared.storage.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.features")
BATCH = 32  # frames per trunk call at most (block_sizes)


class TrunkFeatures:
    """Adds the frozen trunk's features of each image key to a chunk's frames.

    ``encoder_params``: an encoder's parameters (``agent.critic.params["encoder"]``; every
    network shares the one frozen trunk, ``shared.learning.agents.create_agent``)."""

    def __init__(self, cfg: EncoderConfig, encoder_params: Any, wire: ObsSpec, batch: int = BATCH) -> None:
        if not caches_features(cfg):
            raise ValueError("only a frozen ResNet-10 trunk's features can be cached (encoder.freeze_trunk)")
        missing = [k for k in cfg.image_keys if k not in wire]
        if missing:
            raise ValueError(f"the encoder reads {missing}, which the observations do not have ({sorted(wire)})")
        self.image_keys = tuple(cfg.image_keys)
        self.batch = int(batch)
        trunks = {f"trunk_{k}": encoder_params[f"trunk_{k}"] for k in self.image_keys}
        self._params = jax.device_put(trunks)
        self._fn = jax.jit(lambda p, imgs: trunk_features(cfg, p, imgs))
        example = {k: jax.ShapeDtypeStruct((1, *wire[k][0]), np.dtype(wire[k][1])) for k in self.image_keys}
        shapes = jax.eval_shape(self._fn, self._params, example)
        self.spec: ObsSpec = {k: (tuple(v.shape[1:]), str(v.dtype)) for k, v in shapes.items()}
        if cfg.augment_pad > 0:
            # DrQ's shift happens before the trunk: on cached features it cannot apply. Whether a
            # few cached shifted copies are worth their cost is not measured yet (docs/simulation.md).
            log.warning(
                "trunk features cached: DrQ's random shift (encoder.augment_pad=%d) does not apply to them",
                cfg.augment_pad,
            )

    def buffer_spec(self, wire: ObsSpec) -> ObsSpec:
        """The replay buffer's spec: the actors' observations and the features."""
        return dict(sorted({**wire, **self.spec}.items()))

    def sample_keys(self, spec: ObsSpec) -> list[str]:
        """The keys an update reads: the features in place of the images they come from."""
        return [k for k in spec if k not in self.image_keys]

    def __call__(self, frames: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``frames`` (the wire layout's [F, ...] arrays) with each image key's features added."""
        n = len(next(iter(frames.values())))
        out = dict(frames)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.spec}
        start = 0
        for size in block_sizes(n, self.batch):
            imgs = {k: jnp.asarray(np.asarray(frames[k][start : start + size])) for k in self.image_keys}
            for k, v in self._fn(self._params, imgs).items():
                parts[k].append(np.asarray(v))
            start += size
        for k, (shape, dtype) in self.spec.items():
            out[k] = np.concatenate(parts[k]) if parts[k] else np.zeros((0, *shape), dtype)
        return out


def block_sizes(n: int, batch: int) -> list[int]:
    """Trunk calls for ``n`` frames: whole batches, then the rest as powers of two, largest first.
    Nothing is padded (an actor's chunk of a few frames once cost a whole padded batch of 32: the
    64 px image job's learner ingested 1.3 transitions/s), and a few shapes (the batch and the
    powers of two below it) are ever compiled."""
    sizes = [batch] * (n // batch)
    rest = n % batch
    while rest:
        size = 1 << (rest.bit_length() - 1)
        sizes.append(size)
        rest -= size
    return sizes


def add_features(buffer: ReplayBuffer, cache: TrunkFeatures, progress: bool = False) -> None:
    """Give a loaded dataset (frames in RAM) its trunk features, once, before offline training."""
    filled = min(buffer.slots_written, buffer.capacity)
    block = 8 * cache.batch
    out = {k: np.zeros((buffer.capacity, *s), d) for k, (s, d) in cache.spec.items()}
    for start in tqdm(range(0, filled, block), desc="trunk features", unit="block", disable=not progress):
        slots = np.arange(start, min(start + block, filled))
        feats = cache({k: buffer.frame(k, slots) for k in cache.image_keys})
        for k in cache.spec:
            out[k][slots] = feats[k]
    for k, v in out.items():
        buffer.add_derived(k, v)
