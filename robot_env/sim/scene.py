"""The MJCF scene of the simulated peg insertion, built from a task config.

The end effector is a floating, gravity-compensated hand on six joints (x, y, z slides in the
base frame; yaw, pitch, roll hinges), so that the joint values are the TCP's position and
Euler angles. Position actuators with stiffness, damping and a force limit on each joint play
the part of the Franka's Cartesian impedance controller: a commanded equilibrium pose, spring
tracking, bounded push. The peg is rigidly held between two closed fingers (the real task
keeps the gripper closed). The board has a square hole with a 45-degree chamfer at its mouth.

Contacts are only between the hand/peg and the board/table, which keeps the physics cheap.
"""

from __future__ import annotations

import numpy as np

from robot_env.contract import IMAGE_KEYS
from robot_env.task_config import TaskConfig

FRANKA_MAX_OPENING = 0.08  # metres; the Franka hand's stroke, for the normalised gripper reading
FINGER_THICKNESS = 0.006
HAND_ARMATURE = (1.0, 0.02)  # reflected arm inertia on translation (kg) and rotation (kg m^2)
ROBOT_GEOMS = ("peg", "finger_left", "finger_right", "palm")


def board_top_z(task: TaskConfig) -> float:
    s = task.sim_section
    return task.target_pose[2] - s.peg_length + s.target_depth


def hole_half_width(task: TaskConfig) -> float:
    return task.sim_section.peg_half_width + task.sim_section.clearance / 2


def _fmt(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in np.atleast_1d(v))


def _look_at(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> str:
    """``xyaxes`` for a camera at ``pos`` looking at ``target`` (MuJoCo cameras look along -z)."""
    f = target - pos
    f /= np.linalg.norm(f)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, f)
    return _fmt(np.concatenate([x, y]))


def _board_geoms(task: TaskConfig) -> list[str]:
    s = task.sim_section
    b, c, w, d = hole_half_width(task), s.chamfer, s.board_half_width, s.hole_depth
    geoms = []

    def box(name: str, center, half, extra: str = "") -> None:
        geoms.append(f'<geom name="{name}" class="board" type="box" pos="{_fmt(center)}" size="{_fmt(half)}" {extra}/>')

    # walls whose top face is the board surface (outside the chamfer)
    box("wall_px", [(b + c + w) / 2, 0, -d / 2], [(w - b - c) / 2, w, d / 2])
    box("wall_nx", [-(b + c + w) / 2, 0, -d / 2], [(w - b - c) / 2, w, d / 2])
    box("wall_py", [0, (b + c + w) / 2, -d / 2], [b + c, (w - b - c) / 2, d / 2])
    box("wall_ny", [0, -(b + c + w) / 2, -d / 2], [b + c, (w - b - c) / 2, d / 2])
    if c > 0:
        # the hole's sides below the chamfer
        box("lip_px", [b + c / 2, 0, -(d + c) / 2], [c / 2, b + c, (d - c) / 2])
        box("lip_nx", [-(b + c / 2), 0, -(d + c) / 2], [c / 2, b + c, (d - c) / 2])
        box("lip_py", [0, b + c / 2, -(d + c) / 2], [b + c, c / 2, (d - c) / 2])
        box("lip_ny", [0, -(b + c / 2), -(d + c) / 2], [b + c, c / 2, (d - c) / 2])
        # 45-degree chamfers: square bars turned 45 degrees whose upper face is the slope
        h = c / np.sqrt(2)
        q45y, q45x = (
            f"{np.cos(np.pi / 8):.6g} 0 {np.sin(np.pi / 8):.6g} 0",
            f"{np.cos(np.pi / 8):.6g} {np.sin(np.pi / 8):.6g} 0 0",
        )
        box("chamfer_px", [b + c, 0, -c], [h, b + c, h], f'quat="{q45y}"')
        box("chamfer_nx", [-(b + c), 0, -c], [h, b + c, h], f'quat="{q45y}"')
        box("chamfer_py", [0, b + c, -c], [b + c, h, h], f'quat="{q45x}"')
        box("chamfer_ny", [0, -(b + c), -c], [b + c, h, h], f'quat="{q45x}"')
    box("hole_floor", [0, 0, -d - 0.005], [b + c, b + c, 0.005])
    return geoms


# (joint, type, axis, armature): slides in the base frame, then yaw, pitch, roll, so that the
# hand's orientation is Rz(yaw) Ry(pitch) Rx(roll), the extrinsic xyz Euler convention.
_HAND_JOINTS = (
    ("x", "slide", "1 0 0", HAND_ARMATURE[0]),
    ("y", "slide", "0 1 0", HAND_ARMATURE[0]),
    ("z", "slide", "0 0 1", HAND_ARMATURE[0]),
    ("yaw", "hinge", "0 0 1", HAND_ARMATURE[1]),
    ("pitch", "hinge", "0 1 0", HAND_ARMATURE[1]),
    ("roll", "hinge", "1 0 0", HAND_ARMATURE[1]),
)


def _hand_joint_chain() -> tuple[str, str]:
    """Nested, gravity-compensated bodies with one joint each, all at the TCP (opening, closing)."""
    opening: list[str] = []
    closing: list[str] = []
    for depth, (name, kind, axis, armature) in enumerate(_HAND_JOINTS):
        pad = "    " * (depth + 1)
        opening.append(
            f'{pad}<body name="hand_{name}" gravcomp="1">\n'
            f'{pad}  <joint name="{name}" type="{kind}" axis="{axis}" armature="{armature:g}"/>\n'
            f'{pad}  <inertial pos="0 0 0" mass="0.01" diaginertia="1e-5 1e-5 1e-5"/>'
        )
        closing.insert(0, f"{pad}</body>")
    return "\n".join(opening), "\n".join(closing)


def build_mjcf(task: TaskConfig, offscreen_size: int = 640) -> str:
    """MJCF text of the scene for ``task`` (which must have a ``sim`` section)."""
    if task.sim is None:
        raise ValueError(f"task {task.name} has no 'sim' section")
    s = task.sim_section
    tx, ty, _ = task.target_pose[:3]
    top = board_top_z(task)
    table_z = top - s.hole_depth - 0.01
    board_yaw = task.target_pose[5]
    (kt, kr), (dt, dr) = s.stiffness, s.damping
    pw, pl = s.peg_half_width, s.peg_length
    grip = 0.02  # how much of the peg sits between the fingers
    finger_y = pw + FINGER_THICKNESS / 2
    # cameras on the hand, in the TCP frame (z points from the hand to the peg tip)
    tip = np.array([0.0, 0.0, pl + 0.01])
    cam_pos = (np.array([0.07, 0.035, -0.045]), np.array([-0.07, -0.035, -0.045]))  # either side of the peg
    up = np.array([0.0, 0.0, -1.0])  # towards the hand
    actuators = []
    for j, (k, d_, lim) in zip(
        ("x", "y", "z", "yaw", "pitch", "roll"),
        [(kt, dt, s.force_limit)] * 3 + [(kr, dr, s.torque_limit)] * 3,
    ):
        actuators.append(
            f'<position name="{j}" joint="{j}" kp="{k:g}" kv="{d_:g}" forcelimited="true" forcerange="{-lim:g} {lim:g}"/>'
        )
    chain_open, chain_close = _hand_joint_chain()
    cameras = "\n".join(
        f'                  <camera name="{key}" pos="{_fmt(pos)}" xyaxes="{_look_at(pos, tip, up)}" fovy="{s.camera_fovy:g}"/>'
        for key, pos in zip(IMAGE_KEYS, cam_pos, strict=True)
    )
    return f"""
<mujoco model="peg_insertion_sim">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{s.timestep:g}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{offscreen_size}" offheight="{offscreen_size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".82 .82 .8" rgb2=".7 .7 .68" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="12 12" reflectance="0"/>
    <material name="board" rgba=".15 .55 .25 1"/>
    <material name="hole" rgba=".08 .25 .12 1"/>
    <material name="peg" rgba=".9 .55 .1 1"/>
    <material name="metal" rgba=".55 .55 .6 1"/>
  </asset>
  <default>
    <geom friction="{s.friction:g} 0.01 0.0001" solref="0.004 1" solimp="0.95 0.99 0.001" condim="3"/>
    <default class="board"><geom contype="0" conaffinity="1" material="board"/></default>
    <default class="robot"><geom contype="1" conaffinity="0" material="metal"/></default>
    <joint damping="0"/>
  </default>
  <worldbody>
    <light name="top" pos="{tx:g} {ty:g} {top + 1.0:g}" dir="0 0 -1" diffuse=".6 .6 .6" castshadow="false"/>
    <geom name="table" class="board" type="plane" pos="{tx:g} {ty:g} {table_z:g}" size="0.6 0.6 0.01" material="table"/>
    <body name="board" pos="{tx:g} {ty:g} {top:g}" euler="0 0 {board_yaw:g}">
      {chr(10).join("      " + g for g in _board_geoms(task))}
      <site name="hole" pos="0 0 0" size="0.002" rgba="1 0 0 0"/>
    </body>
    <camera name="scene" pos="{tx + 0.32:g} {ty - 0.32:g} {top + 0.28:g}" xyaxes="{_look_at(np.array([tx + 0.32, ty - 0.32, top + 0.28]), np.array([tx, ty, top + 0.03]), np.array([0, 0, 1.0]))}" fovy="45"/>
{chain_open}
                <body name="tcp" quat="0 1 0 0" gravcomp="1">
                  <site name="tcp" pos="0 0 0" size="0.003" rgba="0 0 1 0"/>
                  <site name="peg_tip" pos="0 0 {pl:g}" size="0.002" rgba="0 1 0 0"/>
                  <geom name="peg" class="robot" type="box" pos="0 0 {(pl - grip) / 2:g}" size="{pw:g} {pw:g} {(pl + grip) / 2:g}" material="peg" mass="0.05"/>
                  <geom name="finger_left" class="robot" type="box" pos="0 {finger_y:g} {-grip / 2:g}" size="0.009 {FINGER_THICKNESS / 2:g} {grip / 2 + 0.002:g}" mass="0.05"/>
                  <geom name="finger_right" class="robot" type="box" pos="0 {-finger_y:g} {-grip / 2:g}" size="0.009 {FINGER_THICKNESS / 2:g} {grip / 2 + 0.002:g}" mass="0.05"/>
                  <geom name="palm" class="robot" type="box" pos="0 0 {-grip - 0.03:g}" size="0.03 0.1 0.03" mass="0.6"/>
{cameras}
                </body>
{chain_close}
  </worldbody>
  <actuator>
    {chr(10).join("    " + a for a in actuators)}
  </actuator>
</mujoco>
"""


def gripper_opening(task: TaskConfig) -> float:
    """Normalised gripper reading (1 = open) of fingers closed on the peg."""
    return float(2 * task.sim_section.peg_half_width / FRANKA_MAX_OPENING)
