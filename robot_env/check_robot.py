"""Bring-up check for a real robot: run it first, every day, before the actor.

``launch/check_robot.sh --robot-url http://ROBOT:5000 [--cameras realsense|server] [--task T]``
prints a checklist, one PASS/FAIL line per item, and exits non-zero on any failure:
1. the robot server answers ``/getstate`` within the control period;
2. the state is sane (finite, a unit quaternion, modest force and velocity: an arm at rest);
3. the tool is inside the task's safety box;
4. the gripper reading fits the configured server flavour (and, for a task that holds its
   object, reads closed after ``/close_gripper``);
5. each camera delivers fresh frames at its rate;
6. a gentle test move: up a little and back, in small steps under the reset compliance; the arm
   must follow. Skipped when an earlier check failed, so nothing moves on a doubtful setup.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robot_env import geometry as geo
from robot_env.cameras import CameraError
from robot_env.gripper import GRIPPER_FLAVOURS, GripperUnits
from robot_env.make import CAMERA_SOURCES, camera_rig
from robot_env.reset_path import interpolate
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.task_config import TaskConfig, in_box, load_task
from shared import defaults

MAX_REST_FORCE_N = 60.0
MAX_REST_SPEED = 0.2  # m/s
TEST_MOVE_M = 0.01
FOLLOW_TOLERANCE_M = 0.004


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def check_server(client: RobotClient, period: float, calls: int = 20) -> Check:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.get_state()
        times.append(time.perf_counter() - t0)
    p50, worst = float(np.median(times)), max(times)
    return Check(
        "server answers",
        worst < period,
        f"/getstate p50 {1e3 * p50:.1f} ms, max {1e3 * worst:.1f} ms over {calls} calls (period {1e3 * period:.0f} ms)",
    )


def check_state(state: dict) -> Check:
    q = np.asarray(state["pose"][3:])
    force = float(np.linalg.norm(state["force"]))
    speed = float(np.linalg.norm(state["vel"][:3]))
    problems = []
    if abs(np.linalg.norm(q) - 1.0) > 1e-2:
        problems.append(f"quaternion norm {np.linalg.norm(q):.3f}")
    if force > MAX_REST_FORCE_N:
        problems.append(f"external force {force:.1f} N (is the arm touching something?)")
    if speed > MAX_REST_SPEED:
        problems.append(f"moving at {speed:.2f} m/s")
    return Check("state is sane", not problems, "; ".join(problems) or f"force {force:.1f} N, speed {speed:.3f} m/s")


def check_box(task: TaskConfig, state: dict) -> Check:
    pose6 = geo.pose7_to_pose6(state["pose"])
    low, high = np.asarray(task.safety_box.low), np.asarray(task.safety_box.high)
    inside = in_box(pose6, task.safety_box, tol=1e-3)
    where = ", ".join(f"{v:.3f}" for v in pose6[:3])
    detail = f"tool at ({where}) m; box x [{low[0]}, {high[0]}], y [{low[1]}, {high[1]}], z [{low[2]}, {high[2]}]"
    if not inside:
        detail += "; move it into the box by hand (or widen the box in the task file)"
    return Check("pose inside the safety box", inside, detail)


def check_gripper(client: RobotClient, task: TaskConfig) -> Check:
    units = client.gripper
    raw = client.get_gripper_raw()
    lo, hi = units.reading_range
    if not lo <= raw <= hi:
        return Check(
            "gripper reading",
            False,
            f"raw {raw!r} is outside what a {units.flavour} server reports "
            f"[{lo}, {hi}]: is --gripper right? ({', '.join(GRIPPER_FLAVOURS)})",
        )
    detail = f"{units.flavour}: raw {raw:.4g} = opening {units.opening(raw):.2f}"
    if task.gripper_closed:
        client.close_gripper()
        time.sleep(1.0)
        raw = client.get_gripper_raw()
        opening = units.opening(raw)
        if opening > 0.5:
            return Check(
                "gripper reading",
                False,
                f"after /close_gripper it reads raw {raw:.4g} = opening "
                f"{opening:.2f} (open): the server's units are not {units.flavour}'s",
            )
        detail += f"; closed on the object: raw {raw:.4g} = opening {opening:.2f}"
    return Check("gripper reading", True, detail)


def check_cameras(rig: object, names: tuple[str, ...], fps: dict[str, float], seconds: float = 2.0) -> list[Check]:
    out = []
    cams = getattr(rig, "cameras", {})
    start = {n: cams[n].frames_read for n in names}
    time.sleep(seconds)
    for n in names:
        try:
            frame = cams[n].frame()
        except CameraError as e:
            out.append(Check(f"camera {n}", False, str(e)))
            continue
        rate = (cams[n].frames_read - start[n]) / seconds
        ok = rate >= 0.8 * fps[n]
        out.append(Check(f"camera {n}", ok, f"{rate:.1f} fresh frames/s (configured {fps[n]:g}), {frame.shape}"))
    return out


def check_test_move(client: RobotClient, task: TaskConfig) -> Check:
    real = task.real_section
    start = geo.pose7_to_pose6(client.get_state()["pose"])
    up = start.copy()
    up[2] = min(start[2] + TEST_MOVE_M, task.safety_box.high[2])
    if up[2] - start[2] < 0.5 * TEST_MOVE_M:
        up[2] = max(start[2] - TEST_MOVE_M, task.safety_box.low[2])  # at the top of the box: test downwards
    client.update_params(real.limited_reset_compliance)
    try:
        reached = []
        for leg_start, leg_goal in ((start, up), (up, start)):
            for p in interpolate(leg_start, leg_goal, real.reset_max_step, real.reset_max_rot_step):
                client.clear_error()
                client.command_pose(geo.pose6_to_pose7(p))
                time.sleep(1.0 / task.control_hz)
            time.sleep(real.reset_settle_s)
            reached.append(geo.pose7_to_pose6(client.get_state()["pose"]))
    finally:
        client.update_params(real.compliance)
    err_up = float(np.linalg.norm(reached[0][:3] - up[:3]))
    err_back = float(np.linalg.norm(reached[1][:3] - start[:3]))
    ok = err_up < FOLLOW_TOLERANCE_M and err_back < FOLLOW_TOLERANCE_M
    return Check(
        "test move and back",
        ok,
        f"{1e3 * abs(up[2] - start[2]):.0f} mm and back; off by {1e3 * err_up:.1f} mm there, {1e3 * err_back:.1f} mm back"
        + ("" if ok else " (the arm does not follow: a reflex, the controller stopped, or a collision?)"),
    )


def run_checks(client: RobotClient, task: TaskConfig, rig: object | None, report: Callable[[Check], None]) -> bool:
    """Every check in order; ``report`` gets each result as it comes. True when all passed."""
    results: list[Check] = []

    def add(c: Check) -> None:
        results.append(c)
        report(c)

    try:
        client.clear_error()
        add(check_server(client, 1.0 / task.control_hz))
        state = client.get_state()
    except RobotServerError as e:
        add(Check("server answers", False, str(e)))
        return False
    add(check_state(state))
    add(check_box(task, state))
    try:
        add(check_gripper(client, task))
    except RobotServerError as e:
        add(Check("gripper reading", False, str(e)))
    if rig is not None:
        real = task.real_section
        names = tuple(getattr(rig, "cameras", {}))
        fps = {c.name: float(c.fps) for c in real.cameras}
        for c in check_cameras(rig, names, {n: fps.get(n, 30.0) for n in names}):
            add(c)
    if all(c.ok for c in results):
        try:
            add(check_test_move(client, task))
        except RobotServerError as e:
            add(Check("test move and back", False, str(e)))
    else:
        add(Check("test move and back", False, "not run: fix the failures above first (nothing was moved)"))
    return all(c.ok for c in results)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robot-url", required=True, help="the robot server, e.g. http://127.0.0.1:5000")
    p.add_argument("--task", default=defaults.TASK, help="task name or task file")
    p.add_argument("--gripper", choices=GRIPPER_FLAVOURS, help="the server's gripper units (default: the task file's)")
    p.add_argument(
        "--cameras",
        choices=(*CAMERA_SOURCES, "none"),
        default="realsense",
        help="check the wrist cameras: RealSense (serials in the task file), the simulated server's, or none",
    )
    args = p.parse_args(argv)
    task = load_task(args.task)
    real = task.real_section
    client = RobotClient(args.robot_url, gripper=GripperUnits(args.gripper or real.gripper))
    print(
        f"check_robot: {args.robot_url}, task {task.name}, gripper {client.gripper.flavour}, cameras {args.cameras}",
        flush=True,
    )
    rig = None
    ok = True
    try:
        if args.cameras != "none":
            try:
                rig = camera_rig(args.cameras, args.task, args.robot_url, 64)
            except (CameraError, ValueError) as e:
                print(Check("cameras", False, str(e)).line(), flush=True)
                ok = False
        ok = run_checks(client, task, rig, lambda c: print(c.line(), flush=True)) and ok
    finally:
        if rig is not None:
            rig.close()
    print("all checks passed" if ok else "some checks FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
