"""Train the reward classifier on labelled wrist-camera frames (``actor/record_labels.py``).

Usage: ``launch/train_reward_classifier.sh --data data/labels --out checkpoints/reward_classifier``
(``--help`` lists every flag). The actor then takes ``--reward-classifier OUT``.

- Held-out validation by whole episodes: neighbouring frames of one episode are near-copies,
  so a random frame split would grade the classifier on its training images.
- Class-balanced batches (half success, half failure frames): success frames are rare.
- Augmentation: random shifts and brightness, per camera.
- The parameters with the lowest validation loss are kept; the threshold is chosen on the
  validation episodes (highest recall at ``min_precision``) and saved in the checkpoint.

Writes ``OUT/checkpoints/<step>`` (orbax: parameters, config, threshold and metrics),
``OUT/report.json``, ``OUT/validation.png`` and ``OUT/metrics.jsonl`` (+ TensorBoard).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from shared.command_line import print_config
from shared.config import ClassifierTrainConfig, apply_overrides, read_config_file, to_dict, write_config_file
from shared.data.labelled_images import LabelledImages, load_labelled_images
from shared.learning.augmentation import augment_observations, random_brightness
from shared.learning.networks import forward
from shared.learning.reward_classifier import (
    SuccessClassifier,
    binary_metrics,
    choose_threshold,
    init_params,
    save_classifier,
)
from shared.metrics import MetricsLogger
from shared.xla_cpu import tune_process

log = logging.getLogger("wsrl.classifier")
EVAL_CHUNK = 128


class SplitError(ValueError):
    """The data cannot give both classes to both splits."""


def split_episodes(
    episode: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices ``(train, val)``: whole episodes, in a seeded random order, go to validation
    until it holds ``val_fraction`` of the frames. Both splits must hold both classes."""
    eps = np.unique(episode)
    if eps.size < 2:
        raise SplitError("need at least two recorded episodes to hold one out for validation")
    order = np.random.default_rng(seed).permutation(eps)
    target = val_fraction * len(episode)
    val_eps, n = [], 0
    for e in order[:-1]:  # at least one episode stays for training
        if n >= target:
            break
        val_eps.append(e)
        n += int(np.sum(episode == e))
    is_val = np.isin(episode, val_eps)
    train, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    for name, idx in (("training", train), ("validation", val)):
        pos = int(labels[idx].sum())
        if pos == 0 or pos == idx.size:
            raise SplitError(
                f"the {name} split ({idx.size} frames) has only "
                f"{'failure' if pos == 0 else 'success'} frames; record more episodes "
                "with both outcomes (or change --val-fraction / --seed)"
            )
    return train, val


class BalancedSampler:
    """Batches of ``batch // 2`` success and ``batch - batch // 2`` failure frames, each drawn
    uniformly (with replacement) from its class among ``indices``."""

    def __init__(self, labels: np.ndarray, indices: np.ndarray, seed: int) -> None:
        y = labels[indices].astype(bool)
        self.pos, self.neg = indices[y], indices[~y]
        if self.pos.size == 0 or self.neg.size == 0:
            raise SplitError("class-balanced batches need both success and failure frames")
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> np.ndarray:
        k = batch // 2
        return np.concatenate([self.rng.choice(self.pos, k), self.rng.choice(self.neg, batch - k)])


def make_train_step(cfg: ClassifierTrainConfig, tx: optax.GradientTransformation) -> Callable:
    module = SuccessClassifier(cfg.model)
    keys = cfg.model.encoder.image_keys
    pad = cfg.model.encoder.augment_pad

    @jax.jit
    def step(params: Any, opt_state: Any, images: dict, labels: jax.Array, key: jax.Array):
        k_shift, k_bright, k_drop = jax.random.split(key, 3)
        images = augment_observations(k_shift, images, keys, pad)
        images = {
            k: random_brightness(kb, images[k], cfg.brightness)
            for k, kb in zip(keys, jax.random.split(k_bright, len(keys)))
        }

        def loss_fn(p):
            logits = forward(module, p, images, train=True, rngs={"dropout": k_drop})
            loss = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
            return loss, jnp.mean((logits > 0) == (labels > 0.5))

        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "accuracy": acc}

    return step


def make_predict(cfg: ClassifierTrainConfig) -> Callable[[Any, LabelledImages, np.ndarray], np.ndarray]:
    module = SuccessClassifier(cfg.model)
    logits_fn = jax.jit(lambda p, images: forward(module, p, images))

    def predict(params: Any, data: LabelledImages, idx: np.ndarray) -> np.ndarray:
        """Logits of frames ``idx``, in fixed-size chunks (one compilation)."""
        out = []
        for s in range(0, idx.size, EVAL_CHUNK):
            chunk = idx[s : s + EVAL_CHUNK]
            padded = np.resize(chunk, EVAL_CHUNK)
            logits = logits_fn(params, {k: data.images[k][padded] for k in cfg.model.encoder.image_keys})
            out.append(np.asarray(logits)[: chunk.size])
        return np.concatenate(out)

    return predict


def train(
    data: LabelledImages, cfg: ClassifierTrainConfig, out: str | Path, progress: bool = True, tensorboard: bool = True
) -> dict[str, Any]:
    """Train, choose the threshold, save the checkpoint and the report; returns the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if tuple(cfg.model.encoder.image_keys) != data.image_keys:
        raise ValueError(
            f"the model's image keys {cfg.model.encoder.image_keys} differ from the data's {data.image_keys}"
        )
    train_idx, val_idx = split_episodes(data.episode, data.labels, cfg.val_fraction, cfg.seed)
    sampler = BalancedSampler(data.labels, train_idx, cfg.seed)
    key = jax.random.PRNGKey(cfg.seed)
    key, init_key = jax.random.split(key)
    params = init_params(cfg.model, data.image_size, init_key)
    tx = optax.adam(cfg.lr)
    opt_state = tx.init(params)
    step_fn, predict = make_train_step(cfg, tx), make_predict(cfg)
    val_y = data.labels[val_idx].astype(np.float32)
    metrics = MetricsLogger(out, tensorboard=tensorboard)
    best = {"loss": np.inf, "step": 0, "params": params}
    curve: list[dict[str, float]] = []
    t0 = time.time()
    bar = tqdm(total=cfg.steps, unit="step", desc="reward classifier", disable=not progress, mininterval=1.0)
    recent: list[Any] = []
    try:
        for i in range(1, cfg.steps + 1):
            idx = sampler.sample(cfg.batch_size)
            images = {k: data.images[k][idx] for k in data.image_keys}
            labels = data.labels[idx].astype(np.float32)
            key, sub = jax.random.split(key)
            params, opt_state, m = step_fn(params, opt_state, images, labels, sub)
            recent.append(m)
            bar.update(1)
            if i % cfg.eval_every == 0 or i == cfg.steps:
                train_m = {k: float(np.mean([float(r[k]) for r in recent])) for k in ("loss", "accuracy")}
                recent = []
                logits = predict(params, data, val_idx)
                val_loss = float(np.mean(np.asarray(optax.sigmoid_binary_cross_entropy(logits, val_y))))
                val = binary_metrics(1 / (1 + np.exp(-logits)), val_y, 0.5)
                row = {
                    "train_loss": train_m["loss"],
                    "train_accuracy": train_m["accuracy"],
                    "val_loss": val_loss,
                    "val_accuracy": val["accuracy"],
                    "val_precision": val["precision"],
                    "val_recall": val["recall"],
                }
                metrics.log(i, row)
                curve.append({"step": i, **row})
                if val_loss < best["loss"]:
                    best = {"loss": val_loss, "step": i, "params": params}
                bar.set_postfix(
                    loss=f"{train_m['loss']:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val['accuracy']:.3f}"
                )
    finally:
        bar.close()
        metrics.close()
    train_time = time.time() - t0
    probs = 1 / (1 + np.exp(-predict(best["params"], data, val_idx)))
    threshold, rule = choose_threshold(probs, val_y, cfg.min_precision)
    chosen = binary_metrics(probs, val_y, threshold)
    report = {
        "data": {
            "frames": len(data),
            "success": int(data.labels.sum()),
            "image_size": data.image_size,
            "image_keys": list(data.image_keys),
            "label_sources": list(data.sources),
            "train_frames": int(train_idx.size),
            "train_success": int(data.labels[train_idx].sum()),
            "val_frames": int(val_idx.size),
            "val_success": int(val_y.sum()),
            "val_episodes": int(np.unique(data.episode[val_idx]).size),
        },
        "threshold": threshold,
        "threshold_rule": rule,
        "best_step": int(best["step"]),
        "validation": chosen,
        "validation_at_0.5": binary_metrics(probs, val_y, 0.5),
        "train_time_s": round(train_time, 1),
        "steps_per_s": round(cfg.steps / train_time, 2),
        "config": to_dict(cfg),
        "curve": curve,
    }
    ckpt = save_classifier(
        out / "checkpoints",
        best["params"],
        cfg,
        data.image_size,
        threshold,
        int(best["step"]),
        extra={"validation": chosen, "threshold_rule": rule, "data": report["data"]},
    )
    report["checkpoint"] = str(ckpt.parent)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _plot(out / "validation.png", curve, probs, val_y, threshold)
    return report


def _plot(path: Path, curve: list[dict[str, float]], probs: np.ndarray, labels: np.ndarray, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [c["step"] for c in curve]
    a.plot(steps, [c["train_loss"] for c in curve], label="training loss (balanced batches)")
    a.plot(steps, [c["val_loss"] for c in curve], label="validation loss")
    a.set_xlabel("step")
    a.set_yscale("log")
    a.legend()
    cuts = np.linspace(0, 1, 101)
    ms = [binary_metrics(probs, labels, c) for c in cuts]
    b.plot(cuts, [m["precision"] for m in ms], label="precision")
    b.plot(cuts, [m["recall"] for m in ms], label="recall")
    b.plot(cuts, [m["accuracy"] for m in ms], label="accuracy")
    b.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    b.set_xlabel("threshold (validation episodes)")
    b.set_ylim(0, 1.02)
    b.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    tune_process()  # before JAX starts its backend
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", help="labelled-image dataset folder(s) (required)")
    p.add_argument("--out", help="output folder (checkpoints/, report.json, validation.png; required)")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="an experiment file (YAML or JSON): its classifier: section (a ClassifierTrainConfig), e.g. a "
        "classifier's OUT/config.yaml to train it again",
    )
    p.add_argument("--encoder", choices=["resnet10", "small_conv"], help="default: resnet10")
    p.add_argument("--base-filters", type=int, help="trunk width (ResNet-10: 64, the default)")
    p.add_argument("--pretrained-trunk", help=".npz of ResNet-10 trunk weights (frozen when given)")
    p.add_argument("--steps", type=int, help=f"default {ClassifierTrainConfig.steps}")
    p.add_argument("--batch-size", type=int, help=f"default {ClassifierTrainConfig.batch_size}")
    p.add_argument("--val-fraction", type=float, help=f"default {ClassifierTrainConfig.val_fraction}")
    p.add_argument(
        "--min-precision",
        type=float,
        help=f"the threshold gives the highest validation recall at this precision (default "
        f"{ClassifierTrainConfig.min_precision})",
    )
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override any ClassifierTrainConfig field, e.g. model.hidden_dims=[128]",
    )
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as a 'classifier:' section (a file --config reads) and exit",
    )
    args = p.parse_args(argv)
    # The defaults, then --config's classifier: section, then the flags given, then --set.
    try:
        cfg = ClassifierTrainConfig()
        if args.config:
            cfg = read_config_file(args.config, ClassifierTrainConfig, "classifier", base=cfg)
        flags = ("steps", "batch_size", "val_fraction", "min_precision", "seed")
        cfg = replace(cfg, **{k: getattr(args, k) for k in flags if getattr(args, k) is not None})
        enc = cfg.model.encoder
        if args.encoder is not None:
            enc = replace(enc, kind=args.encoder)
        if args.base_filters is not None:
            enc = replace(enc, base_filters=args.base_filters)
        if args.pretrained_trunk:
            enc = replace(enc, pretrained_path=str(Path(args.pretrained_trunk).absolute()), freeze_trunk=True)
        cfg = apply_overrides(replace(cfg, model=replace(cfg.model, encoder=enc)), args.set)
    except (ValueError, TypeError) as e:
        p.error(str(e))
    if args.print_config:
        print_config("classifier", cfg)
        return
    if not args.data or not args.out:
        p.error("--data and --out are required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    data = load_labelled_images(args.data)
    c = data.counts()
    print(
        f"labelled images: {c['frames']} frames ({c['success']} success, {c['failure']} failure) in "
        f"{c['episodes']} episodes, {data.image_keys} at {data.image_size} px",
        file=sys.stderr,
        flush=True,
    )
    # the cameras the data has, whatever the config says
    cfg = replace(cfg, model=replace(cfg.model, encoder=replace(cfg.model.encoder, image_keys=data.image_keys)))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_config_file(Path(args.out) / "config.yaml", {"classifier": cfg})  # --config runs it again
    report = train(data, cfg, args.out, progress=not args.no_progress, tensorboard=not args.no_tensorboard)
    v = report["validation"]
    print(
        f"validation ({report['data']['val_frames']} frames, {report['data']['val_episodes']} episodes): "
        f"accuracy {v['accuracy']:.3f}, precision {v['precision']:.3f}, recall {v['recall']:.3f} at threshold "
        f"{report['threshold']:.3f} ({report['threshold_rule']}); checkpoint {report['checkpoint']}",
        file=sys.stderr,
        flush=True,
    )
    print(json.dumps({k: report[k] for k in ("threshold", "validation", "checkpoint")}))


if __name__ == "__main__":
    main()
