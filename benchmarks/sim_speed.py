"""Simulation speed: env steps per second of ``PegInsertionSim-v0``.

Measures state mode, image mode with two wrist cameras at 128x128 and at a tiny test size,
and raw MuJoCo physics for reference. Actions are uniform random, so the peg keeps touching
the board (contacts are the expensive part of the physics). Episodes reset as they end.

Usage: .venv/bin/python benchmarks/sim_speed.py [--seconds 5] [--sizes 128 16]
Rendering uses $MUJOCO_GL (EGL by default when there is no display; osmesa also works).
The last line is ``env_steps_per_s=<state mode>``.
"""

from __future__ import annotations

import argparse
import os
import time

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

import robot_env


def env_rate(seconds: float, **kwargs) -> float:
    env = gym.make(robot_env.SIM_ENV_ID, **kwargs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(20):  # warm up (renderer creation, caches)
        env.step(rng.uniform(-1, 1, 6))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 6))
        steps += 1
        if term or trunc:
            env.reset()
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def physics_rate(seconds: float) -> float:
    env = gym.make(robot_env.SIM_ENV_ID)
    env.reset(seed=0)
    robot = env.get_wrapper_attr("robot")
    m, d = robot.model, robot.data
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mujoco.mj_step(m, d, nstep=100)
        n += 100
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    p.add_argument("--sizes", type=int, nargs="*", default=[128, 16], help="image sizes to measure")
    args = p.parse_args()
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')} mujoco={mujoco.__version__}")
    print(f"physics_steps_per_s={physics_rate(args.seconds):.0f} (2 ms steps; 50 per env step)")
    for size in args.sizes:
        rate = env_rate(args.seconds, obs_mode="images", image_size=size)
        print(f"image_mode_{size}x{size}_env_steps_per_s={rate:.0f}")
    state = env_rate(args.seconds, obs_mode="state")
    print(f"env_steps_per_s={state:.0f}")


if __name__ == "__main__":
    main()
