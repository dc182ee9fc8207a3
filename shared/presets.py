"""The paper's settings as named presets (``--preset``): Appendix I's simulation agent, Appendix
J's robot agent, and the simulated peg task's; each an online config and the Cal-QL
pre-training that matches its networks (so the hand-off is exact). The schema and its defaults
are the dataclasses of ``shared/config.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.config import AgentConfig, CQLConfig, EncoderConfig, NetworkConfig, OnlineConfig, PretrainConfig


def paper_sim_online() -> OnlineConfig:
    """Appendix I: SAC, ensemble 10 with LayerNorm, subset-min of 2, UTD 4 with actor delay 4,
    batch 256, actor lr 1e-4, critic lr 3e-4, temperature lr 1e-4, gamma 0.99, K = 5000."""
    # The official code's choices: target subset drawn with replacement, the actor on the min
    # over all critics and on the whole UTD x batch, one output layer shared by the critics.
    agent = AgentConfig(
        algo="sac",
        gamma=0.99,
        subsample_with_replacement=True,
        actor_q="min",
        actor_batch="all",
        critic_output="shared",
    )
    return OnlineConfig(agent=agent)


def _calql_pretrain(online: AgentConfig, steps: int) -> PretrainConfig:
    """Cal-QL with the online agent's networks (so the hand-off is exact), fixed alpha 5,
    10 sampled actions with importance sampling, and a max-over-10 target backup."""
    return PretrainConfig(
        agent=replace(online, algo="calql", utd=1, num_backup_actions=10, cql=CQLConfig(alpha=5.0)),
        steps=steps,
    )


def paper_sim_pretrain() -> PretrainConfig:
    """Offline Cal-QL as in the paper's simulation runs (250k steps), with the official code's
    penalty on a random 2 of the 10 critics each step."""
    cfg = _calql_pretrain(paper_sim_online().agent, 250_000)
    return replace(cfg, agent=replace(cfg.agent, cql=replace(cfg.agent.cql, penalty_critics=2)))


def _robot_task_sac(**networks: Any) -> AgentConfig:
    """Appendix J's online SAC for the peg task (gamma 0.98, every learning rate 3e-4; ensemble
    10 with subset 2, UTD 4, batch 256 are AgentConfig's defaults), on the robot's or the
    simulation's networks."""
    return AgentConfig(algo="sac", gamma=0.98, actor_lr=3e-4, critic_lr=3e-4, temperature_lr=3e-4, **networks)


def robot_online() -> OnlineConfig:
    """Appendix J: Franka peg insertion. gamma 0.98, lr 3e-4, 2-block ResNet MLPs with
    LayerNorm, ensemble 10 (subset 2), UTD 4, batch 256, ResNet-10 on both wrist cameras."""
    net = NetworkConfig(hidden_dims=(256, 256), use_layer_norm=True, residual_blocks=2)
    enc = EncoderConfig(kind="resnet10", image_keys=("wrist_1", "wrist_2"), freeze_trunk=True)
    agent = _robot_task_sac(critic_net=net, actor_net=net, encoder=enc)
    # 200k transitions of two 128 px cameras are 20 GB of frames: on disk, not in RAM.
    return OnlineConfig(agent=agent, buffer_capacity=200_000, replay_frames_on_disk=True)


def robot_pretrain() -> PretrainConfig:
    """Offline Cal-QL for the robot: fixed alpha 5, 40k gradient steps."""
    return _calql_pretrain(robot_online().agent, 40_000)


def peg_sim_online() -> OnlineConfig:
    """The robot task's settings (gamma 0.98, lr 3e-4, ensemble 10 with subset 2, UTD 4, batch
    256) on the simulated peg insertion's 19-D state, with plain 256x256 LayerNorm MLPs."""
    return OnlineConfig(agent=_robot_task_sac(encoder=EncoderConfig(normalize_state=True)), buffer_capacity=200_000)


def peg_sim_pretrain() -> PretrainConfig:
    """Offline Cal-QL for the simulated peg insertion: fixed alpha 5, 40k gradient steps."""
    return _calql_pretrain(peg_sim_online().agent, 40_000)


PRESETS = {
    "paper_sim": (paper_sim_pretrain, paper_sim_online),
    "robot": (robot_pretrain, robot_online),
    "peg_sim": (peg_sim_pretrain, peg_sim_online),
}
