"""Bytes per policy-weights publish for the robot preset, with and without the frozen trunk.

The robot policy (``robot_online``: ResNet-10 on both 128 px wrist cameras, trunk frozen) is built
at its real size; the encoded WEIGHTS message is measured as the learner sends it on its first
publish (the trunk included) and on the others (the trunk left out, its digest named), and the
time to encode and to decode-and-rebuild on the actor's side.

Usage: .venv/bin/python benchmarks/weights_bytes.py [--image-size 128]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
from flax import serialization

from robot_env.contract import ACTION_DIM, IMAGE_KEYS, STATE_DIM
from shared.learning.agents import create_agent
from shared.presets import robot_online
from shared.wire.policy_weights import FULL_EVERY, params_from_message, split_frozen, weights_message
from shared.wire.protocol import decode, encode


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args()
    cfg = robot_online().agent
    s = args.image_size
    obs = {"state": np.zeros(STATE_DIM, np.float32), **{k: np.zeros((s, s, 3), np.uint8) for k in IMAGE_KEYS}}
    params = create_agent(cfg, obs, ACTION_DIM).actor.params
    tree = serialization.to_state_dict(params)
    _, frozen = split_frozen(tree)
    n_all = sum(np.size(x) for x in jax.tree.leaves(tree))
    n_frozen = sum(np.size(x) for x in jax.tree.leaves(frozen))
    print(f"robot preset actor at {s} px: {n_all / 1e6:.2f} M parameters, {n_frozen / 1e6:.2f} M in the frozen trunks")
    rows = []
    for name, include in ((f"with the trunk (first, then every {FULL_EVERY}th)", True), ("without", False)):
        t0 = time.perf_counter()
        data = encode(weights_message(params, 2, "fp", frozen_trunk=True, include_frozen=include))
        enc_ms = 1e3 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(params_from_message(decode(data), params, "fp"))
        dec_ms = 1e3 * (time.perf_counter() - t0)
        rows.append((name, len(data), enc_ms, dec_ms))
    before = len(encode(weights_message(params, 2, "fp")))
    print(f"{'message':42s} {'MB':>8s} {'encode ms':>10s} {'decode+rebuild ms':>18s}")
    print(f"{'before (always the whole tree)':42s} {before / 1e6:8.2f}")
    for name, n, e, d in rows:
        print(f"{name:42s} {n / 1e6:8.2f} {e:10.1f} {d:18.1f}")
    mean = (rows[0][1] + (FULL_EVERY - 1) * rows[1][1]) / FULL_EVERY
    print(f"mean bytes per publish: {mean / 1e6:.2f} MB (before {before / 1e6:.2f} MB, {before / mean:.1f}x less)")


if __name__ == "__main__":
    main()
