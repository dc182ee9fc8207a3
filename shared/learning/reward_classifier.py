"""The learned success classifier: network, threshold choice, checkpoint IO and compiled inference.

On the real robot the reward is ``RewardConfig.apply(p(success | wrist images) >= threshold)``.
Training (``learner/train_reward_classifier.py``) picks the threshold on held-out episodes and
saves it in the checkpoint with the config that built the network; the actor's wrapper
(``robot_env/classifier_reward.py``) loads all three from there, so they cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared.config import ClassifierConfig, ClassifierTrainConfig, from_dict, to_dict
from shared.learning.encoders import ObsEncoder, load_pretrained_trunks
from shared.learning.layer_norm import LayerNorm
from shared.learning.networks import forward
from shared.storage.checkpoint import CheckpointError, list_steps, merge_state, read_items, save_items

FORMAT = "wsrl-reward-classifier-v1"


class SuccessClassifier(nn.Module):
    """Images of every camera -> one success logit."""

    config: ClassifierConfig

    @nn.compact
    def __call__(self, obs: Mapping[str, jax.Array], train: bool = False) -> jax.Array:
        cfg = self.config
        x = ObsEncoder(cfg.encoder, name="encoder")({k: obs[k] for k in cfg.encoder.image_keys})
        for i, width in enumerate(cfg.hidden_dims):
            x = LayerNorm(relu=True, name=f"norm{i}")(nn.Dense(width, name=f"dense{i}")(x))
            x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        return nn.Dense(1, name="logit")(x)[..., 0]


def example_images(cfg: ClassifierConfig, image_size: int, batch: int = 1) -> dict[str, np.ndarray]:
    return {k: np.zeros((batch, image_size, image_size, 3), np.uint8) for k in cfg.encoder.image_keys}


def init_params(cfg: ClassifierConfig, image_size: int, key: jax.Array) -> Any:
    """Fresh parameters; the ResNet trunks come from ``encoder.pretrained_path`` when it is set."""
    params = SuccessClassifier(cfg).init(key, example_images(cfg, image_size))["params"]
    if cfg.encoder.pretrained_path:
        params = load_pretrained_trunks(params, cfg.encoder.pretrained_path)
    return params


# ------------------------------------------------------------------------------------ metrics


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, balanced accuracy and the confusion counts at ``threshold``
    (a frame is called a success when its probability is >= threshold). Precision is 1 when
    nothing is called a success (no false successes)."""
    pred = np.asarray(probs) >= threshold
    y = np.asarray(labels).astype(bool)
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "accuracy": (tp + tn) / max(len(y), 1),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": recall,
        "balanced_accuracy": (recall + specificity) / 2,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "threshold": float(threshold),
    }


def choose_threshold(probs: np.ndarray, labels: np.ndarray, min_precision: float) -> tuple[float, str]:
    """The threshold with the highest recall whose precision is at least ``min_precision``.

    Cuts are taken at the observed probabilities; the threshold is placed halfway between the
    lowest probability called a success and the next lower one, the widest margin that keeps the
    same validation outcome. When no cut reaches the precision, the one with the best F0.5
    (precision weighted over recall) is taken and the rule says so.
    """
    probs, y = np.asarray(probs, np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(-probs, kind="stable")
    p, yy = probs[order], y[order]
    last = np.r_[p[1:] != p[:-1], True]  # the last frame of each distinct probability, high to low
    cuts, tp, fp = p[last], np.cumsum(yy)[last], np.cumsum(~yy)[last]
    precision, recall = tp / (tp + fp), tp / max(int(y.sum()), 1)
    ok = (tp > 0) & (precision >= min_precision)
    rule = f"highest recall with precision >= {min_precision:g}"
    if ok.any():
        best = cuts[np.flatnonzero(ok)[np.argmax(recall[ok])]]  # first maximum: the highest such cut
    else:
        rule = f"no threshold reached precision {min_precision:g}: best F0.5"
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.nan_to_num(1.25 * precision * recall / (0.25 * precision + recall))
        best = cuts[int(np.argmax(f))]
    below = probs[probs < best]
    return (float((best + below.max()) / 2) if below.size else float(best)), rule


# ------------------------------------------------------------------------------- checkpoints


def save_classifier(
    directory: str | Path,
    params: Any,
    train_cfg: ClassifierTrainConfig,
    image_size: int,
    threshold: float,
    step: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    meta = {
        "format": FORMAT,
        "image_keys": list(train_cfg.model.encoder.image_keys),
        "image_size": int(image_size),
        "threshold": float(threshold),
        "step": int(step),
        "saved_at": time.time(),
        **dict(extra or {}),
    }
    config = {"type": "ClassifierTrainConfig", "config": to_dict(train_cfg)}
    return save_items(directory, step, "params", jax.device_get(params), {"config": config, "meta": meta})


class RewardClassifier:
    """A trained classifier with its threshold; ``probability(obs)`` is compiled once per shape."""

    def __init__(
        self,
        cfg: ClassifierConfig,
        params: Any,
        threshold: float,
        image_size: int,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.config, self.threshold, self.image_size = cfg, float(threshold), int(image_size)
        self.params = jax.device_put(params)
        self.meta = dict(meta or {})
        module = SuccessClassifier(cfg)
        self._probs = jax.jit(lambda p, images: jax.nn.sigmoid(forward(module, p, images)))

    @property
    def image_keys(self) -> tuple[str, ...]:
        return self.config.encoder.image_keys

    def probabilities(self, images: Mapping[str, np.ndarray]) -> np.ndarray:
        """[B] success probabilities for a batch of frames (each image key [B, H, W, 3] uint8)."""
        return np.asarray(self._probs(self.params, {k: images[k] for k in self.image_keys}))

    def probability(self, obs: Mapping[str, np.ndarray]) -> float:
        """The success probability of one observation (its image keys)."""
        return float(self.probabilities({k: np.asarray(obs[k])[None] for k in self.image_keys})[0])

    def warm_up(self) -> float:
        """Compile for one observation now (not in the control loop); returns the seconds it took."""
        t0 = time.perf_counter()
        self.probability({k: v[0] for k, v in example_images(self.config, self.image_size).items()})
        return time.perf_counter() - t0


def load_classifier(directory: str | Path, step: int | None = None) -> RewardClassifier:
    """The classifier saved in ``directory`` (or its ``checkpoints/``; newest step unless given).

    A missing, corrupt or mismatched checkpoint is a ``CheckpointError`` naming the path.
    """
    directory = Path(directory).absolute()
    if not list_steps(directory) and list_steps(directory / "checkpoints"):
        directory = directory / "checkpoints"  # the training command's --out
    steps = list_steps(directory)
    if not steps:
        raise CheckpointError(f"{directory}: no reward-classifier checkpoint found")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise CheckpointError(f"{directory}: no step {step} (have {steps})")
    where = f"{directory}/{step}"
    try:
        items = read_items(directory, step, "params", ("config", "meta"))
    except Exception as e:  # orbax's own errors for missing or truncated files
        raise CheckpointError(f"{where}: unreadable reward-classifier checkpoint ({type(e).__name__}: {e})") from None
    meta, cfg_json = items["meta"], items["config"]
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{where}: not a reward-classifier checkpoint (format "
            f"{meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    try:
        train_cfg = from_dict(ClassifierTrainConfig, cfg_json["config"])
        threshold, size = float(meta["threshold"]), int(meta["image_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: config or meta is incomplete or invalid: {e}") from None
    if not (0.0 <= threshold <= 1.0):
        raise CheckpointError(f"{where}: threshold {threshold} is not a probability")
    cfg = train_cfg.model
    template = SuccessClassifier(cfg).init(jax.random.PRNGKey(0), example_images(cfg, size))["params"]
    params = merge_state(template, items["params"], where)
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(params)):
        raise CheckpointError(f"{where}: the classifier's parameters are not finite")
    return RewardClassifier(cfg, params, threshold, size, meta)
