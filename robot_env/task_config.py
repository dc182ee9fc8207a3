"""Task settings as data: one JSON file per task in ``robot_env/tasks/``, shared by the real
robot and the simulation (the ``sim`` section holds what only the simulation needs).

Poses are the tool centre point (TCP) in the robot base frame as ``[x, y, z, roll, pitch,
yaw]`` (extrinsic xyz Euler, see ``robot_env.geometry``). Angles in the safety box may go past
pi (roll of a downward-pointing tool sits at +-pi): the box is an interval on the circle from
``low`` to ``high``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mergedeep
import numpy as np

from robot_env.gripper import GRIPPER_FLAVOURS
from shared.config import from_dict

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
# Share of the collision threshold a compliance may push with: an impact or the damping term
# adds to the spring's push, and at the threshold itself every press ends in a reflex.
CONTACT_MARGIN = 0.8


class TaskConfigError(ValueError):
    """A task file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ResetRange:
    xy: float  # uniform +-xy metres around the reset pose, in the base frame
    yaw: float  # uniform +-yaw radians around the reset pose


@dataclass(frozen=True)
class SafetyBox:
    low: tuple[float, float, float, float, float, float]
    high: tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class SimTaskConfig:
    """The simulated scene: a square peg in a chamfered square hole, impedance-controlled."""

    peg_half_width: float  # metres
    peg_length: float  # how far the peg sticks out below the TCP
    clearance: float  # hole width minus peg width
    chamfer: float  # 45-degree chamfer at the hole's mouth
    hole_depth: float
    target_depth: float  # insertion depth of the peg tip at target_pose
    success_depth: float  # insertion depth that counts as inserted
    board_half_width: float
    friction: float
    timestep: float  # physics step, seconds
    stiffness: tuple[float, float]  # translational N/m, rotational Nm/rad (like the Franka impedance)
    damping: tuple[float, float]
    force_limit: float  # N, per axis: what the controller may push with
    torque_limit: float  # Nm, per axis
    camera_fovy: float


@dataclass(frozen=True)
class CameraConfig:
    """One RealSense wrist camera."""

    name: str  # the observation key (wrist_1, wrist_2)
    serial: str
    width: int = 640
    height: int = 480
    fps: int = 30
    exposure: float = 0.0  # microseconds (converted to each sensor's units); 0 leaves auto exposure on
    crop: tuple[int, int, int, int] | None = None  # [top, bottom, left, right] pixel rows/columns kept
    square: bool = True  # then the centre square of what is left, so resizing does not squash it
    # Which sensor's exposure to set: the one that makes the colour image. "auto": the stereo
    # module on a D405 (its colour comes from the depth imagers), the RGB camera otherwise.
    exposure_sensor: str = "auto"  # "auto", "rgb" or "stereo"


@dataclass(frozen=True)
class RealTaskConfig:
    """What only the real robot needs."""

    cameras: tuple[CameraConfig, ...]
    # SERL impedance parameters for the episode and for precise resets (stiffer, tighter clips).
    compliance: dict[str, float]
    reset_compliance: dict[str, float]
    # Success without a classifier: the TCP within this of target_pose (metres per axis, radians).
    success_tolerance: tuple[float, float]
    joint_reset_every: int  # episodes between joint resets; 0 never (the paper's robot code)
    reset_lift: float  # metres straight up, at least, before any sideways reset motion
    reset_settle_s: float  # the longest wait for the arm to settle at the end of each reset leg
    gripper: str = "serl_robotiq"  # the robot server's gripper units (robot_env/gripper.py)
    reset_clearance: float = 0.03  # height above target_pose that is out of the hole: insertion depth + margin
    reset_max_step: float = 0.01  # metres between consecutive reset commands
    reset_max_rot_step: float = 0.05  # radians, on every angle
    reset_force_limit: float = 30.0  # N: the reset compliance's translational clips are cut to this / stiffness
    reset_torque_limit: float = 4.0  # Nm: and the rotational ones to this / rotational stiffness
    joint_reset_timeout_s: float = 60.0  # the real server blocks up to ~43 s
    clear_errors: str = "every_step"  # "every_step" (SERL's habit) or "on_stall" (only when the arm stopped)
    stall_min_command: float = 0.004  # metres: a shorter command cannot reveal a stall
    stall_contact_force: float = 5.0  # N of external force: the arm touches something, not a stall
    stall_steps: int = 2  # consecutive stalled steps that count as a reflex (the controller lags one)
    on_reflex: str = "end"  # "end" the episode at the last good observation, or "continue"
    # N per force axis above which the arm stops with a reflex: franka_ros's
    # franka_control/config/franka_control_node.yaml (lower = upper thresholds). Every compliance
    # here must push below CONTACT_MARGIN of it, or pressing on the board trips the reflex.
    collision_force: float = 20.0
    reset_tolerance: tuple[float, float] = (0.01, 0.05)  # a reset leg must end this close (m, rad) to its goal
    # A zero action holds the last commanded pose while the arm is within this (m, rad) of it: a
    # payload or the controller's lag must not walk the target down (measured + delta would).
    hold_window: tuple[float, float] = (0.0075, 0.03)
    gripper_settle_s: float = 0.6  # after a gripper command (SERL's GRIPPER_SLEEP)
    gripper_activation_s: float = 2.0  # a Robotiq's activation cycle (it opens and closes once)
    touch_offset: tuple[float, float] = (0.03, 0.0)  # check_robot touches the board here (m from target, base x y)

    def push_limit(self, params: dict[str, float]) -> float:
        """The most the controller pushes with under these compliance parameters (N): translational
        stiffness x the largest translational clip (serl_franka_controllers clips the pose error)."""
        k = float(params.get("translational_stiffness", 0.0))
        clips = [float(v) for n, v in params.items() if n.startswith("translational_clip_")]
        return k * max(clips) if clips else float("inf")

    @property
    def limited_reset_compliance(self) -> dict[str, float]:
        """``reset_compliance`` with its clips cut so that stiffness x clip stays within the
        reset force and torque limits (the impedance controller pushes at most that hard)."""
        out = dict(self.reset_compliance)
        for group, limit in (("translational", self.reset_force_limit), ("rotational", self.reset_torque_limit)):
            k = float(out.get(f"{group}_stiffness", 0.0))
            clips = [name for name in out if name.startswith(f"{group}_clip_")]
            if k > 0:
                for name in clips:
                    out[name] = min(float(out[name]), limit / k)
        return out


@dataclass(frozen=True)
class TaskConfig:
    name: str
    description: str
    control_hz: float
    episode_length: int
    target_pose: tuple[float, float, float, float, float, float]
    reset_pose: tuple[float, float, float, float, float, float]
    random_reset: ResetRange
    eval_poses: tuple[tuple[float, float, float], ...]  # (dx, dy, dyaw) from reset_pose
    safety_box: SafetyBox
    action_scale: tuple[float, float]  # metres, radians per unit action
    gripper_closed: bool
    sim: SimTaskConfig | None = None
    real: RealTaskConfig | None = None

    @property
    def sim_section(self) -> SimTaskConfig:
        """The 'sim' section; an error naming the task when it has none."""
        if self.sim is None:
            raise TaskConfigError(f"task {self.name} has no 'sim' section (geometry, clearance, physics)")
        return self.sim

    @property
    def real_section(self) -> RealTaskConfig:
        """The 'real' section; an error naming the task when it has none."""
        if self.real is None:
            raise TaskConfigError(f"task {self.name} has no 'real' section (cameras, compliance, reset settings)")
        return self.real

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.episode_length < 1:
            raise TaskConfigError(f"task {self.name}: control_hz and episode_length must be positive")
        if min(self.action_scale) <= 0:
            raise TaskConfigError(f"task {self.name}: action_scale must be positive")
        low, high = np.asarray(self.safety_box.low), np.asarray(self.safety_box.high)
        if np.any(high[:3] <= low[:3]) or np.any(high[3:] - low[3:] <= 0) or np.any(high[3:] - low[3:] >= 2 * np.pi):
            raise TaskConfigError(f"task {self.name}: safety_box needs low < high on every axis")
        for what, pose in (("target_pose", self.target_pose), ("reset_pose", self.reset_pose)):
            if not in_box(np.asarray(pose), self.safety_box):
                raise TaskConfigError(f"task {self.name}: {what} {list(pose)} is outside the safety box")
        if not self.eval_poses:
            raise TaskConfigError(f"task {self.name}: eval_poses is empty")
        for i, (dx, dy, dyaw) in enumerate(self.eval_poses):
            pose = np.asarray(self.reset_pose) + np.array([dx, dy, 0.0, 0.0, 0.0, dyaw])
            if not in_box(pose, self.safety_box):
                raise TaskConfigError(f"task {self.name}: eval pose {i} is outside the safety box")
        corner = np.asarray(self.reset_pose) + np.array(
            [self.random_reset.xy, self.random_reset.xy, 0, 0, 0, self.random_reset.yaw]
        )
        corner_lo = np.asarray(self.reset_pose) - np.array(
            [self.random_reset.xy, self.random_reset.xy, 0, 0, 0, self.random_reset.yaw]
        )
        if not (in_box(corner, self.safety_box) and in_box(corner_lo, self.safety_box)):
            raise TaskConfigError(f"task {self.name}: random_reset reaches outside the safety box")
        r = self.real
        if r is not None:
            names = [c.name for c in r.cameras]
            if len(set(names)) != len(names):
                raise TaskConfigError(f"task {self.name}: camera names repeat: {names}")
            for group in (r.compliance, r.reset_compliance):
                if not isinstance(group, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in group.values()
                ):
                    raise TaskConfigError(f"task {self.name}: compliance parameters must be numbers by name")
            positive = (
                r.reset_max_step,
                r.reset_max_rot_step,
                r.reset_force_limit,
                r.reset_torque_limit,
                r.joint_reset_timeout_s,
                r.stall_min_command,
                r.reset_clearance,
                *r.success_tolerance,
                r.collision_force,
                *r.reset_tolerance,
                *r.hold_window,
            )
            if (
                min(positive) <= 0
                or min(r.joint_reset_every, r.reset_lift, r.reset_settle_s, r.gripper_settle_s, r.gripper_activation_s)
                < 0
                or r.stall_steps < 1
            ):
                raise TaskConfigError(f"task {self.name}: real section has a negative or zero setting")
            for name, value, allowed in (
                ("gripper", r.gripper, GRIPPER_FLAVOURS),
                ("clear_errors", r.clear_errors, ("every_step", "on_stall")),
                ("on_reflex", r.on_reflex, ("end", "continue")),
                *(
                    (f"camera {c.name} exposure_sensor", c.exposure_sensor, ("auto", "rgb", "stereo"))
                    for c in r.cameras
                ),
            ):
                if value not in allowed:
                    raise TaskConfigError(f"task {self.name}: real.{name} must be one of {allowed}, got {value!r}")
            cap = CONTACT_MARGIN * r.collision_force
            for what, params in (("compliance", r.compliance), ("reset compliance", r.limited_reset_compliance)):
                if r.push_limit(params) > cap + 1e-9:
                    raise TaskConfigError(
                        f"task {self.name}: the {what} pushes with up to {r.push_limit(params):.1f} N (stiffness x "
                        f"largest translational clip), above {CONTACT_MARGIN:.0%} of the {r.collision_force:g} N "
                        "collision threshold: every press would end in a reflex; lower the clips"
                    )
            if self.safety_box.high[2] < self.target_pose[2] + r.reset_clearance:
                raise TaskConfigError(
                    f"task {self.name}: the safety box's top ({self.safety_box.high[2]}) is below the height that is "
                    f"out of the hole (target z + reset_clearance = {self.target_pose[2] + r.reset_clearance})"
                )
        s = self.sim
        if s is not None and not (0 < s.success_depth <= s.target_depth <= s.hole_depth):
            raise TaskConfigError(f"task {self.name}: need 0 < success_depth <= target_depth <= hole_depth")

    @property
    def control_dt(self) -> float:
        return 1.0 / self.control_hz


def in_box(pose6: np.ndarray, box: SafetyBox, tol: float = 1e-9) -> bool:
    """Whether a 6-D pose lies in the box (angles compared on the circle)."""
    low, high = np.asarray(box.low), np.asarray(box.high)
    pose6 = np.asarray(pose6, np.float64)
    if np.any(pose6[:3] < low[:3] - tol) or np.any(pose6[:3] > high[:3] + tol):
        return False
    # offset from the interval's start, measured counter-clockwise on the circle
    offset = (pose6[3:] - low[3:]) % (2 * np.pi)
    return bool(np.all((offset <= high[3:] - low[3:] + tol) | (offset >= 2 * np.pi - tol)))


def task_file(name_or_path: str | Path, folder: Path, error: type[ValueError], kind: str = "task") -> Path:
    """The task file a name (``folder/<name>.json``) or a ``.json`` path means; ``error`` naming
    the shipped ones when there is none."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = folder / f"{path.name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.json"))
        raise error(f"no {kind} file {path} ({kind}s shipped: {known})")
    return path


def merge_settings(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it: objects merge key by key, anything else (numbers,
    lists, ``null``) replaces what the base had."""
    return mergedeep.merge({}, base, changes)  # copies both; replaces non-mappings (Strategy.REPLACE)


def task_settings(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A task file's settings with its ``extends`` chain resolved: a variant names the task it
    starts from (by name, looked up beside it, or by a ``.json`` path relative to it) and states
    only what differs."""
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise TaskConfigError(f"task files extend each other in a circle: {chain}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TaskConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise TaskConfigError(f"{path}: a task file holds one JSON object, not {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise TaskConfigError(f"{path}: 'extends' names a task file, got {base!r}")
    ref = Path(base)
    base_path = task_file(path.parent / ref if ref.suffix == ".json" else ref, path.parent, TaskConfigError)
    return merge_settings(task_settings(base_path, (*_seen, path.resolve())), data)


def load_task(name_or_path: str | Path) -> TaskConfig:
    """Load a task by name (``peg_insertion`` -> ``robot_env/tasks/peg_insertion.json``) or path."""
    path = task_file(name_or_path, TASKS_DIR, TaskConfigError)
    data = task_settings(path)
    try:
        return from_dict(TaskConfig, data)
    except TaskConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise TaskConfigError(f"{path}: {e}") from None
