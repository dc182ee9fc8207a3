"""Small configs and batches shared by the unit tests."""

from dataclasses import replace

import jax.numpy as jnp
import numpy as np

from shared.config import AgentConfig, EncoderConfig, NetworkConfig

TINY = NetworkConfig(hidden_dims=(32, 32))


def tiny_config(algo="sac", **kw):
    return replace(AgentConfig(algo=algo, num_critics=4, critic_net=TINY, actor_net=TINY), **kw)


def image_config(kind="small_conv", **kw):
    enc = EncoderConfig(
        kind=kind, image_keys=("wrist_1",), base_filters=8, bottleneck_dim=16, num_spatial_features=2, augment_pad=2
    )
    return tiny_config(encoder=enc, **kw)


def state_obs(dim=5):
    return {"state": np.zeros(dim, np.float32)}


def image_obs(size=16, dim=5):
    return {"state": np.zeros(dim, np.float32), "wrist_1": np.zeros((size, size, 3), np.uint8)}


def random_batch(obs_example, action_dim, leading, seed=0):
    rng = np.random.default_rng(seed)

    def o():
        return {
            k: (
                rng.integers(0, 255, leading + v.shape).astype(np.uint8)
                if v.dtype == np.uint8
                else rng.normal(size=leading + v.shape).astype(np.float32)
            )
            for k, v in obs_example.items()
        }

    return {
        "observations": o(),
        "next_observations": o(),
        "actions": rng.uniform(-1, 1, leading + (action_dim,)).astype(np.float32),
        "rewards": rng.normal(size=leading).astype(np.float32),
        "masks": np.ones(leading, np.float32),
        "dones": np.zeros(leading, np.float32),
        "mc_returns": rng.normal(size=leading).astype(np.float32),
    }


def trees_equal(a, b):
    import jax

    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def save_tiny_policy(path, hidden=16):
    """An untrained Cal-QL agent for the 19-D peg state with tiny networks, saved as a checkpoint
    (for commands that take a policy checkpoint)."""
    from shared.config import apply_overrides
    from shared.learning.agents import create_agent
    from shared.presets import peg_sim_pretrain
    from shared.storage.checkpoint import Checkpointer

    cfg = apply_overrides(
        peg_sim_pretrain(),
        [
            f"agent.critic_net.hidden_dims=[{hidden},{hidden}]",
            f"agent.actor_net.hidden_dims=[{hidden},{hidden}]",
            "agent.num_critics=2",
        ],
    )
    obs = {"state": np.zeros(19, np.float32)}
    ck = Checkpointer(path, async_save=False)
    ck.save(create_agent(cfg.agent, obs, 6), obs, cfg)
    ck.close()
    return path


def insert_peg(env, press_steps=5):
    """The scripted expert puts the peg in the hole (then presses on towards the floor), so that
    the next reset starts inside it; returns the tool's height above the target pose."""
    from robot_env.scripted import ScriptedInserter, Skill

    obs, _ = env.reset(options={"eval_pose": 0})
    policy = ScriptedInserter(env.task, Skill.level(1.0), seed=0)
    policy.reset()
    for _ in range(60):
        obs, _, terminated, truncated, _ = env.step(policy(obs))
        if terminated or truncated:
            break
    assert terminated, "the expert did not insert the peg"
    for _ in range(press_steps):
        env.step(np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))  # the tool's z points down the hole
    return env.raw_state["pose"][2] - env.task.target_pose[2]
