"""Bring-up check for a real robot: run it first, every day, before the actor.

``launch/check_robot.sh --robot-url http://ROBOT:5000 [--cameras realsense|server] [--task T]``
prints a checklist, one PASS/FAIL line per item, and exits non-zero on any failure:
1. the robot server answers ``/getstate`` within the control period;
2. the state is sane (finite, a unit quaternion, modest force and velocity: an arm at rest);
3. the tool is inside the task's safety box;
4. no unmodelled load: at rest, touching nothing, the external force is small (a payload Desk
   does not know of reads as its weight, and sags the arm under the impedance controller);
5. the gripper reading fits the configured server flavour and, for a task that holds its object,
   closes on ``/close_gripper``; one that does not move at all is a Robotiq that was never
   activated (``--activate-gripper`` activates it: it opens, so hold the object);
6. each camera opens with its exposure in the sensor's range and delivers fresh frames;
7. a gentle test move: up a little and back, in small steps under the reset compliance; the arm
   must follow;
8. the force sign: the tool goes down slowly beside the target (``real.touch_offset``) until it
   touches the board, and pressing down must read as libfranka's sign (what the robot applies to
   the environment is positive). ``--no-touch`` skips it.
Moves (7, 8) run only when every earlier check passed, so nothing moves on a doubtful setup.
``--pose`` prints the tool's pose as the task file writes poses (for ``target_pose``) and exits.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robot_env import geometry as geo
from robot_env.cameras import CameraError
from robot_env.contract import clip_to_box
from robot_env.gripper import GRIPPER_FLAVOURS, GripperUnits
from robot_env.make import CAMERA_SOURCES, camera_rig
from robot_env.reset_path import interpolate
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.task_config import TaskConfig, in_box, load_task
from shared import defaults
from shared.command_line import option, parse_command

MAX_REST_FORCE_N = 60.0
MAX_REST_SPEED = 0.2  # m/s
# A Franka's external force estimate at rest stays within a few newtons; more, with nothing
# touching, is mass the robot's model does not know (0.4 kg reads as 4 N).
MAX_UNMODELLED_N = 4.0
GRAVITY = 9.81
TEST_MOVE_M = 0.01
FOLLOW_TOLERANCE_M = 0.004
TOUCH_STEP_M = 0.002  # the descent onto the board, per command
TOUCH_FORCE_N = 3.0  # what counts as touching
GRIPPER_OPEN = 0.9  # an opening above this reads open


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


def check_load(task: TaskConfig, state: dict) -> Check:
    """At rest and touching nothing, the external force is what the robot's model misses: a
    payload Desk does not know of (the robot holds its weight up)."""
    force_base = geo.quat_to_mat(np.asarray(state["pose"][3:])) @ np.asarray(state["force"])
    f = float(np.linalg.norm(force_base))
    if f <= MAX_UNMODELLED_N:
        return Check("no unmodelled load", True, f"external force at rest {f:.1f} N")
    stiffness = float(task.real_section.compliance.get("translational_stiffness", 0.0))
    sag = f"; it sags the arm about {1e3 * f / stiffness:.0f} mm under the episode's compliance" if stiffness else ""
    return Check(
        "no unmodelled load",
        False,
        f"the arm reads {f:.1f} N of external force at rest (about {f / GRAVITY:.2f} kg) with nothing touching: an "
        f"unmodelled payload{sag}. Enter the gripper and object in Desk (Settings > End effector: mass, centre of "
        "mass), or set them with HIL-SERL's /set_load; or the arm is touching something",
    )


def check_gripper(client: RobotClient, task: TaskConfig, activate: bool) -> Check:
    real = task.real_section
    units = client.gripper
    if activate:
        client.activate_gripper()
        time.sleep(real.gripper_activation_s)
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
        time.sleep(real.gripper_settle_s)
        after = client.get_gripper_raw()
        opening = units.opening(after)
        if opening > GRIPPER_OPEN and after == raw and units.flavour != "serl_franka":
            return Check(
                "gripper reading",
                False,
                f"the gripper did not move on /close_gripper (raw {raw:.4g} before and after, open): a Robotiq "
                "takes no command until it is activated once per robot-server start. Hold the object, then run "
                "this check with --activate-gripper (or POST /activate_gripper): it opens the gripper",
            )
        if opening > GRIPPER_OPEN:
            return Check(
                "gripper reading",
                False,
                f"after /close_gripper it reads raw {after:.4g} = opening "
                f"{opening:.2f} (open): the server's units are not {units.flavour}'s",
            )
        detail += f"; closed on the object: raw {after:.4g} = opening {opening:.2f}"
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


def _go(client: RobotClient, task: TaskConfig, waypoints: list[np.ndarray]) -> None:
    for p in waypoints:
        client.clear_error()
        client.command_pose(geo.pose6_to_pose7(p))
        time.sleep(1.0 / task.control_hz)


def check_force_sign(client: RobotClient, task: TaskConfig) -> Check:
    """Touch the board beside the target, slowly, and read which way the press points: libfranka's
    ``K_F_ext_hat_K`` counts what the robot applies to the environment as positive, so pressing
    down reads as a downward force in the base frame (a server on the other convention reads up)."""
    real = task.real_section
    step, rot = real.reset_max_step, real.reset_max_rot_step
    start = geo.pose7_to_pose6(client.get_state()["pose"])
    above = np.asarray(task.target_pose, np.float64).copy()
    above[:2] += np.asarray(real.touch_offset)
    above[2] = task.target_pose[2] + real.reset_clearance
    above = clip_to_box(above, task.safety_box)
    lifted = start.copy()
    lifted[2] = max(start[2], above[2])
    client.update_params(real.limited_reset_compliance)
    touched: dict | None = None
    try:
        _go(client, task, interpolate(start, lifted, step, rot) + interpolate(lifted, above, step, rot))
        time.sleep(real.reset_settle_s)
        p = above.copy()
        while p[2] > task.safety_box.low[2] + 1e-9:
            p[2] = max(p[2] - TOUCH_STEP_M, task.safety_box.low[2])
            _go(client, task, [p])
            state = client.get_state()
            if float(np.linalg.norm(state["force"])) > TOUCH_FORCE_N:
                touched = state
                break
        here = geo.pose7_to_pose6(client.get_state()["pose"])
        _go(client, task, interpolate(here, above, step, rot))
        _go(client, task, interpolate(above, lifted, step, rot) + interpolate(lifted, start, step, rot))
        time.sleep(real.reset_settle_s)
    finally:
        client.update_params(real.compliance)
    if touched is None:
        return Check(
            "force sign",
            False,
            f"went down to the safety box's floor at {np.round(above[:2], 3).tolist()} and touched nothing: is the "
            "board under real.touch_offset from the target? (--no-touch skips this check)",
        )
    down = float((geo.quat_to_mat(np.asarray(touched["pose"][3:])) @ np.asarray(touched["force"]))[2])
    if down < -TOUCH_FORCE_N / 2:
        return Check(
            "force sign", True, f"pressing on the board reads {down:.1f} N along the base's z (down: libfranka's)"
        )
    return Check(
        "force sign",
        False,
        f"pressing down on the board reads {down:+.1f} N along the base's z: the server reports the environment's "
        "push on the robot, not libfranka's K_F_ext_hat_K (what the robot applies is positive). Policies trained in "
        "our simulation read the arm's sign: fix the server (force = K_F_ext_hat_K[:3], as SERL's franka_server.py)",
    )


def run_checks(
    client: RobotClient,
    task: TaskConfig,
    rig: object | None,
    report: Callable[[Check], None],
    activate_gripper: bool = False,
    touch: bool = True,
    earlier: list[Check] | None = None,
) -> bool:
    """Every check in order; ``report`` gets each result as it comes. True when all passed.
    ``earlier``: checks already made and reported (the cameras' opening), which gate the moves."""
    results: list[Check] = list(earlier or [])

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
    add(check_load(task, state))
    try:
        add(check_gripper(client, task, activate_gripper))
    except RobotServerError as e:
        add(Check("gripper reading", False, str(e)))
    if rig is not None:
        real = task.real_section
        names = tuple(getattr(rig, "cameras", {}))
        fps = {c.name: float(c.fps) for c in real.cameras}
        for c in check_cameras(rig, names, {n: fps.get(n, 30.0) for n in names}):
            add(c)
    moves = [("test move and back", lambda: check_test_move(client, task))]
    if touch:
        moves.append(("force sign", lambda: check_force_sign(client, task)))
    for name, run in moves:
        if not all(c.ok for c in results):
            add(Check(name, False, "not run: fix the failures above first (nothing was moved)"))
            continue
        try:
            add(run())
        except RobotServerError as e:
            add(Check(name, False, str(e)))
    return all(c.ok for c in results)


def current_pose6(client: RobotClient) -> np.ndarray:
    """The tool's pose as ``[x, y, z, roll, pitch, yaw]`` (extrinsic xyz Euler, the task file's
    convention): HIL-SERL's ``/getpos_euler`` where the server has it, else from ``/getstate``'s
    quaternion (SERL's server)."""
    try:
        return client.get_pose_euler()
    except RobotServerError:
        return geo.pose7_to_pose6(client.get_state()["pose"])


@dataclass(frozen=True)
class CheckRobotConfig:
    """What ``wsrl-check-robot`` checks (its ``check_robot:`` section)."""

    robot_url: str | None = option(None, "the robot server, e.g. http://127.0.0.1:5000 (required)")
    task: str = option(defaults.TASK, "task name or task file")
    gripper: str | None = option(
        None, "the server's gripper units (default: the task file's)", choices=GRIPPER_FLAVOURS
    )
    cameras: str = option(
        "realsense",
        "check the wrist cameras: RealSense (serials in the task file), the simulated server's, or none",
        choices=(*CAMERA_SOURCES, "none"),
    )
    activate_gripper: bool = option(
        False, "activate the Robotiq first (needed once per robot-server start; it opens the gripper: hold the object)"
    )
    touch: bool = option(True, "the force-sign check (it touches the board; --no-touch skips it)")
    pose: bool = option(
        False, "print the tool's pose as the task file writes poses ([x, y, z, roll, pitch, yaw]) and exit"
    )


def main(argv: list[str] | None = None) -> None:
    p, args = parse_command(CheckRobotConfig, "check_robot", argv, __doc__)
    if args.robot_url is None:
        p.error("--robot-url is required (or a config file's check_robot.robot_url)")
    task = load_task(args.task)
    real = task.real_section
    client = RobotClient(args.robot_url, gripper=GripperUnits(args.gripper or real.gripper))
    if args.pose:
        print(json.dumps([round(float(v), 5) for v in current_pose6(client)]))
        return
    print(
        f"check_robot: {args.robot_url}, task {task.name}, gripper {client.gripper.flavour}, cameras {args.cameras}",
        flush=True,
    )
    rig = None
    earlier: list[Check] = []
    try:
        if args.cameras != "none":
            try:
                rig = camera_rig(args.cameras, args.task, args.robot_url, 64)
            except (CameraError, ValueError) as e:
                earlier.append(Check("cameras", False, str(e)))
                print(earlier[-1].line(), flush=True)
        ok = run_checks(
            client,
            task,
            rig,
            lambda c: print(c.line(), flush=True),
            activate_gripper=args.activate_gripper,
            touch=args.touch,
            earlier=earlier,
        )
    finally:
        if rig is not None:
            rig.close()
    print("all checks passed" if ok else "some checks FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
