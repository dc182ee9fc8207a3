"""Rotations and poses in NumPy, with the conventions of the robot contract.

Quaternions are ``[x, y, z, w]`` (the robot server's order). Euler angles are extrinsic
``xyz`` (roll about the base x axis first, then pitch about y, then yaw about z), i.e.
``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``, as SERL's ``Rotation.as_euler("xyz")``. Kept free of
SciPy so the robot PC needs nothing beyond NumPy for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EPS = 1e-12


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Map angles into [-pi, pi)."""
    return (np.asarray(a, np.float64) + np.pi) % (2 * np.pi) - np.pi


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q, np.float64) / max(float(np.linalg.norm(q)), _EPS)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrix to a unit quaternion ``[x, y, z, w]`` with ``w >= 0``."""
    m = np.asarray(m, np.float64)
    q: list[float] | np.ndarray
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def euler_to_mat(e: np.ndarray | Sequence[float]) -> np.ndarray:
    r, p, y = np.asarray(e, np.float64)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def mat_to_euler(m: np.ndarray) -> np.ndarray:
    """Inverse of ``euler_to_mat``; pitch in [-pi/2, pi/2], roll and yaw in [-pi, pi]."""
    m = np.asarray(m, np.float64)
    pitch = np.arcsin(np.clip(-m[2, 0], -1.0, 1.0))
    if abs(m[2, 0]) < 1 - 1e-9:
        roll = np.arctan2(m[2, 1], m[2, 2])
        yaw = np.arctan2(m[1, 0], m[0, 0])
    else:  # gimbal lock: only roll - yaw (or roll + yaw) is defined; put it all in roll
        yaw = 0.0
        roll = np.arctan2(-m[1, 2], m[1, 1])
    return np.array([roll, pitch, yaw])


def quat_to_euler(q: np.ndarray) -> np.ndarray:
    return mat_to_euler(quat_to_mat(q))


def euler_to_quat(e: np.ndarray) -> np.ndarray:
    return mat_to_quat(euler_to_mat(e))


def pose7_to_mat(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[x, y, z, qx, qy, qz, qw]`` to (position, rotation matrix)."""
    pose = np.asarray(pose, np.float64)
    return pose[:3].copy(), quat_to_mat(pose[3:7])


def mat_to_pose7(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(pos, np.float64), mat_to_quat(rot)])


def pose6_to_pose7(pose6: np.ndarray) -> np.ndarray:
    """``[x, y, z, roll, pitch, yaw]`` to ``[x, y, z, qx, qy, qz, qw]``."""
    pose6 = np.asarray(pose6, np.float64)
    return np.concatenate([pose6[:3], euler_to_quat(pose6[3:6])])


def pose7_to_pose6(pose7: np.ndarray) -> np.ndarray:
    pose7 = np.asarray(pose7, np.float64)
    return np.concatenate([pose7[:3], quat_to_euler(pose7[3:7])])
