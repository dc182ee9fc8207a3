"""Reward-classifier speed: inference per control step (what the actor's loop pays) and training.

The default network (ResNet-10, 64 filters, one trunk per wrist camera, 256-unit head) at a
given image size, with random weights and random frames (speed does not depend on them).

Usage: .venv/bin/python benchmarks/classifier.py [--size 128] [--calls 100] [--train-steps 10]
The last line is ``classifier_ms_p50=<number>``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import optax

from learner.train_reward_classifier import make_train_step
from shared.config import ClassifierTrainConfig
from shared.learning.reward_classifier import RewardClassifier, init_params


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128, help="square image size of both cameras")
    p.add_argument("--calls", type=int, default=100, help="timed single-observation calls")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps (batch 64); 0 skips")
    args = p.parse_args()
    cfg = ClassifierTrainConfig()
    params = init_params(cfg.model, args.size, jax.random.PRNGKey(0))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    clf = RewardClassifier(cfg.model, params, 0.5, args.size)
    print(
        f"ResNet-10 classifier, {len(clf.image_keys)} cameras at {args.size} px, {n_params:,} parameters, "
        f"on {jax.devices()[0].platform}"
    )
    print(f"compile: {clf.warm_up():.2f} s")
    rng = np.random.default_rng(0)
    obs = {k: rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for k in clf.image_keys}
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        clf.probability(obs)
        times.append(1e3 * (time.perf_counter() - t0))
    p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
    print(f"inference, one observation: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({args.calls} calls)")
    if args.train_steps > 0:
        tx = optax.adam(cfg.lr)
        opt_state = tx.init(params)
        step = make_train_step(cfg, tx)
        batch = {
            k: rng.integers(0, 256, (cfg.batch_size, args.size, args.size, 3), dtype=np.uint8) for k in clf.image_keys
        }
        labels = (np.arange(cfg.batch_size) % 2).astype(np.float32)
        key = jax.random.PRNGKey(1)
        params, opt_state, m = step(params, opt_state, batch, labels, key)  # compile
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for _ in range(args.train_steps):
            key, sub = jax.random.split(key)
            params, opt_state, m = step(params, opt_state, batch, labels, sub)
        jax.block_until_ready(m)
        dt = (time.perf_counter() - t0) / args.train_steps
        print(f"training: {dt:.3f} s per step of {cfg.batch_size} frames ({cfg.batch_size / dt:.0f} frames/s)")
    print(f"classifier_ms_p50={p50:.3f}")


if __name__ == "__main__":
    main()
