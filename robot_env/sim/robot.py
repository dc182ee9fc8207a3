"""A simulated Franka-like robot with the robot server's verbs: read the state, command an
impedance equilibrium pose, let time pass. The gym env drives it, and the simulated robot
server (for the real env's client) can serve it.
"""

from __future__ import annotations

import os
from typing import Any

import mujoco
import numpy as np

from robot_env import geometry as geo
from robot_env.sim import scene
from robot_env.task_config import TaskConfig

_JOINTS = ("x", "y", "z", "yaw", "pitch", "roll")
# the TCP body is turned pi about x from the hinge chain: tcp roll = chain roll + pi
_TCP_FLIP = geo.euler_to_mat([np.pi, 0.0, 0.0])


def _renderer(model: Any, size: int) -> Any:
    try:
        return mujoco.Renderer(model, size, size)
    except Exception as e:  # mujoco.FatalError or a GL library error, depending on the backend
        raise RuntimeError(
            f"offscreen rendering failed ({type(e).__name__}: {e}). MuJoCo chooses its OpenGL backend when it "
            f"is first imported (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} now): import robot_env before mujoco, "
            "or set MUJOCO_GL=egl (or osmesa) in the environment; launch/install.sh installs the libraries"
        ) from e


class SimRobot:
    """MuJoCo physics of the peg task behind a robot-server-like interface."""

    def __init__(self, task: TaskConfig):
        if task.sim is None:
            raise ValueError(f"task {task.name} has no 'sim' section")
        self.task = task
        self.model = mujoco.MjModel.from_xml_string(scene.build_mjcf(task))
        self.data = mujoco.MjData(self.model)
        self._qadr = np.array([self.model.jnt_qposadr[self.model.joint(j).id] for j in _JOINTS])
        self._dadr = np.array([self.model.jnt_dofadr[self.model.joint(j).id] for j in _JOINTS])
        self._act = np.array([self.model.actuator(j).id for j in _JOINTS])
        self._tcp = self.model.site("tcp").id
        self._tip = self.model.site("peg_tip").id
        self._hole = self.model.site("hole").id
        self._robot_geoms = {self.model.geom(g).id for g in scene.ROBOT_GEOMS}
        self._substeps = max(1, round(task.control_dt / self.model.opt.timestep))
        self._gripper = scene.gripper_opening(task)
        self._renderers: dict[tuple[int, int], Any] = {}
        self._contact_buf = np.zeros(6)
        self._vel_buf = np.zeros(6)
        mujoco.mj_forward(self.model, self.data)

    # ----- poses <-> joints -----
    def _pose_to_joints(self, pose7: np.ndarray, near: np.ndarray) -> np.ndarray:
        pos, rot = geo.pose7_to_mat(pose7)
        roll, pitch, yaw = geo.mat_to_euler(rot @ _TCP_FLIP)  # chain angles
        q = np.array([pos[0], pos[1], pos[2], yaw, pitch, roll])
        # hinges are unbounded: take the angle closest to where the joint is now
        q[3:] = near[3:] + geo.wrap_angle(q[3:] - near[3:])
        return q

    def _joints(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    # ----- the robot server's verbs -----
    def get_state(self) -> dict[str, Any]:
        """``pose`` (7, base frame), ``vel`` (6), ``force``/``torque`` (external wrench on the
        tool in the TCP frame), ``gripper_pos`` (normalised, 1 = open)."""
        d = self.data
        pos = d.site_xpos[self._tcp].copy()
        rot = d.site_xmat[self._tcp].reshape(3, 3).copy()
        mujoco.mj_objectVelocity(self.model, d, mujoco.mjtObj.mjOBJ_SITE, self._tcp, self._vel_buf, 0)
        force, torque = self._external_wrench(pos, rot)
        return {
            "pose": geo.mat_to_pose7(pos, rot),
            "vel": np.concatenate([self._vel_buf[3:], self._vel_buf[:3]]),
            "force": force,
            "torque": torque,
            "gripper_pos": self._gripper,
        }

    def command_pose(self, pose7: np.ndarray) -> None:
        """Set the impedance controller's equilibrium pose (the robot server's ``/pose``)."""
        pose7 = np.asarray(pose7, np.float64)
        if pose7.shape != (7,) or not np.all(np.isfinite(pose7)):
            raise ValueError(f"pose must be 7 finite numbers, got {pose7}")
        self.data.ctrl[self._act] = self._pose_to_joints(pose7, self._joints())

    def advance(self, seconds: float | None = None) -> None:
        """Let simulated time pass (one control period by default); no wall-clock sleeping."""
        n = self._substeps if seconds is None else max(1, round(seconds / self.model.opt.timestep))
        mujoco.mj_step(self.model, self.data, nstep=n)

    def teleport(self, pose7: np.ndarray) -> None:
        """Put the hand at ``pose7`` at rest, with the controller holding it there."""
        q = self._pose_to_joints(np.asarray(pose7, np.float64), np.zeros(6))
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qadr] = q
        self.data.ctrl[self._act] = q
        mujoco.mj_forward(self.model, self.data)

    def set_compliance(
        self,
        stiffness: tuple[float, float] | None = None,
        damping: tuple[float, float] | None = None,
        force_limit: float | None = None,
        torque_limit: float | None = None,
    ) -> None:
        """Reconfigure the impedance controller (the robot server's ``/update_param``)."""
        m = self.model
        for group, ids in ((0, self._act[:3]), (1, self._act[3:])):
            if stiffness is not None:
                k = float(stiffness[group])
                m.actuator_gainprm[ids, 0] = k
                m.actuator_biasprm[ids, 1] = -k
            if damping is not None:
                m.actuator_biasprm[ids, 2] = -float(damping[group])
        for lim, ids in ((force_limit, self._act[:3]), (torque_limit, self._act[3:])):
            if lim is not None:
                m.actuator_forcerange[ids] = [-float(lim), float(lim)]

    # ----- ground truth only the simulation has -----
    def insertion_depth(self) -> float:
        """How far the peg tip is below the board surface (negative above it), along the hole axis."""
        tip = self.data.site_xpos[self._tip]
        return float(self.data.site_xpos[self._hole][2] - tip[2])

    def peg_in_hole(self) -> bool:
        """Ground truth success: the peg tip is at least ``success_depth`` down the hole."""
        tip_local = self.data.site_xmat[self._hole].reshape(3, 3).T @ (
            self.data.site_xpos[self._tip] - self.data.site_xpos[self._hole]
        )
        inside = bool(np.all(np.abs(tip_local[:2]) <= scene.hole_half_width(self.task) + 1e-3))
        return inside and self.insertion_depth() >= self.task.sim_section.success_depth

    # ----- cameras -----
    def render(self, cameras: tuple[str, ...], size: int) -> dict[str, np.ndarray]:
        """RGB uint8 images ``(size, size, 3)`` from the named cameras."""
        renderer = self._renderers.get((size, size))
        if renderer is None:
            self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, size)
            self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, size)
            renderer = _renderer(self.model, size)
            self._renderers[(size, size)] = renderer
        out = {}
        for cam in cameras:
            renderer.update_scene(self.data, camera=cam)
            out[cam] = renderer.render().copy()
        return out

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    # ----- internals -----
    def _external_wrench(self, pos: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum of contact forces the world exerts on the hand and peg, with the torque about the
        TCP, both in the TCP frame (what the Franka's external-wrench estimate reports)."""
        d = self.data
        force, torque = np.zeros(3), np.zeros(3)
        for i in range(d.ncon):
            con = d.contact[i]
            g1, g2 = con.geom1, con.geom2
            on1, on2 = g1 in self._robot_geoms, g2 in self._robot_geoms
            if on1 == on2:
                continue
            mujoco.mj_contactForce(self.model, d, i, self._contact_buf)
            # contact-frame force is what geom1 exerts on geom2; frame rows are the axes
            f_world = con.frame.reshape(3, 3).T @ self._contact_buf[:3]
            if on1:
                f_world = -f_world
            force += f_world
            torque += np.cross(con.pos - pos, f_world)
        return rot.T @ force, rot.T @ torque
