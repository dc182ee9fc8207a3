"""Gymnasium environments for the robot task: the MuJoCo simulation and the real Franka.

Importing the package registers ``PegInsertionSim-v0`` and ``Franka-v0`` (MuJoCo and the
hardware libraries are imported only when an env that needs them is made).
"""

import gymnasium as gym

SIM_ENV_ID = "PegInsertionSim-v0"
FRANKA_ENV_ID = "Franka-v0"  # the real arm through the robot server (or the simulated server)

if SIM_ENV_ID not in gym.registry:
    gym.register(id=SIM_ENV_ID, entry_point="robot_env.peg_sim_env:PegInsertionSimEnv")
if FRANKA_ENV_ID not in gym.registry:
    gym.register(id=FRANKA_ENV_ID, entry_point="robot_env.franka_env:FrankaEnv")
