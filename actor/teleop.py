"""A person's hand on the robot: teleoperation devices that can take over from the policy.

Every device answers ``command(obs)`` with the action a person wants now, or ``None`` when nobody
is taking over; ``robot_env.intervention.InterventionWrapper`` puts that action in place of the
policy's. Three devices:

- ``SpaceMouse``: a 3Dconnexion SpaceMouse through ``pyspacemouse`` (6-D motion, two buttons),
  read on its own thread so a slow USB read never holds up the 10 Hz loop. Each axis has a dead
  zone and a scale into the action space; a person takes over while the puck is moved beyond the
  dead zone, or (``engage="button"``) only while the left button is held (then the puck's motion
  is the action, and holding the button with the puck at rest holds the robot still). By default
  the puck moves the tool in the robot's **base** frame, as SERL's does (``spacemouse_expert.py``
  reads ``[-y, x, z, -roll, -pitch, -yaw]``; ``relative_env.py`` turns that into the tool frame
  with the measured orientation): lifting the puck lifts the tool whatever its yaw. A device
  that stops sending events (a wireless puck out of range: ``pyspacemouse.read()`` keeps
  returning its last state) is released after ``stale_after``.
- ``KeyboardTeleop``: keys held on the robot PC's keyboard (pynput), for development and the
  simulation: w/s, a/d, r/f move along x, y, z; i/k, j/l, u/o turn about x, y, z.
- ``ScriptedHuman`` (in ``robot_env.scripted``, beside the inserter it drives, so the study's
  guided data collection uses it too): the simulation's stand-in for a person, so the whole
  intervention path runs unattended: the scripted inserter takes over while the peg is farther than a distance from the
  hole, and gives control back once it is within.

``pyspacemouse`` and ``pynput`` are imported only when such a device is made (the actor's
``--intervene``), never by the learner or the tests' default path. The SpaceMouse's reader is a
callable, so tests drive the device thread with a scripted event stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from actor.keyboard import key_name, pynput_keyboard
from robot_env import contract
from robot_env import geometry as geo
from robot_env.scripted import TAKEOVER_DISTANCE_M, ScriptedHuman
from shared.command_line import option

AXES = ("x", "y", "z", "roll", "pitch", "yaw")  # pyspacemouse's state fields, in action order


class TeleopError(RuntimeError):
    """The device cannot be used here; the message says why and what to do."""


@runtime_checkable
class TeleopDevice(Protocol):
    def command(self, obs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The person's action now (``ACTION_DIM`` numbers in [-1, 1]), or None: not taking over."""

    def reset(self) -> None:
        """A new episode starts."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SpaceMouseConfig:
    dead_zone: float = 0.1  # |axis| below this reads as 0 (the puck never rests at exactly 0)
    translation_scale: float = 1.0  # action units per unit of puck deflection
    rotation_scale: float = 1.0
    # Which puck axis drives each action axis, and its sign. The default is SERL's reading of the
    # puck in the robot's base frame (spacemouse_expert.py: [-y, x, z, -roll, -pitch, -yaw]) for an
    # operator facing the robot; see docs/robot.md to set these for another stance.
    axes: tuple[int, ...] = (1, 0, 2, 3, 4, 5)
    signs: tuple[float, ...] = (-1.0, 1.0, 1.0, -1.0, -1.0, -1.0)
    engage: str = "motion"  # "motion": beyond the dead zone or button 0 held; "button": button 0 held
    # "base": the mapped puck is a motion in the robot's base frame, turned into the tool frame with
    # the measured orientation; "tool": the mapped puck is the action itself
    frame: str = "base"
    stale_after: float = 0.5  # s without a new event: the device is treated as released
    poll_s: float = 0.005  # between reads: pyspacemouse.read() returns at once, so an unpaced loop spins a core

    def __post_init__(self) -> None:
        if not 0.0 <= self.dead_zone < 1.0:
            raise ValueError("dead_zone must be in [0, 1)")
        if sorted(self.axes) != list(range(6)) or len(self.signs) != 6:
            raise ValueError("axes must be a permutation of 0..5 and signs six numbers")
        if self.engage not in ("motion", "button"):
            raise ValueError("engage must be 'motion' or 'button'")
        if self.frame not in ("base", "tool"):
            raise ValueError("frame must be 'base' or 'tool'")


def base_to_tool(action: np.ndarray, obs: Mapping[str, np.ndarray], task: Any) -> np.ndarray:
    """A base-frame motion (translation, rotation) as the contract's tool-frame action, with the
    tool's orientation from the observation (``tcp_pose`` is in the task's target frame)."""
    if "state" not in obs:
        raise TeleopError("a base-frame SpaceMouse needs the observation's state (the tool's orientation)")
    euler = np.asarray(obs["state"][contract.state_slices()["tcp_pose"]][3:6], np.float64)
    _, target_rot = contract.target_frame(task)
    rot = target_rot @ geo.euler_to_mat(euler)  # the tool in the base frame
    a = np.asarray(action, np.float64)
    out = np.concatenate([rot.T @ a[:3], rot.T @ a[3:]])
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def spacemouse_action(motion: np.ndarray, cfg: SpaceMouseConfig) -> np.ndarray:
    """Puck deflections in [-1, 1] (x, y, z, roll, pitch, yaw) -> an action: the dead zone is
    taken out and the rest rescaled to start from 0, so motion is continuous at its edge."""
    m = np.clip(np.asarray(motion, np.float64), -1.0, 1.0)
    live = np.maximum(np.abs(m) - cfg.dead_zone, 0.0) / (1.0 - cfg.dead_zone)
    m = np.sign(m) * live
    a = m[list(cfg.axes)] * np.asarray(cfg.signs)
    a[:3] *= cfg.translation_scale
    a[3:] *= cfg.rotation_scale
    return np.clip(a, -1.0, 1.0).astype(np.float32)


class SpaceMouse:
    """The latest puck state, read by a thread; ``command`` maps it."""

    def __init__(
        self, cfg: SpaceMouseConfig = SpaceMouseConfig(), reader: Callable[[], Any] | None = None, task: Any = None
    ) -> None:
        """``task``: the task config, needed in the base frame (its target frame is the one the
        observation's ``tcp_pose`` is expressed in)."""
        if cfg.frame == "base" and task is None:
            raise ValueError("a base-frame SpaceMouse needs the task (to turn base motions into the tool frame)")
        self.cfg = cfg
        self.task = task
        self._last_event: Any = None
        self._read = reader if reader is not None else _open_spacemouse()
        self._lock = threading.Lock()
        self._motion = np.zeros(6)
        self._buttons: tuple[int, ...] = (0, 0)
        self._at = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spacemouse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                state = self._read()
            except Exception as e:  # an unplugged device: released, and said once
                self.error = f"{type(e).__name__}: {e}"
                time.sleep(0.05)
                continue
            if state is None:  # no new event
                time.sleep(0.002)
                continue
            # pyspacemouse.read() returns its cached state when no report came: only a new event
            # time (``t``) is news, so a silent device goes stale instead of holding its deflection
            stamp = getattr(state, "t", None)
            if stamp is not None and stamp == self._last_event:
                time.sleep(self.cfg.poll_s)
                continue
            self._last_event = stamp
            motion = np.array([float(getattr(state, k, 0.0)) for k in AXES])
            raw = getattr(state, "buttons", None) or getattr(state, "button", None) or ()
            buttons = tuple(int(b) for b in raw)
            with self._lock:
                self._motion = np.where(np.isfinite(motion), motion, 0.0)
                self._buttons, self._at = buttons, time.monotonic()
            time.sleep(self.cfg.poll_s)

    def state(self) -> tuple[np.ndarray, tuple[int, ...], float]:
        with self._lock:
            return self._motion.copy(), self._buttons, self._at

    def command(self, obs: Mapping[str, np.ndarray] | None = None) -> np.ndarray | None:
        motion, buttons, at = self.state()
        if time.monotonic() - at > self.cfg.stale_after:
            return None  # nothing heard lately: never act on an old reading
        action = spacemouse_action(motion, self.cfg)
        held = bool(buttons and buttons[0])
        moved = bool(np.any(action != 0.0))
        engaged = held if self.cfg.engage == "button" else held or moved
        if not engaged:
            return None
        if self.cfg.frame == "base":
            return base_to_tool(action, obs or {}, self.task)
        return action

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def _open_spacemouse() -> Callable[[], Any]:
    try:
        import pyspacemouse
    except ImportError as e:
        raise TeleopError(
            f"pyspacemouse is not installed ({e}); install the 'robot' profile (launch/install.sh robot)"
        ) from None
    try:
        ok = pyspacemouse.open()
    except Exception as e:  # hidapi errors: no device, no permission
        raise TeleopError(f"cannot open the SpaceMouse ({type(e).__name__}: {e}); see docs/robot.md") from None
    if not ok:
        raise TeleopError("no SpaceMouse found, or no permission to read it: see the udev rule in docs/robot.md")
    return pyspacemouse.read


# Keyboard teleop: key -> (action axis, direction)
KEY_AXES = {
    "w": (0, 1.0),
    "s": (0, -1.0),
    "a": (1, 1.0),
    "d": (1, -1.0),
    "r": (2, -1.0),  # up: -z in the target frame (+z goes down the hole)
    "f": (2, 1.0),
    "i": (3, 1.0),
    "k": (3, -1.0),
    "j": (4, 1.0),
    "l": (4, -1.0),
    "u": (5, 1.0),
    "o": (5, -1.0),
}


class KeyboardTeleop:
    """Keys held down move the robot at ``speed`` action units per axis; none held: no takeover."""

    def __init__(self, speed: float = 0.5, listen: bool = True) -> None:
        self.speed = float(speed)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._listener = None
        if listen:
            keyboard = pynput_keyboard("--intervene keyboard")
            self._listener = keyboard.Listener(on_press=self.on_press, on_release=self.on_release)
            self._listener.start()

    def on_press(self, key: Any) -> None:
        name = key_name(key)
        if name in KEY_AXES:
            with self._lock:
                self._held.add(name)

    def on_release(self, key: Any) -> None:
        with self._lock:
            self._held.discard(key_name(key) or "")

    def command(self, obs: Mapping[str, np.ndarray] | None = None) -> np.ndarray | None:
        with self._lock:
            held = set(self._held)
        if not held:
            return None
        a = np.zeros(contract.ACTION_DIM, np.float32)
        for k in held:
            axis, sign = KEY_AXES[k]
            a[axis] += sign * self.speed
        return np.clip(a, -1.0, 1.0)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()


DEVICES = ("spacemouse", "keyboard", "scripted")


@dataclass(frozen=True)
class InterventionChoice:
    """``--intervene DEVICE`` and its settings, the same on every command that runs the env (a
    command's config inherits these fields); the SpaceMouse's defaults are ``SpaceMouseConfig``'s."""

    intervene: str | None = option(
        None,
        "a person may take over: a SpaceMouse, the keyboard (pynput), or, in simulation, the scripted inserter "
        "whenever the peg strays from the hole",
        choices=DEVICES,
    )
    dead_zone: float = option(SpaceMouseConfig.dead_zone, "SpaceMouse: deflection read as none")
    engage: str = option(SpaceMouseConfig.engage, "SpaceMouse: what takes over", choices=("motion", "button"))
    spacemouse_axes: tuple[int, ...] = option(
        SpaceMouseConfig.axes,
        "SpaceMouse: the puck axis (x y z roll pitch yaw = 0..5) driving each action axis (SERL's)",
    )
    spacemouse_signs: tuple[float, ...] = option(SpaceMouseConfig.signs, "SpaceMouse: the sign of each action axis")
    spacemouse_frame: str = option(
        SpaceMouseConfig.frame,
        "SpaceMouse: the puck moves the tool in the robot's base frame (SERL's way) or in the tool frame",
        choices=("base", "tool"),
    )
    spacemouse_scale: float = option(SpaceMouseConfig.translation_scale, "SpaceMouse: action units per deflection")
    intervene_distance: float = option(TAKEOVER_DISTANCE_M, "scripted: m from the hole beyond which it takes over")


def with_interventions(env: Any, args: Any) -> Any:
    """The env wrapped for ``--intervene`` (unchanged without it)."""
    if not getattr(args, "intervene", None):
        return env
    from robot_env.contract import task_env
    from robot_env.intervention import InterventionWrapper

    if args.intervene == "spacemouse":
        try:
            cfg = SpaceMouseConfig(
                dead_zone=args.dead_zone,
                engage=args.engage,
                axes=tuple(args.spacemouse_axes),
                signs=tuple(args.spacemouse_signs),
                translation_scale=args.spacemouse_scale,
                rotation_scale=args.spacemouse_scale,
                frame=args.spacemouse_frame,
            )
        except ValueError as e:
            raise TeleopError(f"SpaceMouse settings: {e}") from None
        device: TeleopDevice = SpaceMouse(cfg, task=task_env(env).task)
    elif args.intervene == "keyboard":
        device = KeyboardTeleop()
    else:
        device = ScriptedHuman(task_env(env).task, distance=args.intervene_distance, seed=getattr(args, "seed", 0))
    return InterventionWrapper(env, device)
