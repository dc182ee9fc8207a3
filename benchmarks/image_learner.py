"""Learner throughput with image encoders: the robot preset's fused online update on two wrist cameras.

The ``robot`` preset (ResNet-10 per camera, trunk frozen, ensemble 10, 2-block MLP-ResNets,
batch 256, UTD 4) on random uint8 frames already on the device; each call is one env step's
worth of learning (UTD critic updates and one actor update). Sizes can be cut for a CPU.

With ``--cached`` the batch carries the frozen trunk's features (``shared.learning.encoders.feature_key``)
instead of the frames, as the learner's feature cache gives them: the heads, critics and actor
train without running the trunk; the time to compute one env step's features (one new frame per
camera) is printed beside it.

Usage: .venv/bin/python benchmarks/image_learner.py [--size 128] [--encoder resnet10] [--filters 64]
    [--critics 10] [--batch 256] [--utd 4] [--seconds 20] [--shared-encoder] [--cached] [--all]
    [--set agent.PATH=VALUE ...] [--tag NAME]
``--all`` measures own encoders, a shared encoder and cached features in one process (one start,
and the initialisation's many small compilations made once), a figure line each. ``--set``
overrides the agent's config; ``--tag NAME`` appends ``_NAME`` to the figure's name.
The last line is ``learner_env_steps_per_s=<calls per second>`` (the robot runs 10 env steps/s),
``learner_shared_encoder_env_steps_per_s`` with ``--shared-encoder``, ``learner_cached_...`` with
``--cached``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from robot_env.contract import ACTION_DIM, IMAGE_KEYS, STATE_DIM
from shared.config import apply_overrides
from shared.learning.agents import create_agent, make_update
from shared.learning.encoders import caches_features, trunk_features
from shared.presets import robot_online

VARIANTS = ("own", "shared", "cached_own")  # --all, in this order


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128, help="camera frames of N x N px")
    p.add_argument("--encoder", choices=("resnet10", "small_conv"), default="resnet10")
    p.add_argument("--filters", type=int, default=64, help="the trunk's base filters")
    p.add_argument("--critics", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--utd", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--shared-encoder", action="store_true", help="the actor reads the critic's encoder")
    p.add_argument("--cached", action="store_true", help="train on the frozen trunk's cached features")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="agent.PATH=VALUE")
    p.add_argument("--tag", default="", help="appended to the figure's name (e.g. bf16 with --set ...matmul_dtype)")
    p.add_argument(
        "--all",
        action="store_true",
        help="the three in one process, one figure each: own encoders, shared, cached (the device check)",
    )
    args = p.parse_args()
    one = ("cached_" if args.cached else "") + ("shared" if args.shared_encoder else "own")
    for variant in VARIANTS if args.all else (one,):
        measure(args, variant)


def measure(args: argparse.Namespace, variant: str) -> None:
    """One variant's figure: the actor's ``own`` encoders or the critic's (``shared``), on the
    frames or, prefixed ``cached_``, on the trunk's cached features."""
    shared, cached = variant.endswith("shared"), variant.startswith("cached_")
    cfg = apply_overrides(
        robot_online(),
        [
            f"agent.encoder.kind={args.encoder}",
            f"agent.encoder.base_filters={args.filters}",
            f"agent.num_critics={args.critics}",
            f"agent.batch_size={args.batch}",
            f"agent.utd={args.utd}",
            f"agent.encoder.share_encoder={str(shared).lower()}",
            *args.overrides,
        ],
    ).agent
    s = args.size
    obs = {"state": np.zeros(STATE_DIM, np.float32), **{k: np.zeros((s, s, 3), np.uint8) for k in IMAGE_KEYS}}
    agent = create_agent(cfg, obs, ACTION_DIM)
    update = make_update(cfg)
    rng = np.random.default_rng(0)
    lead = (cfg.utd, cfg.batch_size)

    feature_s = None
    if cached:
        if not caches_features(cfg.encoder):
            raise SystemExit("--cached needs a frozen ResNet-10 trunk (--encoder resnet10)")
        one = {k: rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8) for k in IMAGE_KEYS}
        features = jax.jit(lambda p, imgs: trunk_features(cfg.encoder, p, imgs))
        jax.block_until_ready(features(agent.critic.params["encoder"], one))
        t_feat: list[float] = []
        for _ in range(10):
            t0 = time.perf_counter()
            jax.block_until_ready(features(agent.critic.params["encoder"], one))
            t_feat.append(time.perf_counter() - t0)
        feature_s = statistics.median(t_feat)
        shapes = {k: v.shape[1:] for k, v in features(agent.critic.params["encoder"], one).items()}

    def frames() -> dict[str, np.ndarray]:
        if cached:
            feats = {k: rng.normal(size=(*lead, *shp)).astype(np.float32) for k, shp in shapes.items()}
            return {"state": rng.normal(size=(*lead, STATE_DIM)).astype(np.float32), **feats}
        return {
            "state": rng.normal(size=(*lead, STATE_DIM)).astype(np.float32),
            **{k: rng.integers(0, 256, (*lead, s, s, 3), dtype=np.uint8) for k in IMAGE_KEYS},
        }

    batch = jax.device_put(
        {
            "observations": frames(),
            "next_observations": frames(),
            "actions": rng.uniform(-1, 1, (*lead, ACTION_DIM)).astype(np.float32),
            "rewards": -np.ones(lead, np.float32),
            "masks": np.ones(lead, np.float32),
            "dones": np.zeros(lead, np.float32),
            "mc_returns": -np.ones(lead, np.float32),
        }
    )
    t = time.perf_counter()
    agent, _ = update(agent, batch)
    jax.block_until_ready(agent)
    print(f"backend={jax.default_backend()} devices={jax.devices()}")
    print(
        f"config: {args.encoder} ({args.filters} filters{', shared with the actor' if shared else ''}) "
        f"on {len(IMAGE_KEYS)} cameras at {s} px, "
        f"ensemble={cfg.num_critics}, batch={cfg.batch_size}, utd={cfg.utd}; first call {time.perf_counter() - t:.1f} s"
    )
    times: list[float] = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        agent, _ = update(agent, batch)
        jax.block_until_ready(agent.critic.params)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"{len(times)} calls: median {1e3 * med:.1f} ms per call, {cfg.utd / med:.1f} critic updates/s")
    if feature_s is not None:
        dims = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        print(f"features per env step (one new frame per camera): {1e3 * feature_s:.1f} ms; cached shapes {dims}")
    name = "learner_shared_encoder_env_steps_per_s" if shared else "learner_env_steps_per_s"
    if cached:
        name = name.replace("learner_", "learner_cached_")
    if args.tag:
        name = f"{name}_{args.tag}"
    print(f"{name}={1 / med:.2f}")


if __name__ == "__main__":
    main()
