"""A stand-in for the SERL Franka robot server, backed by the MuJoCo peg-insertion simulation.

``launch/run_sim_robot_server.sh --port 5000`` serves the endpoints listed in docs/architecture.md ("The robot server")
at ``http://127.0.0.1:PORT/`` (all POST, same payloads). Physics runs in real time: a single
simulation thread owns MuJoCo (models and GL contexts are not thread-safe), steps it to keep up
with the wall clock, and executes the HTTP threads' requests between steps.

It behaves like the real servers and the real arm where that matters for safety and for keeping a
session going (each behaviour cites its source):
- **The controller** (``robot_env/sim/franka_controller.py``): the 0.2 s target filter, state
  published at 30 Hz, reflexes above franka_ros's 20 N / 25 Nm collision thresholds (in resets
  too) after which ``/pose`` is answered "Moved" but lost until ``/clearerr``, and the external
  wrench with libfranka's sign. ``controller=None`` gives the ideal controller instead.
- **A board the peg can jam in** (``/_faults {"jam": 1}``: a peg that goes into the hole is
  wedged there: it cannot come back up, whatever the arm pulls with, until the jam is cleared) and **an unmodelled payload** (``payload_kg``; HIL-SERL's
  ``/set_load`` compensates it, as libfranka's ``setLoad`` does).
- **The Robotiq** (SERL's ``robotiq_gripper_server.py``): it ignores every command until
  ``/activate_gripper`` has been called since the server started (the server's command message
  starts with ``rACT = 0``); such a command even resets a gripper that was active, which then
  lets go (``gripper_hw_active=True`` models a server restarted under an active gripper).
  Activation opens it. The Franka hand (``serl_franka``) needs no activation.
- **Joint reset** blocks while the arm moves to the home pose (``home_pose6``: where SERL's
  home joints put a Panda's hand, far above a typical task box) over ``joint_reset_s``.
- **Gripper units** of each server flavour (``robot_env/gripper.py``): ``/getstate`` reports
  ``gripper_pos`` in that flavour's units, and ``/move_gripper`` takes ``int()`` of what it is sent.
- **Errors look like Flask's**: an unhandled exception is an HTML 500 page; for its first
  ``startup_s`` seconds the server has no robot state yet and answers every call so.
- HIL-SERL's ``/getpos_euler`` (the pose as xyz and extrinsic xyz Euler angles, the task file's
  convention).

Where it cannot be the real server, it says so instead of pretending:
- no arm joints: ``/getstate`` has no ``q``, ``dq`` or ``jacobian``;
- the hand holds the peg: gripper commands change the reported opening (never below the
  peg's width) but the peg stays in the hand;
- a side channel ``/cameras`` (``{"size": N}``) returns the wrist cameras as an ``.npz``;
- ``/_faults`` sets injected faults (``latency_s``, ``error_rate``, ``drop_rate``,
  ``html_errors``, ``reflex``, ``jam``, ``payload_kg``, ``force_sign``: -1 serves the wrench with
  the opposite sign, as a server built on another convention would); ``--latency``,
  ``--error-rate``, ``--drop-rate`` and ``--payload-kg`` set them at start.
- ``/_log`` returns what was commanded: each ``/pose`` with the measured pose before it and
  whether a reflex ignored it, and the measured pose at each joint reset.

Over 400 lines on purpose: one HTTP server with the real robot server's routes and their replies
in one place to compare with SERL's ``franka_server.py``; the scene, the arm and the controller's
model are already in ``robot_env/sim/``.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from robot_env import contract
from robot_env import geometry as geo
from robot_env.gripper import GRIPPER_FLAVOURS, GripperUnits
from robot_env.sim.franka_controller import ControllerModel
from robot_env.task_config import TaskConfig, load_task
from shared import defaults
from shared.command_line import option, parse_command

log = logging.getLogger("wsrl.sim_server")

MAX_BODY = 1 << 16
FRANKA = ControllerModel()  # the real controller, as its sources describe it
# Where SERL's home joints [0, 0, 0, -1.9, 0, 2, 0] put a Panda's hand (forward kinematics),
# pointing down: far above a typical task's safety box.
PANDA_HOME_POSE6 = (0.581, 0.0, 0.402, np.pi, 0.0, 0.0)
# What Flask answers for an unhandled exception (the real server's state before ROS delivers one,
# a ROS call that raises, ...).
FLASK_500 = (
    b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was unable to complete "
    b"your request. Either the server is overloaded or there is an error in the application.</p>\n"
)


@dataclass
class Faults:
    latency_s: float = 0.0  # added before every answer
    error_rate: float = 0.0  # fraction of calls answered with HTTP 500
    drop_rate: float = 0.0  # fraction of calls whose connection is closed without an answer
    html_errors: float = 0.0  # 1: injected 500s are Flask's HTML page (else plain text)
    reflex: float = 0.0  # 1: the next /pose triggers a reflex (consumed by it)
    jam: float = 0.0  # 1: a peg in the hole is wedged there until this is set back to 0
    payload_kg: float = 0.0  # mass in the hand that the robot's model does not know of
    force_sign: float = 1.0  # -1: the wrench is served with the opposite sign (another convention)


class BadRequest(ValueError):
    pass


class SimRobotServer:
    def __init__(
        self,
        task: TaskConfig | str = defaults.TASK,
        host: str = "127.0.0.1",
        port: int = 5000,
        gripper: str | None = None,
        joint_reset_s: float = 1.0,
        faults: Faults | None = None,
        seed: int = 0,
        home_pose6: tuple[float, ...] = PANDA_HOME_POSE6,
        startup_s: float = 0.0,
        controller: ControllerModel | None = FRANKA,
        gripper_hw_active: bool = False,
    ) -> None:
        """``gripper``: the flavour of units to speak (default: the task file's). ``controller``:
        the real controller's model (None: the ideal one). ``gripper_hw_active``: the Robotiq was
        active before this server started (a restarted server)."""
        from robot_env.sim.robot import SimRobot

        self.task = load_task(task) if isinstance(task, str) else task
        real = self.task.real
        self.gripper = GripperUnits(gripper or (real.gripper if real is not None else "normalised"))
        self.needs_activation = self.gripper.flavour != "serl_franka"  # a Robotiq; the Franka hand does not
        self.joint_reset_s = joint_reset_s
        self.home_pose6 = np.asarray(home_pose6, np.float64)
        self.startup_s = startup_s
        self.faults = faults or Faults()
        self._rng = random.Random(seed)
        self.robot = SimRobot(self.task, controller)
        self.robot.teleport(geo.pose6_to_pose7(contract.reset_pose6(self.task, np.zeros(3))))
        self.robot.payload_kg = self.faults.payload_kg
        self.held_opening = float(self.robot.get_state()["gripper_pos"])  # the peg's width
        # A Robotiq reads open until it is activated and closed; the Franka hand holds the peg.
        self.gripper_activated = False  # /activate_gripper called since this server started
        self.gripper_hw_active = gripper_hw_active or not self.needs_activation
        self.gripper_opening = 1.0 if self.needs_activation else self.held_opening
        self.pose_log: list[dict[str, Any]] = []  # every /pose: command, measured pose before, ignored
        self.joint_resets: list[list[float]] = []  # the measured pose at each /jointreset
        self._started = 0.0
        self.impedance_on = True
        self.load: dict[str, Any] | None = None
        # the controller's compliance parameters; an /update_param changes only those it names
        self.compliance: dict[str, float] = dict(real.compliance) if real is not None else {}
        if self.compliance:  # as if the task's compliance had been set once
            self.robot.set_compliance(**self._compliance(self.compliance))
        self.gripper_commands_ignored = 0
        self.calls: dict[str, int] = {}
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._sim = threading.Thread(target=self._sim_loop, name="sim", daemon=True)
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self._http = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SimRobotServer:
        self._started = time.monotonic()
        self._sim.start()
        self._http.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._sim.is_alive():
            self.in_sim(lambda r: r.close())  # GL contexts belong to the thread that made them
        self._stop.set()
        self._sim.join(timeout=5)

    # -------------------------------------------------------------- the simulation thread

    def in_sim(self, fn: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        """Run ``fn(robot)`` on the simulation thread and return its result."""
        fut: Future = Future()
        self._jobs.put((fn, fut))
        return fut.result(timeout)

    def _sim_loop(self) -> None:
        dt = self.robot.model.opt.timestep
        t0, sim_t = time.monotonic(), 0.0
        while not self._stop.is_set():
            while True:
                try:
                    fn, fut = self._jobs.get_nowait()
                except queue.Empty:
                    break
                try:
                    fut.set_result(fn(self.robot))
                except Exception as e:
                    fut.set_exception(e)
            behind = time.monotonic() - t0 - sim_t
            n = int(behind / dt)
            if n > 0:
                n = min(n, 250)  # at most 0.5 s of physics per turn, so requests stay served
                self.robot.advance(n * dt)
                sim_t += n * dt
            if time.monotonic() - t0 - sim_t > 1.0:  # fell far behind (a slow machine): resync
                sim_t = time.monotonic() - t0
            time.sleep(0.0005)

    # ------------------------------------------------------------------------- endpoints

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
        """(status, body, content type) for one request; faults are applied by the handler."""
        self.calls[path] = self.calls.get(path, 0) + 1
        text = "text/plain"
        if path == "getstate":
            state = self.in_sim(lambda r: r.get_state())
            out = {k: np.asarray(v).tolist() for k, v in state.items() if k != "gripper_pos"}
            for k in ("force", "torque"):
                out[k] = (self.faults.force_sign * np.asarray(state[k])).tolist()
            out["gripper_pos"] = self.gripper.reading(self.gripper_opening)
            return 200, json.dumps(out).encode(), "application/json"
        if path == "getpos_euler":  # HIL-SERL's franka_server.py: xyz + scipy's "xyz" (extrinsic) Euler
            pose = self.in_sim(lambda r: r.get_state()["pose"])
            return 200, json.dumps({"pose": geo.pose7_to_pose6(pose).tolist()}).encode(), "application/json"
        if path == "pose":
            arr = np.asarray(body.get("arr", []), np.float64)
            if arr.shape != (7,) or not np.all(np.isfinite(arr)):
                raise BadRequest(f"'arr' must be 7 finite numbers (x y z qx qy qz qw), got {body.get('arr')!r}")
            here = self.in_sim(lambda r: r.get_state()["pose"])
            if self.faults.reflex and not self.robot.in_reflex:
                self.faults.reflex = 0.0
                self.in_sim(lambda r: r.trigger_reflex())  # the arm stops where it is
                log.warning("sim robot server: injected reflex (pose commands lost until /clearerr)")
            followed = self.impedance_on and bool(self.in_sim(lambda r: r.command_pose(arr)))
            self.pose_log.append(
                {"t": time.monotonic(), "cmd": arr.tolist(), "here": np.asarray(here).tolist(), "ignored": not followed}
            )
            return 200, b"Moved", text  # the real server answers so whatever the arm does
        if path == "clearerr":
            self.in_sim(lambda r: r.clear_error())
            return 200, b"Clear", text
        if path in ("startimp", "stopimp"):
            self.impedance_on = path == "startimp"
            return 200, b"Started impedance" if self.impedance_on else b"Stopped impedance", text
        if path == "jointreset":
            self._joint_reset()
            return 200, b"Reset Joint", text
        if path == "update_param":
            self._check_compliance_keys(body)
            self.compliance.update({k: float(v) for k, v in body.items()})  # dynamic_reconfigure keeps the rest
            settings = self._compliance(self.compliance)
            self.in_sim(lambda r: r.set_compliance(**settings))
            return 200, b"Updated compliance parameters", text
        if path in ("activate_gripper", "reset_gripper"):
            if self.needs_activation:  # the activation message has rPR = 0: the Robotiq opens
                self.gripper_activated = self.gripper_hw_active = True
                self.gripper_opening = 1.0
            return 200, b"Activated" if path == "activate_gripper" else b"Reset", text
        if path == "close_gripper":
            if self._gripper_listens():
                self.gripper_opening = self.held_opening
            return 200, b"Closed", text
        if path == "open_gripper":
            if self._gripper_listens():
                self.gripper_opening = 1.0
            return 200, b"Opened", text
        if path == "move_gripper":
            n = int(np.clip(int(body["gripper_pos"]), 0, 255))  # the real servers take int() too
            if self._gripper_listens():
                self.gripper_opening = max(self.gripper.commanded_opening(n), self.held_opening)
            return 200, b"Moved Gripper", text
        if path == "get_gripper":
            return 200, json.dumps({"gripper": self.gripper.reading(self.gripper_opening)}).encode(), "application/json"
        if path == "set_load":
            if not {"mass", "F_x_center_load", "load_inertia"} <= set(body):
                raise BadRequest("set_load needs mass, F_x_center_load and load_inertia")
            self.load = body
            mass = float(body["mass"])
            self.in_sim(lambda r: setattr(r, "modelled_load_kg", mass))  # the controller compensates it
            return 200, b"Set load", text
        if path == "cameras":
            size = int(body.get("size", contract.DEFAULT_IMAGE_SIZE))
            if not 8 <= size <= 512:
                raise BadRequest("size must be in [8, 512]")
            frames = self.in_sim(lambda r: r.render(contract.IMAGE_KEYS, size))
            buf = io.BytesIO()
            np.savez(buf, **frames)
            return 200, buf.getvalue(), "application/octet-stream"
        if path == "_log":
            return (
                200,
                json.dumps({"poses": self.pose_log, "joint_resets": self.joint_resets}).encode(),
                "application/json",
            )
        if path == "_faults":
            unknown = set(body) - set(asdict(self.faults))
            if unknown:
                raise BadRequest(f"unknown fault settings {sorted(unknown)}")
            for k, v in body.items():
                setattr(self.faults, k, float(v))
            jam, payload = self.faults.jam, self.faults.payload_kg

            def apply(r: Any) -> None:
                r.jam, r.payload_kg = bool(jam), payload

            self.in_sim(apply)
            return 200, json.dumps(asdict(self.faults)).encode(), "application/json"
        return 404, f"no endpoint /{path}".encode(), text

    @property
    def in_reflex(self) -> bool:
        return bool(self.robot.in_reflex)

    def _gripper_listens(self) -> bool:
        """Whether a gripper command acts. Before activation SERL's Robotiq server sends its
        command message with ``rACT = 0``: ignored, and a reset of a gripper that was active."""
        if self.gripper_activated or not self.needs_activation:
            return True
        self.gripper_commands_ignored += 1
        if self.gripper_hw_active:
            self.gripper_hw_active = False
            self.gripper_opening = 1.0  # reset: it lets go
            log.warning("sim robot server: gripper command before /activate_gripper reset the active Robotiq")
        return False

    def _joint_reset(self) -> None:
        """Like the real server: clear errors, then block while a joint controller takes the arm
        home (here: the equilibrium glides there over ``joint_reset_s``), then impedance again."""
        here = np.asarray(self.in_sim(lambda r: r.get_state()["pose"]))
        self.joint_resets.append(here.tolist())
        self.in_sim(lambda r: r.clear_error())
        start6, home6 = geo.pose7_to_pose6(here), self.home_pose6
        n = max(1, int(self.joint_reset_s / 0.05))
        for k in range(1, n + 1):
            f = k / n
            p = np.concatenate(
                [start6[:3] + f * (home6[:3] - start6[:3]), start6[3:] + f * geo.wrap_angle(home6[3:] - start6[3:])]
            )
            self._command(geo.pose6_to_pose7(p))
            time.sleep(self.joint_reset_s / n)
        self.in_sim(lambda r: r.teleport(geo.pose6_to_pose7(home6)))  # a joint controller gets there exactly

    def _command(self, pose7: np.ndarray) -> None:
        self.in_sim(lambda r: r.command_pose(pose7))

    @staticmethod
    def _check_compliance_keys(body: dict[str, Any]) -> None:
        known = {
            "translational_stiffness",
            "translational_damping",
            "rotational_stiffness",
            "rotational_damping",
            "translational_Ki",
            "rotational_Ki",
        } | {
            f"{g}_clip_{a}" for g in ("translational", "rotational") for a in ("x", "y", "z", "neg_x", "neg_y", "neg_z")
        }
        unknown = set(body) - known
        if unknown:
            raise BadRequest(f"unknown compliance parameters {sorted(unknown)}")

    def _compliance(self, body: dict[str, Any]) -> dict[str, Any]:
        """SERL's impedance parameters -> the simulation's stiffness, damping and force limits
        (per base axis for translation; the largest rotational clip for rotation)."""
        cur = self.task.sim_section
        k = (
            float(body.get("translational_stiffness", cur.stiffness[0])),
            float(body.get("rotational_stiffness", cur.stiffness[1])),
        )
        d = (
            float(body.get("translational_damping", cur.damping[0])),
            float(body.get("rotational_damping", cur.damping[1])),
        )
        out: dict[str, Any] = {"stiffness": k, "damping": d}
        # serl_franka_controllers clips the pose error (measured - target, base frame) per axis to
        # [-clip_neg, clip]; the spring force -K * error is then within [-K * clip, K * clip_neg].
        clip = {n: float(v) for n, v in body.items() if "_clip_" in n}
        if any(n.startswith("translational_clip_") for n in clip):
            big = 1e3  # an axis without a clip: unbounded
            out["force_range"] = np.array(
                [
                    [
                        -k[0] * clip.get(f"translational_clip_{a}", big),
                        k[0] * clip.get(f"translational_clip_neg_{a}", big),
                    ]
                    for a in "xyz"
                ]
            )
        rot = [v for n, v in clip.items() if n.startswith("rotational_clip_")]
        if rot:  # the hinges are Euler angles, not base axes: one limit for all
            out["torque_limit"] = k[1] * max(rot)
        return out

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug(fmt, *args)

            def do_POST(self) -> None:
                path = self.path.strip("/").split("?")[0]
                f = server.faults
                if not path.startswith("_"):
                    if f.latency_s > 0:
                        time.sleep(f.latency_s)
                    if f.drop_rate > 0 and server._rng.random() < f.drop_rate:
                        self.close_connection = True
                        self.connection.close()  # a network drop: no status line at all
                        return
                    if f.error_rate > 0 and server._rng.random() < f.error_rate:
                        if f.html_errors:
                            return self._send(500, FLASK_500, "text/html; charset=utf-8")
                        return self._send(500, b"injected fault", "text/plain")
                    if time.monotonic() - server._started < server.startup_s and path != "cameras":
                        return self._send(500, FLASK_500, "text/html; charset=utf-8")  # no state from ROS yet
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    if n > MAX_BODY:
                        raise BadRequest(f"body of {n} bytes is too large")
                    raw = self.rfile.read(n) if n else b""
                    body = json.loads(raw) if raw.strip() else {}
                    if not isinstance(body, dict):
                        raise BadRequest("the body must be a JSON object")
                    status, out, ctype = server.handle(path, body)
                except (BadRequest, json.JSONDecodeError, ValueError, TypeError) as e:
                    status, out, ctype = 400, f"bad request: {e}".encode(), "text/plain"
                except Exception as e:  # keep serving whatever happens
                    log.exception("sim robot server: /%s failed", path)
                    status, out, ctype = 500, f"server error: {type(e).__name__}: {e}".encode(), "text/plain"
                self._send(status, out, ctype)

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@dataclass(frozen=True)
class SimRobotServerConfig:
    """What ``wsrl-sim-robot-server`` serves (its ``sim_robot_server:`` section)."""

    port: int = option(5000, "HTTP port")
    host: str = option("127.0.0.1", "address to listen on")
    task: str = option(defaults.TASK, "task name or task file")
    gripper: str | None = option(
        None,
        "the gripper units to speak, like that server flavour (default: the task file's)",
        choices=GRIPPER_FLAVOURS,
    )
    joint_reset_s: float = option(10.0, "how long /jointreset blocks (real: up to ~43 s)")
    startup_s: float = option(0.0, "answer 500 for this long after start (no state yet)")
    latency: float = option(0.0, "injected delay per call, s")
    error_rate: float = option(0.0, "fraction of calls answered with HTTP 500")
    drop_rate: float = option(0.0, "fraction of calls dropped without an answer")
    payload_kg: float = option(0.0, "mass in the hand the robot's model does not know")
    ideal_controller: bool = option(
        False, "the simulation env's ideal controller instead of the real one's model (no filter, no reflexes)"
    )


def main(argv: list[str] | None = None) -> None:
    _, args = parse_command(SimRobotServerConfig, "sim_robot_server", argv, __doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    server = SimRobotServer(
        args.task,
        args.host,
        args.port,
        args.gripper,
        args.joint_reset_s,
        Faults(args.latency, args.error_rate, args.drop_rate, payload_kg=args.payload_kg),
        startup_s=args.startup_s,
        controller=None if args.ideal_controller else FRANKA,
    ).start()
    print(f"simulated robot server for task '{server.task.name}' at {server.url}/ (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
