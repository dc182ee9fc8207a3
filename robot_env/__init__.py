"""Gymnasium environments for the robot task: the MuJoCo simulation and the real Franka.

Importing the package registers ``PegInsertionSim-v0``, ``Franka-v0`` and the study's
``PointMazeSim-v0`` (MuJoCo and the
hardware libraries are imported only when an env that needs them is made).
"""

import os

import gymnasium as gym

from shared.defaults import FRANKA_ENV_ID, MAZE_ENV_ID, SIM_ENV_ID

__all__ = ["FRANKA_ENV_ID", "MAZE_ENV_ID", "SIM_ENV_ID", "default_gl_backend"]


def default_gl_backend() -> None:
    """Offscreen rendering without a display: MuJoCo picks its OpenGL backend once, when
    ``mujoco`` is first imported, and its default (GLFW) needs a display. So the default must be
    set here, before any module of this package imports mujoco: EGL (Mesa's software EGL on a
    CPU, NVIDIA's on a GPU box). An explicit ``MUJOCO_GL`` always wins."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"


default_gl_backend()

if SIM_ENV_ID not in gym.registry:
    gym.register(id=SIM_ENV_ID, entry_point="robot_env.peg_sim_env:PegInsertionSimEnv")
if FRANKA_ENV_ID not in gym.registry:
    gym.register(id=FRANKA_ENV_ID, entry_point="robot_env.franka_env:FrankaEnv")
if MAZE_ENV_ID not in gym.registry:
    gym.register(id=MAZE_ENV_ID, entry_point="robot_env.point_maze:PointMazeSimEnv")
