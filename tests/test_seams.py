"""The seams between the parts: the update schedule, the reward-settings check, the contract a
refused actor is told about, the task-env protocol, and the learner's typed checkpoint."""

import re
import threading

import gymnasium as gym
import numpy as np
import pytest

import robot_env
from learner.checkpoint import LearnerCheckpoints
from learner.ledger import Ledger
from robot_env.contract import TaskEnv, keeps_time, task_env
from shared.config import OnlineConfig, PretrainConfig, RewardConfig, check_reward_settings
from shared.learning.agents import create_agent
from shared.learning.schedule import owed_updates
from shared.storage.checkpoint import Checkpointer, CheckpointError
from shared.storage.replay_buffer import ReplayBuffer
from shared.wire.transport import contract_differences, plain_contract
from tests.helpers import state_obs, tiny_config, trees_equal


def test_owed_updates_follow_the_warmup_and_utd_schedule():
    # K = 100, UTD 4: nothing owed up to and at K; then one update per env step beyond K.
    assert owed_updates(0, 0, 100, 4) == 0
    assert owed_updates(99, 0, 100, 4) == 0
    assert owed_updates(100, 0, 100, 4) == 0
    assert owed_updates(101, 0, 100, 4) == 1
    assert owed_updates(150, 0, 100, 4) == 50
    assert owed_updates(150, 4 * 45, 100, 4) == 5  # 45 of the 50 updates paid
    assert owed_updates(150, 4 * 50, 100, 4) == 0
    assert owed_updates(0, 0, 0, 4) == 0 and owed_updates(3, 4, 0, 4) == 2  # no warmup


def test_reward_settings_mismatch_names_each_setting():
    check_reward_settings(RewardConfig(), RewardConfig(), "the checkpoint")  # equal: nothing raised
    with pytest.raises(ValueError) as e:
        check_reward_settings(RewardConfig(scale=1.0, bias=-1.0), RewardConfig(scale=1.0, bias=0.0), "ckpt X")
    msg = str(e.value)
    assert "bias: -1.0 in the learner's config, 0.0 in ckpt X" in msg
    assert "scale" not in msg  # only what differs is named
    assert "--set reward.bias=0.0" in msg


def test_contract_differences_name_the_path_and_both_values():
    mine = {"task": "a", "obs_spec": {"state": [(19,), "float32"]}, "policy": {"actor_net": {"hidden": (256, 256)}}}
    same = plain_contract(mine)  # what arrives over msgpack: lists, not tuples
    assert contract_differences(mine, same) == []
    theirs = plain_contract({**mine, "task": "b", "policy": {"actor_net": {"hidden": (64, 64)}}})
    assert contract_differences(mine, theirs) == [
        "policy.actor_net.hidden: [256, 256] (learner) vs [64, 64] (actor)",
        "task: 'a' (learner) vs 'b' (actor)",
    ]
    assert contract_differences(mine, None) == ["the peer sent no contract (an older release?)"]
    extra = contract_differences(mine, {**same, "extra": 1})
    assert extra == ["extra: None (learner) vs 1 (actor)"]


def test_task_env_protocol_holds_for_the_simulation_and_refuses_other_envs():
    env = gym.make(robot_env.SIM_ENV_ID)
    try:
        base = task_env(env)
        assert isinstance(base, TaskEnv) and base.task.name == "peg_insertion"
        assert base.end_on_success and base.reward_config == RewardConfig()
        assert not keeps_time(env)
    finally:
        env.close()
    plain = gym.make("CartPole-v1")
    with pytest.raises(TypeError, match="not a task env"):
        task_env(plain)


def _buffer_with(n):
    buf = ReplayBuffer({"state": ((5,), "float32")}, 2, 64, 0.99, -1.0)
    rng = np.random.default_rng(0)
    obs = {"state": rng.normal(size=5).astype(np.float32)}
    for i in range(n):
        nxt = {"state": rng.normal(size=5).astype(np.float32)}
        buf.insert(
            {
                "observations": obs,
                "actions": rng.uniform(-1, 1, 2).astype(np.float32),
                "rewards": -1.0,
                "next_observations": nxt,
                "masks": 1.0,
                "dones": i == n - 1,
            }
        )
        obs = nxt
    return buf


def test_learner_checkpoint_round_trip(tmp_path):
    cfg = OnlineConfig(agent=tiny_config())
    agent = create_agent(cfg.agent, state_obs(), 2)
    buf = _buffer_with(7)
    ledger = Ledger()
    ledger.add("robot", "s1", 0, 7)
    ckpts = LearnerCheckpoints(tmp_path, keep=2)
    assert not ckpts.exist()
    step, committed, durable = ckpts.save(
        agent, cfg, buf, ledger, threading.Lock(), grad_steps=12, run="run1", task="t", weights_version=3
    )
    ckpts.close()
    assert step == 7 + 12 and committed.to_json() == ledger.to_json() and ckpts.exist()
    assert durable.transitions() == 0  # a first checkpoint: nothing survives its damage
    state = LearnerCheckpoints(tmp_path, keep=2).restore(capacity=64)
    assert state.step == step and state.env_steps == 7 and state.config == cfg
    assert (state.meta.run, state.meta.task, state.meta.weights_version) == ("run1", "t", 3)
    assert state.ledger.to_json() == ledger.to_json() and len(state.buffer) == len(buf)
    assert trees_equal(state.agent.actor.params, agent.actor.params) and int(state.agent.env_steps) == 7
    np.testing.assert_array_equal(state.buffer.actions[: len(buf)], buf.actions[: len(buf)])


def test_a_pretraining_checkpoint_is_not_a_learner_checkpoint(tmp_path):
    agent = create_agent(tiny_config("calql", utd=1), state_obs(), 2)
    ck = Checkpointer(tmp_path / "checkpoints", async_save=False)
    ck.save(agent, state_obs(), PretrainConfig(agent=tiny_config("calql", utd=1)))
    ck.close()
    with pytest.raises(CheckpointError, match="no usable learner checkpoint") as e:
        LearnerCheckpoints(tmp_path, keep=2).restore(capacity=64)
    assert "not a learner checkpoint" in str(e.value)


def test_imports_point_one_way():
    """shared/ imports none of the others; robot_env/ only shared/; actor/ and learner/ never
    each other (a module-level or a lazy import alike): docs/architecture.md's rule."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    allowed = {
        "shared": {"shared"},
        "robot_env": {"shared", "robot_env"},
        "actor": {"shared", "robot_env", "actor"},
        "learner": {"shared", "robot_env", "learner"},
    }
    wrong = []
    for package, ok in allowed.items():
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in allowed and top not in ok:
                        wrong.append(f"{path.relative_to(root)} imports {name}")
    assert not wrong, wrong


def test_every_launcher_runs_a_named_command_that_exists():
    """Each launch/*.sh ends by running one of pyproject's [project.scripts], which names a real
    ``main`` taking ``argv`` (the launchers and the console scripts stay one set)."""
    import importlib
    import inspect
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        assert "argv" in inspect.signature(fn).parameters, name
    used = set()
    for sh in sorted((root / "launch").glob("*.sh")):
        if sh.name in ("install.sh", "lock.sh", "test.sh"):  # set-up and the test command
            continue
        m = re.search(r'^exec "\$ROOT/\.venv/bin/([\w-]+)" "\$@"$', sh.read_text(), re.M)
        assert m and m.group(1) in scripts, f"{sh.name} does not run a named command"
        used.add(m.group(1))
    assert used == set(scripts), f"commands without a launcher: {set(scripts) - used}"


def test_experiment_files_overrides_and_their_refusals(tmp_path):
    """An experiment file's section over a preset, dotted overrides read as YAML, the saved file
    read back whole, and each kind of bad input refused with the field's path."""
    from shared.config import apply_overrides, read_config_file, write_config_file
    from shared.presets import peg_sim_online, robot_online

    path = tmp_path / "experiment.yaml"
    path.write_text("learner:\n  warmup_steps: 300\n  agent: {num_critics: 3, critic_net: {hidden_dims: [8, 8]}}\n")
    cfg = read_config_file(path, OnlineConfig, "learner", base=robot_online())
    assert cfg.warmup_steps == 300 and cfg.agent.num_critics == 3 and cfg.agent.critic_net.hidden_dims == (8, 8)
    # every field the section does not name keeps the preset's value
    assert cfg.agent.encoder == robot_online().agent.encoder and cfg.agent.utd == robot_online().agent.utd
    cfg = apply_overrides(cfg, ["agent.critic_lr=1e-3", "agent.encoder.pretrained_path=null", "free_running=true"])
    assert cfg.agent.critic_lr == 0.001 and isinstance(cfg.agent.critic_lr, float) and cfg.free_running
    saved = write_config_file(tmp_path / "saved.yaml", {"learner": cfg})
    assert read_config_file(saved, OnlineConfig, "learner") == cfg  # whole, without a base
    assert read_config_file(saved, OnlineConfig, "learner", base=peg_sim_online()) == cfg
    for bad, says in (
        (["agent.num_critics=abc"], "agent.num_critics"),
        (["agent.algo=ppo"], "agent.algo"),
        (["agent.nope=1"], "no config field 'agent.nope'"),
        (["warmup_steps"], "not of the form path=value"),
        (["agent.num_min_critics=20"], "need 1 <= num_min_critics <= num_critics"),  # AgentConfig's own check
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            apply_overrides(cfg, bad)
    path.write_text("actor:\n  loop: {hz: 10}\n")
    with pytest.raises(ValueError, match="no 'learner' section"):
        read_config_file(path, OnlineConfig, "learner")
    path.write_text("learner:\n  agent: {utdd: 4}\n")
    with pytest.raises(ValueError, match="utdd"):
        read_config_file(path, OnlineConfig, "learner", base=robot_online())


def test_the_sim_jobs_caches_are_named_by_what_makes_them(tmp_path):
    """The default job keeps its pre-training where the docs say; another seed, step count or
    agent setting gets its own folder, and so does a classifier made with other settings."""
    from learner.sim_assets import DEFAULT_PRETRAIN_STEPS, agent_overrides, classifier_cache, pretrain_cache

    cache = tmp_path / "peg_sim_calql_obs2"
    default = agent_overrides(2, [])
    assert pretrain_cache(cache, 0, DEFAULT_PRETRAIN_STEPS, default, default) == cache
    seed3 = pretrain_cache(cache, 3, DEFAULT_PRETRAIN_STEPS, default, default)
    seed4 = pretrain_cache(cache, 4, DEFAULT_PRETRAIN_STEPS, default, default)
    ten = pretrain_cache(cache, 0, DEFAULT_PRETRAIN_STEPS, agent_overrides(10, []), default)
    short = pretrain_cache(cache, 0, 100, default, default)
    assert len({cache, seed3, seed4, ten, short}) == 5 and seed3.parent == cache.parent
    assert seed3 == pretrain_cache(cache, 3, DEFAULT_PRETRAIN_STEPS, list(default), default)  # stable
    assert classifier_cache(cache, 64) != classifier_cache(cache, 32)
