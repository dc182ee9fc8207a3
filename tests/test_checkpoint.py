import logging
from dataclasses import replace

import pytest

from shared.config import NetworkConfig, OnlineConfig, PretrainConfig
from shared.learning.agents import create_agent, make_update
from shared.learning.handoff import handoff
from shared.storage.checkpoint import Checkpointer, CheckpointError, load_checkpoint
from tests.helpers import random_batch, state_obs, tiny_config, trees_equal


def trained(cfg, steps=2):
    agent = create_agent(cfg, state_obs(), 2, seed=1)
    update = make_update(cfg, donate=False)
    for i in range(steps):
        agent, _ = update(agent, random_batch(state_obs(), 2, (cfg.utd, 8), seed=i))
    return agent.replace(env_steps=agent.env_steps + 123)


@pytest.mark.slow
def test_round_trip_restores_every_array_and_config(tmp_path):
    cfg = tiny_config("calql", utd=1)
    agent = trained(cfg)
    ck = Checkpointer(tmp_path)
    ck.save(agent, state_obs(), PretrainConfig(agent=cfg))
    ck.close()
    ck = load_checkpoint(tmp_path)
    restored = ck.agent
    assert trees_equal(restored, agent)  # params, target, optimizer moments, rng, counters
    assert restored.config == cfg
    assert int(restored.env_steps) == 123 and int(restored.grad_steps) == 2
    assert ck.config_type == "PretrainConfig" and ck.obs_spec == {"state": ((5,), "float32")}
    assert ck.phase_config(PretrainConfig) == PretrainConfig(agent=cfg) and ck.reward == PretrainConfig().reward
    assert ck.meta.env_steps == 123 and ck.meta.grad_steps == 2 and ck.step == 2
    with pytest.raises(CheckpointError, match="saved by a PretrainConfig run"):
        ck.phase_config(OnlineConfig)
    # a restored agent keeps training with the same compiled update
    make_update(cfg, donate=False)(restored, random_batch(state_obs(), 2, (1, 8)))


def test_corrupt_latest_step_falls_back_to_previous(tmp_path, caplog):
    cfg = tiny_config("sac", utd=1)
    agent = trained(cfg, 1)
    ck = Checkpointer(tmp_path, keep=5)
    ck.save(agent, state_obs(), OnlineConfig(agent=cfg), step=1)
    ck.save(agent.replace(env_steps=agent.env_steps + 1), state_obs(), OnlineConfig(agent=cfg), step=2)
    ck.close()
    for f in (tmp_path / "2" / "agent").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING):
        restored = load_checkpoint(tmp_path).agent
    assert int(restored.env_steps) == int(agent.env_steps)
    assert "unreadable" in caplog.text
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path, step=2)  # an explicit step is never silently replaced


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_checkpoint(tmp_path / "nothing")


def test_calql_to_sac_handoff_keeps_everything_but_alpha(tmp_path, caplog):
    pre_cfg = tiny_config("calql", utd=1)
    pre_cfg = replace(pre_cfg, cql=replace(pre_cfg.cql, lagrange=True))
    pre = trained(pre_cfg, 3)
    ck = Checkpointer(tmp_path)
    ck.save(pre, state_obs(), PretrainConfig(agent=pre_cfg))
    ck.close()
    restored = load_checkpoint(tmp_path).agent
    online_cfg = replace(pre_cfg, algo="sac", utd=4, actor_lr=1e-4)
    with caplog.at_level(logging.INFO, logger="wsrl.checkpoint"):
        online = handoff(restored, online_cfg, state_obs())
    assert "dropping 'cql_alpha'" in caplog.text
    assert "cql_alpha" not in online.aux and online.config.algo == "sac"
    for part in ("actor", "critic", "temperature"):
        assert trees_equal(getattr(online, part), getattr(pre, part))  # incl. Adam moments, counts
    assert trees_equal(online.target_critic, pre.target_critic)
    assert int(online.env_steps) == 0 and int(online.grad_steps) == 0
    make_update(online_cfg, donate=False)(online, random_batch(state_obs(), 2, (4, 8)))


def test_handoff_architecture_mismatch_names_parameter():
    pre = create_agent(tiny_config("calql"), state_obs(), 2)
    wrong = replace(tiny_config("sac"), critic_net=NetworkConfig(hidden_dims=(32, 64)))
    with pytest.raises(CheckpointError, match=r"parameter .critic/params/ensemble/[A-Za-z_0-9/]+kernel. has shape"):
        handoff(pre, wrong, state_obs())
    with pytest.raises(CheckpointError, match="ensemble"):
        handoff(pre, replace(tiny_config("sac"), num_critics=6), state_obs())


def test_handoff_carries_the_state_normalisation(tmp_path):
    enc = replace(tiny_config("calql").encoder, normalize_state=True, state_mean=(1.0,) * 5, state_std=(2.0,) * 5)
    pre = create_agent(replace(tiny_config("calql"), encoder=enc), state_obs(), 2)
    ckpt = Checkpointer(tmp_path / "ck", async_save=False)
    ckpt.save(pre, state_obs(), PretrainConfig(agent=pre.config))
    ckpt.close()
    restored = load_checkpoint(tmp_path / "ck").agent
    assert restored.config.encoder.state_std == (2.0,) * 5
    online = handoff(restored, tiny_config("sac"), state_obs())  # online config leaves the stats unset
    assert online.config.encoder.state_mean == (1.0,) * 5 and online.config.encoder.state_std == (2.0,) * 5
    other = replace(tiny_config("sac").encoder, state_mean=(0.0,) * 5, state_std=(1.0,) * 5)
    with pytest.raises(CheckpointError, match="state normalisation differs"):
        handoff(restored, replace(tiny_config("sac"), encoder=other), state_obs())


def test_handoff_refuses_a_change_of_encoder_sharing():
    from tests.helpers import image_config, image_obs

    cfg = image_config("small_conv", algo="calql", utd=1, num_critics=2)
    pre = create_agent(cfg, image_obs(16), 2)
    online = replace(cfg, algo="sac", encoder=replace(cfg.encoder, share_encoder=True))
    with pytest.raises(ValueError, match="share_encoder is True online but was False in pre-training"):
        handoff(pre, online, image_obs(16))
