"""Short end-to-end learning tests with small networks (minutes on 2 CPU cores)."""

import gymnasium as gym
import jax
import numpy as np
import pytest

from learner.pretrain import pretrain
from shared.config import AgentConfig, CQLConfig, NetworkConfig, PretrainConfig, RewardConfig
from shared.learning.agents import act, create_agent, make_update
from shared.metrics import read_jsonl
from shared.storage.replay_buffer import ReplayBuffer
from tests.tiny_tasks import PointReach, collect_mixed_dataset, evaluate_success

pytestmark = pytest.mark.slow


def run_sac_pendulum(env_steps: int, seed: int = 0) -> float:
    net = NetworkConfig(hidden_dims=(128, 128))
    cfg = AgentConfig(
        algo="sac",
        num_critics=2,
        num_min_critics=2,
        utd=4,
        batch_size=128,
        actor_lr=3e-4,
        critic_lr=3e-4,
        temperature_lr=3e-4,
        critic_net=net,
        actor_net=net,
    )
    env = gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), np.float32(-1.0), np.float32(1.0))
    obs_of = lambda o: {"state": np.asarray(o, np.float32)}
    o, _ = env.reset(seed=seed)
    agent = create_agent(cfg, obs_of(o), 1, seed)
    update = make_update(cfg, donate=False)
    buf = ReplayBuffer({"state": ((3,), "float32")}, 1, env_steps, cfg.gamma)
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    for t in range(env_steps):
        if t < 1000:
            a = rng.uniform(-1, 1, 1).astype(np.float32)
        else:
            key, sub = jax.random.split(key)
            a = act(agent, {"state": obs_of(o)["state"][None]}, sub)[0]
        o2, r, term, trunc, _ = env.step(a)
        buf.insert(
            {
                "observations": obs_of(o),
                "actions": a,
                "rewards": float(r),
                "next_observations": obs_of(o2),
                "masks": 0.0 if term else 1.0,
                "dones": term or trunc,
            }
        )
        o = o2
        if term or trunc:
            o, _ = env.reset()
        if t >= 1000:
            agent, _ = update(agent, buf.sample(cfg.batch_size, rng, leading=(cfg.utd,)))
    returns = []
    for ep in range(5):
        o, _ = env.reset(seed=1000 + ep)
        total, done = 0.0, False
        while not done:
            a = act(agent, {"state": obs_of(o)["state"][None]}, key, deterministic=True)[0]
            o, r, term, trunc, _ = env.step(a)
            total += float(r)
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns))


def test_sac_learns_pendulum():
    # Random policy: about -1200; solved: about -150.
    avg = run_sac_pendulum(env_steps=6000)
    print(f"SAC Pendulum-v1 average return over 5 episodes: {avg:.1f}")
    assert avg > -400


def test_calql_beats_the_average_dataset_trajectory(tmp_path):
    """PointReach (tests/tiny_tasks.py): a 2-D point must reach a goal disc; sparse reward.
    The dataset mixes noisy goal-seeking episodes with aimless ones."""
    reward = RewardConfig(scale=1.0, bias=-1.0)
    buf, data_success = collect_mixed_dataset(episodes=300, reward=reward, gamma=0.95, seed=0)
    net = NetworkConfig(hidden_dims=(64, 64))
    agent_cfg = AgentConfig(
        algo="calql",
        gamma=0.95,
        utd=1,
        num_critics=2,
        num_min_critics=2,
        num_backup_actions=4,
        actor_lr=3e-4,
        critic_lr=3e-4,
        temperature_lr=3e-4,
        critic_net=net,
        actor_net=net,
        cql=CQLConfig(alpha=1.0, num_actions=4),
    )
    cfg = PretrainConfig(agent=agent_cfg, reward=reward, steps=3000, log_every=500, checkpoint_every=100_000, seed=0)
    agent = pretrain(
        cfg,
        buf,
        tmp_path,
        progress=False,
        tensorboard=False,
        eval_every=1500,
        eval_fn=lambda a: {"success": evaluate_success(a, PointReach(reward), 20, seed=7)},
    )
    logged = [r["eval/success"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "eval/success" in r]
    assert len(logged) == 2  # at steps 1500 and 3000
    success = evaluate_success(agent, PointReach(reward), episodes=50, seed=123)
    print(f"dataset success {data_success:.2f}, Cal-QL policy success {success:.2f}")
    assert success > data_success + 0.2
