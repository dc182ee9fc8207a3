"""The robot path against the simulated server's model of the real controller: false stalls, reflex
recovery, hold-still drift under a payload, a jammed reset, and what a reset costs.

    .venv/bin/python benchmarks/robot_controller.py [--episodes 12]

Runs in real time (the server's physics follows the wall clock), a few minutes. The stall rule of
commit f34e948 (moved along the command < 20 % of it, resisting force < 5 N with the old sign,
one step) is evaluated on the same steps as today's, so both are counted on identical rollouts.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from robot_env import geometry as geo
from robot_env.franka_env import FrankaEnv, ResetJammed, stalled
from robot_env.robot_client import RobotClient
from robot_env.scripted import ScriptedInserter, Skill
from robot_env.sim_robot_server import SimRobotServer
from robot_env.task_config import TaskConfig, load_task
from shared.wire.transport import free_port

DOWN = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def old_rule(before7: np.ndarray, target7: np.ndarray, after: dict[str, Any]) -> bool:
    """f34e948's stall rule, with the sign it assumed (the world's push on the tool)."""
    command = np.asarray(target7[:3]) - np.asarray(before7[:3])
    dist = float(np.linalg.norm(command))
    if dist < 0.004:
        return False
    u = command / dist
    moved = float(np.dot(np.asarray(after["pose"][:3]) - np.asarray(before7[:3]), u))
    force_base = geo.quat_to_mat(np.asarray(after["pose"][3:])) @ np.asarray(after["force"])
    return moved < 0.2 * dist and -float(np.dot(force_base, u)) < 5.0


def rollouts(task: TaskConfig, server: SimRobotServer, episodes: int) -> dict[str, Any]:
    env = FrankaEnv(task, robot_url=server.url)
    old_episodes = new_episodes = new_steps = old_steps = steps = successes = 0
    tripped = server.robot.reflexes
    try:
        for ep in range(episodes):
            press = ep % 3 == 2  # every third episode presses on the board beside the hole
            if press:
                obs, _ = env.reset(options={"pose_offset": (0.03, -0.02 + 0.01 * (ep % 5), 0.2)})
            else:
                obs, _ = env.reset(options={"eval_pose": ep % 20})
            policy = ScriptedInserter(task, Skill.level(1.0), seed=ep)
            policy.reset()
            old_hit = new_hit = False
            for _ in range(20 if press else 60):
                before = env.raw_state["pose"].copy()
                obs, _, terminated, truncated, info = env.step(DOWN if press else policy(obs))
                after = env.raw_state
                steps += 1
                o = old_rule(before, info["commanded_pose"], after)
                n = stalled(before, info["commanded_pose"], after, task.real_section.stall_min_command, 5.0)
                old_steps += int(o)
                new_steps += int(n)
                old_hit |= o
                new_hit |= bool(info.get("reflex"))
                if terminated or truncated:
                    break
            successes += int(bool(info.get("success")))
            old_episodes += int(old_hit)
            new_episodes += int(new_hit)
    finally:
        env.close()
    return {
        "episodes": episodes,
        "steps": steps,
        "reflexes_tripped_by_the_arm": server.robot.reflexes - tripped,
        "episodes_ended_by_a_stall_old_rule": old_episodes,
        "episodes_ended_by_a_stall_now": new_episodes,
        "still_steps_old_rule": old_steps,
        "still_steps_now_(single,_not_yet_a_stall)": new_steps,
        "insertions": successes,
    }


def reflex_recovery(task: TaskConfig, server: SimRobotServer, mode: str) -> dict[str, Any]:
    t = replace(task, real=replace(task.real_section, clear_errors=mode, on_reflex="continue"))
    env = FrankaEnv(t, robot_url=server.url)
    sideways = np.array([0.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    try:
        env.reset(options={"pose_offset": (0.0, 0.04, 0.0)})
        env.step(sideways)
        RobotClient(server.url).post("_faults", {"reflex": 1})
        xyz = [env.raw_state["pose"][:3].copy()]
        reported = None
        for k in range(1, 6):
            info = env.step(sideways)[4]
            xyz.append(env.raw_state["pose"][:3].copy())
            if info.get("reflex") and reported is None:
                reported = k
    finally:
        env.close()
    moved = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    first_move = next((k + 1 for k in range(1, len(moved)) if moved[k] > 1e-3), None)
    return {"mode": mode, "reported_at_step": reported, "moves_again_at_step": first_move}


def hold_still(task: TaskConfig, window: tuple[float, float] | None, steps: int) -> float:
    t = task if window is None else replace(task, real=replace(task.real_section, hold_window=window))
    s = SimRobotServer(port=free_port()).start()
    env = FrankaEnv(t, robot_url=s.url)
    try:
        RobotClient(s.url).post("_faults", {"payload_kg": 1.0})
        env.reset(options={"eval_pose": 2})
        z0 = env.raw_state["pose"][2]
        for _ in range(steps):
            env.step(np.zeros(6))
        return float(1e3 * (z0 - env.raw_state["pose"][2]))
    finally:
        env.close()
        s.close()


def jammed_reset(task: TaskConfig, server: SimRobotServer) -> dict[str, Any]:
    env = FrankaEnv(task, robot_url=server.url)
    try:
        obs, _ = env.reset(options={"eval_pose": 0})
        policy = ScriptedInserter(task, Skill.level(1.0), seed=0)
        policy.reset()
        for _ in range(60):
            obs, _, terminated, _, _ = env.step(policy(obs))
            if terminated:
                break
        RobotClient(server.url).post("_faults", {"jam": 1})
        t0 = time.perf_counter()
        try:
            env.reset(options={"eval_pose": 3})
            outcome = "reset reported success"
        except ResetJammed as e:
            outcome = f"ResetJammed: {e}"
        return {"outcome": outcome, "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        RobotClient(server.url).post("_faults", {"jam": 0})
        env.close()


def reset_cost(task: TaskConfig, server: SimRobotServer, n: int = 5) -> dict[str, float]:
    env = FrankaEnv(task, robot_url=server.url)
    secs = []
    try:
        env.reset(options={"eval_pose": 0})
        for i in range(n):
            env.reset(options={"eval_pose": 4 * i + 1})
            secs.append(env.last_reset["seconds"])
    finally:
        env.close()
    return {"median_s": round(float(np.median(secs)), 2), "max_s": round(float(np.max(secs)), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=12)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    task = load_task("peg_insertion")
    server = SimRobotServer(port=free_port(), joint_reset_s=0.5).start()
    out: dict[str, Any] = {}
    try:
        for mode in ("every_step", "on_stall"):
            t = replace(task, real=replace(task.real_section, clear_errors=mode))
            out[f"rollouts_{mode}"] = rollouts(t, server, args.episodes)
            print(json.dumps({mode: out[f"rollouts_{mode}"]}), flush=True)
            out[f"reflex_{mode}"] = reflex_recovery(task, server, mode)
            print(json.dumps(out[f"reflex_{mode}"]), flush=True)
        out["jam"] = jammed_reset(task, server)
        print(json.dumps({"jam": out["jam"]}), flush=True)
        out["reset"] = reset_cost(task, server)
        print(json.dumps({"reset": out["reset"]}), flush=True)
    finally:
        server.close()
    for label, window, steps in (
        ("hold_last_command_100_steps_mm", None, 100),
        ("hold_measured_pose_10_steps_mm", (1e-6, 1e-6), 10),
    ):
        out[label] = round(hold_still(task, window, steps), 2)
        print(json.dumps({label: out[label]}), flush=True)


if __name__ == "__main__":
    main()
