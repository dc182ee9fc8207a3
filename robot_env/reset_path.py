"""Reset motions for the real arm: out of the hole first, then across, then down, in small steps.

A reset starts wherever the episode ended, often with the peg in the hole. The path is three
legs, each cut into commands no further apart than the task's maximum step (position and angle):
1. straight up, to at least ``reset_clearance`` above the target pose (out of the hole) and at
   least ``reset_lift`` above where the tool is, and no lower than the goal;
2. across at that height, turning to the goal's orientation;
3. straight down to the goal.
Every command of these legs is clipped to the task's safety box (the robot is never sent a pose
outside it). When the arm starts outside the box (after a joint reset: SERL's home joints put the
hand about 20 cm above a typical box), ``approach_waypoints`` brings it in first, along the
straight line from where it is to the box's nearest point, in the same small steps: each command
lies between the measured pose and the box, never further out than the arm already is.
"""

from __future__ import annotations

import math

import numpy as np

from robot_env import geometry as geo
from robot_env.contract import clip_to_box
from robot_env.task_config import TaskConfig


def interpolate(start6: np.ndarray, goal6: np.ndarray, max_step: float, max_rot_step: float) -> list[np.ndarray]:
    """Poses from ``start6`` (excluded) to ``goal6`` (included), consecutive ones at most
    ``max_step`` metres and ``max_rot_step`` radians apart on every angle (angles on the circle)."""
    start6, goal6 = np.asarray(start6, np.float64), np.asarray(goal6, np.float64)
    d_pos = goal6[:3] - start6[:3]
    d_rot = geo.wrap_angle(goal6[3:] - start6[3:])
    n = max(1, math.ceil(max(np.linalg.norm(d_pos) / max_step, np.max(np.abs(d_rot)) / max_rot_step) - 1e-9))
    out = []
    for k in range(1, n + 1):
        f = k / n
        p = np.concatenate([start6[:3] + f * d_pos, geo.wrap_angle(start6[3:] + f * d_rot)])
        out.append(p)
    out[-1] = np.concatenate([goal6[:3], geo.wrap_angle(goal6[3:])])
    return out


def safe_height(task: TaskConfig, here6: np.ndarray, goal6: np.ndarray) -> float:
    """The height of the reset's lateral leg: out of the hole, lifted, and not below the goal."""
    real = task.real_section
    z = max(here6[2] + real.reset_lift, task.target_pose[2] + real.reset_clearance, goal6[2])
    return float(min(z, task.safety_box.high[2]))


def lift_waypoints(task: TaskConfig, here6: np.ndarray, goal6: np.ndarray) -> list[np.ndarray]:
    """Leg 1: straight up from ``here6`` (clipped into the box) to the safe height."""
    real = task.real_section
    start = clip_to_box(np.asarray(here6, np.float64), task.safety_box)
    top = start.copy()
    top[2] = max(safe_height(task, here6, goal6), start[2])
    path = [start] if not np.allclose(start, here6) else []
    if top[2] > start[2]:
        path += interpolate(start, top, real.reset_max_step, real.reset_max_rot_step)
    return [clip_to_box(p, task.safety_box) for p in path]


def transfer_waypoints(task: TaskConfig, here6: np.ndarray, goal6: np.ndarray) -> list[np.ndarray]:
    """Legs 2 and 3: across at the safe height (turning to the goal's angles), then down."""
    real = task.real_section
    start = clip_to_box(np.asarray(here6, np.float64), task.safety_box)
    goal = clip_to_box(np.asarray(goal6, np.float64), task.safety_box)
    z = max(safe_height(task, start, goal), start[2])
    above = np.concatenate([goal[:2], [z], goal[3:]])
    path = [start] if not np.allclose(start, here6) else []
    path += interpolate(start, above, real.reset_max_step, real.reset_max_rot_step)
    if goal[2] < z:
        path += interpolate(above, goal, real.reset_max_step, real.reset_max_rot_step)
    return [clip_to_box(p, task.safety_box) for p in path]


def approach_waypoints(task: TaskConfig, here6: np.ndarray) -> list[np.ndarray]:
    """From outside the box to its nearest point, in reset-sized steps along the straight line (every
    pose between where the arm is and the box); nothing when the arm is inside already."""
    here6 = np.asarray(here6, np.float64)
    entry = clip_to_box(here6, task.safety_box)
    if np.allclose(entry, here6):
        return []
    real = task.real_section
    return interpolate(here6, entry, real.reset_max_step, real.reset_max_rot_step)
