"""Gymnasium environments for the robot task: the MuJoCo simulation now, the real Franka next.

Importing the package registers ``PegInsertionSim-v0`` (MuJoCo is imported only when an env
is made).
"""

import gymnasium as gym

SIM_ENV_ID = "PegInsertionSim-v0"

if SIM_ENV_ID not in gym.registry:
    gym.register(id=SIM_ENV_ID, entry_point="robot_env.peg_sim_env:PegInsertionSimEnv")
