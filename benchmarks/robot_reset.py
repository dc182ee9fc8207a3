"""Resets of ``Franka-v0`` against the simulated robot server: how long they take, how large the
largest single pose command is, and where the tool is when the arm moves sideways or down.

Each round: the scripted expert inserts the peg (so the reset starts in the hole), then one
reset; every ``/pose`` command of the reset is recorded with the measured pose just before it.
A "step" is the distance from the previous command (the first from the measured pose).
Rounds alternate with a joint reset (``--joint-reset``), which the env must do only out of the hole.

Usage: .venv/bin/python benchmarks/robot_reset.py [--rounds 4] [--joint-reset]
The last line is ``largest_step_m=<metres>``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np

from robot_env.franka_env import FrankaEnv
from robot_env.scripted import ScriptedInserter, Skill
from robot_env.sim_robot_server import SimRobotServer
from robot_env.task_config import load_task
from shared.wire.transport import free_port


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle between two quaternions (xyzw)."""
    d = abs(float(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b))))
    return float(2 * np.arccos(min(d, 1.0)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--joint-reset", action="store_true", help="a joint reset every other episode")
    args = p.parse_args(argv)
    task = load_task("peg_insertion")
    real = task.real_section
    if args.joint_reset:
        task = replace(task, real=replace(real, joint_reset_every=2))
    server = SimRobotServer(task, port=free_port(), joint_reset_s=1.0).start()
    env = FrankaEnv(task, robot_url=server.url)
    target_z = task.target_pose[2]
    log: list[dict[str, Any]] = []
    send = env.client.command_pose
    jreset = env.client.joint_reset

    def recording_send(pose7: np.ndarray) -> None:
        here = server.in_sim(lambda r: r.get_state()["pose"])
        log.append({"cmd": np.asarray(pose7, np.float64), "here": np.asarray(here, np.float64)})
        send(pose7)

    def recording_joint_reset() -> None:
        here = server.in_sim(lambda r: r.get_state()["pose"])
        log.append({"joint_reset": True, "here": np.asarray(here, np.float64)})
        jreset()

    env.client.command_pose = recording_send  # type: ignore[method-assign]
    env.client.joint_reset = recording_joint_reset  # type: ignore[method-assign]
    results: list[dict[str, Any]] = []
    try:
        obs, _ = env.reset(options={"eval_pose": 0})
        for r in range(args.rounds):
            policy = ScriptedInserter(task, Skill.level(1.0), seed=r)
            policy.reset()
            for _ in range(60):
                obs, _, terminated, truncated, _ = env.step(policy(obs))
                if terminated or truncated:
                    break
            height = float(env.raw_state["pose"][2]) - target_z  # < 0: deeper than the target pose
            log.clear()
            t0 = time.perf_counter()
            obs, _ = env.reset(options={"eval_pose": r % len(task.eval_poses)})
            seconds = time.perf_counter() - t0
            prev: np.ndarray | None = None
            steps, rots = [], []
            joint_reset_z = None
            sideways_in_hole = 0
            for e in log:
                if e.get("joint_reset"):
                    joint_reset_z = float(e["here"][2]) - target_z
                    prev = None
                    continue
                ref = e["here"] if prev is None else prev
                steps.append(float(np.linalg.norm(e["cmd"][:3] - ref[:3])))
                rots.append(_angle(e["cmd"][3:], ref[3:]))
                lateral = float(np.linalg.norm(e["cmd"][:2] - e["here"][:2]))
                if float(e["here"][2]) - target_z < 0.02 and lateral > 2e-3:
                    sideways_in_hole += 1
                prev = e["cmd"]
            results.append(
                {
                    "round": r,
                    "tool_height_above_target_before_reset_m": round(height, 4),
                    "reset_s": round(seconds, 2),
                    "commands": len(steps),
                    "largest_step_m": round(max(steps), 4),
                    "largest_rotation_rad": round(max(rots), 3),
                    "sideways_commands_within_2cm_of_the_hole": sideways_in_hole,
                    "joint_reset_height_above_target_m": None if joint_reset_z is None else round(joint_reset_z, 4),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    finally:
        env.close()
        server.close()
    print(f"reset_s_median={np.median([x['reset_s'] for x in results]):.2f}")
    print(f"largest_step_m={max(float(x['largest_step_m']) for x in results):.4f}")


if __name__ == "__main__":
    main()
