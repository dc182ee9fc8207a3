"""A simulated Franka-like robot with the robot server's verbs: read the state, command an
impedance equilibrium pose, let time pass. The gym env drives it with an ideal controller (the
equilibrium follows each command at once); the simulated robot server serves it through the real
controller's model (``robot_env/sim/franka_controller.py``: target filter, 30 Hz state,
reflexes). Both report the external wrench as libfranka does: forces the robot applies to the
environment are positive.
"""

from __future__ import annotations

import os
from typing import Any

import mujoco
import numpy as np

from robot_env import geometry as geo
from robot_env.sim import scene
from robot_env.sim.franka_controller import ControllerModel
from robot_env.task_config import TaskConfig

_JOINTS = ("x", "y", "z", "yaw", "pitch", "roll")
# the TCP body is turned pi about x from the hinge chain: tcp roll = chain roll + pi
_TCP_FLIP = geo.euler_to_mat([np.pi, 0.0, 0.0])
GRAVITY = 9.81
JAM_MIN_DEPTH = 0.001  # metres down the hole before a jammed peg sticks
JAM_FLOOR = -10.0  # a jammed peg may still go deeper: the joint limit is only upwards


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

    def __init__(self, task: TaskConfig, controller: ControllerModel | None = None):
        """``controller``: the real controller's model (the robot server's stand-in); None is the
        ideal controller of the simulation env."""
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
        self._tcp_body = self.model.body("tcp").id
        self.controller = controller
        self._command = np.zeros(6)  # the commanded joint target (the controller's position_d_target_)
        self.in_reflex = False
        self.reflexes = 0  # reflexes since the start, injected or tripped
        self.reflex_wrench: np.ndarray | None = None  # the estimate that tripped the last reflex
        self.payload_kg = 0.0  # mass in the hand the robot's model does not know of
        self.payload_com = np.zeros(3)  # its centre of mass in the TCP frame
        self.modelled_load_kg = 0.0  # what /set_load told the controller
        self.jam = False  # a peg that goes into the hole sticks there: it cannot come back up
        self._jam_z: float | None = None  # where it stuck
        self._z_joint = self.model.joint("z").id
        self._published: dict[str, Any] | None = None
        self._wrench_estimate = np.zeros(6)  # the controller model's filtered external wrench
        self._next_publish = 0.0
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
        """``pose`` (7, base frame), ``vel`` (6), ``force``/``torque`` (the external wrench in the
        TCP frame, libfranka's sign: what the robot applies to the environment), ``gripper_pos``
        (normalised, 1 = open). With a controller model this is the newest *published* state
        (``state_rate_hz``), as the robot server sees it."""
        if self.controller is not None and self._published is not None:
            return self._published
        return self._measure()

    def _measure(self) -> dict[str, Any]:
        d = self.data
        pos = d.site_xpos[self._tcp].copy()
        rot = d.site_xmat[self._tcp].reshape(3, 3).copy()
        mujoco.mj_objectVelocity(self.model, d, mujoco.mjtObj.mjOBJ_SITE, self._tcp, self._vel_buf, 0)
        on_robot, about_tcp = self._external_wrench(pos, rot)
        force, torque = -on_robot, -about_tcp  # libfranka: the robot's push on the world is positive
        return {
            "pose": geo.mat_to_pose7(pos, rot),
            "vel": np.concatenate([self._vel_buf[3:], self._vel_buf[:3]]),
            "force": force,
            "torque": torque,
            "gripper_pos": self._gripper,
        }

    def command_pose(self, pose7: np.ndarray) -> bool:
        """Set the impedance controller's target pose (the robot server's ``/pose``); False when
        a reflex lost it. With the ideal controller the equilibrium jumps there at once; with the
        controller model it is approached through the target filter."""
        pose7 = np.asarray(pose7, np.float64)
        if pose7.shape != (7,) or not np.all(np.isfinite(pose7)):
            raise ValueError(f"pose must be 7 finite numbers, got {pose7}")
        if self.in_reflex:
            return False
        q = self._pose_to_joints(pose7, self._joints())
        self._command = q
        if self.controller is None or self.controller.target_filter_tau_s == 0:
            self.data.ctrl[self._act] = q
        return True

    def clear_error(self) -> None:
        """Error recovery: after a reflex the controller starts again holding the measured pose
        (serl_franka_controllers ``starting()``); without one it changes nothing."""
        if self.in_reflex:
            self.in_reflex = False
            self._hold_here()

    def trigger_reflex(self, wrench: np.ndarray | None = None) -> None:
        """The arm stops where it is and ignores commands until ``clear_error``."""
        self.in_reflex = True
        self.reflexes += 1
        self.reflex_wrench = None if wrench is None else np.asarray(wrench, np.float64)
        self._hold_here()

    def _hold_here(self) -> None:
        q = self._joints()
        self._command = q
        self.data.ctrl[self._act] = q

    def advance(self, seconds: float | None = None) -> None:
        """Let simulated time pass (one control period by default); no wall-clock sleeping."""
        n = self._substeps if seconds is None else max(1, round(seconds / self.model.opt.timestep))
        if self.controller is None and not self.jam and not self.payload_kg:
            mujoco.mj_step(self.model, self.data, nstep=n)
            return
        for _ in range(n):
            self._physics_step()

    def _physics_step(self) -> None:
        """One physics step through the controller model: filter the target, apply the payload
        and a jam, step, then check the collision thresholds and publish the state on time."""
        m, d, c = self.model, self.data, self.controller
        dt = m.opt.timestep
        if c is not None and c.target_filter_tau_s > 0 and not self.in_reflex:
            alpha = 1.0 - np.exp(-dt / c.target_filter_tau_s)
            q_d = d.ctrl[self._act]
            d.ctrl[self._act] = q_d + alpha * self._joint_delta(self._command, q_d)
        self._apply_payload()
        self._update_jam()
        mujoco.mj_step(m, d)
        if c is None:
            return
        state = self._measure()
        raw = np.concatenate([state["force"], state["torque"]])
        self._wrench_estimate += (1.0 - np.exp(-dt / c.estimate_tau_s)) * (raw - self._wrench_estimate)
        w = self._wrench_estimate
        if not self.in_reflex and (
            np.any(np.abs(w[:3]) > c.force_threshold_n) or np.any(np.abs(w[3:]) > c.torque_threshold_nm)
        ):
            self.trigger_reflex(w.copy())
        if d.time >= self._next_publish:
            self._published = {**state, "force": w[:3].copy(), "torque": w[3:].copy()}
            self._next_publish = d.time + 1.0 / c.state_rate_hz

    def _update_jam(self) -> None:
        """A jammed peg: once in the hole, the z slide gets an upper limit where it is (a wedged peg
        holds whatever the arm pulls with); released when the jam is."""
        m, j = self.model, self._z_joint
        if self.jam and self._jam_z is None and self.insertion_depth() > JAM_MIN_DEPTH:
            self._jam_z = float(self.data.qpos[self._qadr[2]])
            m.jnt_range[j] = [JAM_FLOOR, self._jam_z]
            m.jnt_limited[j] = True
        elif not self.jam and self._jam_z is not None:
            self._jam_z = None
            m.jnt_limited[j] = False

    @staticmethod
    def _joint_delta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.asarray(a, np.float64) - np.asarray(b, np.float64)
        out[3:] = geo.wrap_angle(out[3:])
        return out

    def _apply_payload(self) -> None:
        """The unmodelled part of the payload as a force at its centre of mass (world frame)."""
        mass = self.payload_kg - self.modelled_load_kg
        body = self._tcp_body
        if mass == 0.0:
            self.data.xfrc_applied[body] = 0.0
            return
        pos, rot = self.data.site_xpos[self._tcp], self.data.site_xmat[self._tcp].reshape(3, 3)
        f = np.array([0.0, 0.0, -mass * GRAVITY])
        at = pos + rot @ self.payload_com
        self.data.xfrc_applied[body, :3] = f
        self.data.xfrc_applied[body, 3:] = np.cross(at - self.data.xipos[body], f)

    def teleport(self, pose7: np.ndarray) -> None:
        """Put the hand at ``pose7`` at rest, with the controller holding it there."""
        q = self._pose_to_joints(np.asarray(pose7, np.float64), np.zeros(6))
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qadr] = q
        self.data.ctrl[self._act] = q
        self._command = q
        self.in_reflex = False
        self._next_publish = 0.0
        self._wrench_estimate[:] = 0.0
        mujoco.mj_forward(self.model, self.data)
        self._published = self._measure()

    def set_compliance(
        self,
        stiffness: tuple[float, float] | None = None,
        damping: tuple[float, float] | None = None,
        force_limit: float | None = None,
        torque_limit: float | None = None,
        force_range: np.ndarray | None = None,
    ) -> None:
        """Reconfigure the impedance controller (the robot server's ``/update_param``).
        ``force_range``: (3, 2) per base axis, the push the controller may make (lowest, highest);
        otherwise ``force_limit`` on every axis."""
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
        if force_range is not None:
            m.actuator_forcerange[self._act[:3]] = np.asarray(force_range, np.float64).reshape(3, 2)

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
        """What the world exerts on the hand and peg (contacts, a jam, the unmodelled payload),
        with the torque about the TCP, both in the TCP frame."""
        d = self.data
        force, torque = np.zeros(3), np.zeros(3)
        mass = self.payload_kg - self.modelled_load_kg
        if mass:
            f = np.array([0.0, 0.0, -mass * GRAVITY])
            force += f
            torque += np.cross(rot @ self.payload_com, f)
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
        if self._jam_z is not None:
            # the z slide's generalized constraint force is a world z force; less the contacts' share
            contacts_z = force[2] - (-mass * GRAVITY if mass else 0.0)
            force[2] += float(d.qfrc_constraint[self._dadr[2]]) - contacts_z
        return rot.T @ force, rot.T @ torque
