"""Defaults both processes (and every launcher) share, so they agree without being told.

Entry points use these as their flags' defaults; library code takes every value as an argument.
"""

from __future__ import annotations

WARMUP_STEPS = 5_000  # K: the paper's robot setting (Appendix J), the learner's and the actor's default
DATA_PORT = 5555  # the learner's ROUTER socket: HELLO, chunks, acks, stats
WEIGHTS_PORT = 5556  # the learner's PUB socket: policy weights
TASK = "peg_insertion"  # robot_env/tasks/<TASK>.json
SIM_ENV_ID = "PegInsertionSim-v0"  # registered by robot_env
MAZE_ENV_ID = "PointMazeSim-v0"  # the study's maze (robot_env/point_maze.py)
FRANKA_ENV_ID = "Franka-v0"  # the real arm through the robot server (or the simulated server)
