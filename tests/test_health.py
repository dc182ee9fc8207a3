"""The learner's health monitor (learner/alarms.py, learner/snapshots.py, learner/health.py) against hand-computed values: each alarm's
threshold, its patience and its clearing, the success-drop test, the snapshots kept for a
rollback, and the probes' storage."""

import math

import numpy as np
import pytest

from learner.alarms import HealthMonitor, success_drop_z
from learner.health import load_batch, save_batch
from learner.snapshots import Snapshots
from shared.config import HealthConfig, OnlineConfig
from tests.test_replay_buffer import episode, make


def monitor(**kw):
    return HealthMonitor(HealthConfig(**kw), value_range=50.0)  # reward scale 1, gamma 0.98


def raised(transitions):
    return [a.name for kind, a in transitions if kind == "raised"]


def cleared(transitions):
    return [a.name for kind, a in transitions if kind == "cleared"]


def test_the_value_range_comes_from_the_reward_and_gamma():
    m = HealthMonitor.for_config(OnlineConfig())
    assert m.value_range == pytest.approx(1.0 / (1.0 - OnlineConfig().agent.gamma))


def test_q_collapse_needs_the_drop_on_patience_diagnoses_in_a_row_and_clears():
    m = monitor(q_drop=0.25, patience=2)  # limit: the hand-off's -10 minus 0.25 x 50 = -22.5
    assert m.on_diagnosis({"offline_probe/q": -10.0}) == []  # the baseline
    assert raised(m.on_diagnosis({"offline_probe/q": -23.0})) == []  # one diagnosis over
    assert raised(m.on_diagnosis({"offline_probe/q": -20.0})) == []  # the streak breaks
    assert raised(m.on_diagnosis({"offline_probe/q": -23.0}, env_steps=300)) == []
    out = m.on_diagnosis({"offline_probe/q": -24.0}, env_steps=400)
    assert raised(out) == ["Q_COLLAPSE"]
    alarm = out[0][1]
    assert alarm.value == -24.0 and alarm.threshold == pytest.approx(-22.5)
    assert alarm.since_env_steps == 300  # the streak's first diagnosis
    assert m.on_diagnosis({"offline_probe/q": -30.0}) == []  # raised once, not again
    assert cleared(m.on_diagnosis({"offline_probe/q": -12.0})) == ["Q_COLLAPSE"]
    # Q rising is what a policy that improves does: never an alarm
    assert m.on_diagnosis({"offline_probe/q": 0.0}) == []


def test_td_blowup_against_its_hand_off_value_and_the_floor():
    m = monitor(td_factor=5.0, td_floor=1.0, patience=1)
    m.on_diagnosis({"offline_probe/td_error": 0.1, "online_probe/td_error": 0.4})
    # offline: max(5 x 0.1, 1.0) = 1.0; online: max(5 x 0.4, 1.0) = 2.0
    assert m.on_diagnosis({"offline_probe/td_error": 0.9, "online_probe/td_error": 1.9}) == []
    out = m.on_diagnosis({"offline_probe/td_error": 0.9, "online_probe/td_error": 2.5})
    assert raised(out) == ["TD_BLOWUP"] and out[0][1].threshold == pytest.approx(2.0)
    assert "online_probe" in out[0][1].message


def test_non_finite_values_raise_and_an_unknown_return_does_not():
    m = monitor()
    assert raised(m.on_update({"critic_loss": 1.0, "q": -3.0})) == []
    assert raised(m.on_update({"critic_loss": math.nan, "q": -3.0})) == ["NON_FINITE"]
    assert cleared(m.on_update({"critic_loss": 1.0})) == ["NON_FINITE"]
    # q_minus_return is NaN when no probe row's episode finished: not an alarm
    assert m.on_diagnosis({"online_probe/q": -1.0, "online_probe/q_minus_return": math.nan}) == []
    assert raised(m.on_diagnosis({"online_probe/q": math.inf})) == ["NON_FINITE"]


def test_the_success_drop_z_statistic_by_hand():
    # 18/20 before, 12/20 now: pooled 0.75, se sqrt(0.75 x 0.25 x 2/20) = 0.13693, z = 0.3/0.13693
    assert success_drop_z(18, 12, 20) == pytest.approx(0.3 / math.sqrt(0.75 * 0.25 * 0.1))
    # 18/20 against 6/20: pooled 0.6, z = 0.6 / sqrt(0.6 x 0.4 x 0.1) = 3.873
    assert success_drop_z(18, 6, 20) == pytest.approx(3.873, abs=1e-3)
    assert success_drop_z(20, 20, 20) == 0.0 and success_drop_z(0, 0, 20) == 0.0


def live(m, successes, chatter=0.2):
    """Live-policy episodes of 10 env steps each, ending at env steps 10, 20, ..."""
    out = []
    for i, s in enumerate(successes):
        stats = {"success": float(s), "warmup_fraction": 0.0, "chattering": chatter, "global_env_steps": 10 * (i + 1)}
        out += m.on_episode(stats)
    return out


def test_success_drop_compares_the_last_window_with_the_one_before():
    m = monitor(success_window=20, success_drop=0.3)
    # warmup episodes (the pre-trained policy) never enter the windows
    for _ in range(30):
        m.on_episode({"success": 0.0, "warmup_fraction": 1.0, "chattering": 0.2})
    assert m.window_success() is None
    # 18/20 then 12/20: a drop of 0.3 but z 2.19 < 3.5, noise at this size
    assert raised(live(m, [1] * 18 + [0] * 2 + [1] * 12 + [0] * 8)) == []
    m = monitor(success_window=20, success_drop=0.3)
    out = live(m, [1] * 18 + [0] * 2 + [1] * 6 + [0] * 14)  # 18/20 then 6/20: z 3.87
    assert raised(out) == ["SUCCESS_DROP"]
    assert out[0][1].value == pytest.approx(0.3) and "6/20" in out[0][1].message
    assert out[0][1].since_env_steps == 200  # the good window ended with the 20th episode
    assert m.window_success() == pytest.approx(0.3)
    # a policy that stays broken keeps it raised (against the window before it looks steady) ...
    assert live(m, [1] * 4 + [0] * 16) == [] and "SUCCESS_DROP" in m.active
    # ... until a window is back within 0.3 of the 18/20 it fell from (0.6): at most 11/20 here
    assert live(m, [1] * 11 + [0] * 9) == [] and "SUCCESS_DROP" in m.active
    assert cleared(live(m, [1] * 14 + [0] * 6)) == ["SUCCESS_DROP"]  # 14/20 on the way


def test_chattering_against_the_warmups_own():
    m = monitor(success_window=20, chattering_factor=2.0, chattering_floor=0.5)
    for c in (0.2, 0.4):  # warmup: mean 0.3, so the limit is max(2 x 0.3, 0.5) = 0.6
        m.on_episode({"success": 1.0, "warmup_fraction": 0.5, "chattering": c})
    assert raised(live(m, [1] * 20, chatter=0.55)) == []
    out = live(m, [1] * 20, chatter=0.7)
    assert "CHATTERING" in raised(out)
    chat = next(a for k, a in out if a.name == "CHATTERING")
    assert chat.threshold == pytest.approx(0.6)


def test_after_a_rollback_the_windows_start_again():
    m = monitor(success_window=20)
    live(m, [1] * 20 + [0] * 20)
    assert "SUCCESS_DROP" in m.active
    m.after_rollback()
    assert not m.active and m.window_success() is None


def test_snapshots_keep_the_hand_off_the_newest_and_the_best(tmp_path):
    from shared.learning.agents import create_agent
    from tests.helpers import state_obs, tiny_config

    cfg = OnlineConfig(agent=tiny_config())
    obs = state_obs()
    agent = create_agent(cfg.agent, obs, 2, seed=0)
    snaps = Snapshots(tmp_path, keep=2)
    scores = {0: None, 100: 0.5, 200: 0.9, 300: 0.4, 400: 0.6}
    for step, score in scores.items():
        snaps.save(agent, obs, cfg, step, {"env_steps": step // 4, "weights_version": step, "score": score})
    # 100 goes: not among the newest two (300, 400), not the best (200), not the hand-off (0)
    assert sorted(snaps.index) == [0, 200, 300, 400]
    assert snaps.best() == 200
    # saved at env steps 0, 50, 75, 100: by 40 only the hand-off (no score), by 80 200 and 300
    assert snaps.best(before_env_steps=40) is None
    assert snaps.best(before_env_steps=80) == 200
    # a better newer one: the best overall is 500 now, and 200 stays as the best of the older ones
    snaps.save(agent, obs, cfg, 500, {"env_steps": 125, "weights_version": 500, "score": 1.0})
    assert sorted(snaps.index) == [0, 200, 400, 500] and snaps.best() == 500
    assert snaps.best(before_env_steps=110) == 200  # before the newest: still a target
    restored = snaps.load(200)
    assert int(restored.grad_steps) == int(agent.grad_steps)
    with pytest.raises(KeyError, match="no snapshot 100"):
        snaps.load(100)
    snaps.close()
    again = Snapshots(tmp_path, keep=2)  # the index is read back
    assert sorted(again.index) == [0, 200, 400, 500] and again.best() == 500
    again.close()


def test_a_probe_round_trips_through_its_file(tmp_path):
    batch = {
        "observations": {"state": np.arange(6, dtype=np.float32).reshape(3, 2)},
        "actions": np.ones((3, 1), np.float32),
        "mc_returns": np.array([np.nan, -1.0, 0.0], np.float32),
    }
    got = load_batch(save_batch(tmp_path / "p.npz", {"offline_probe": batch}))["offline_probe"]
    np.testing.assert_array_equal(got["observations"]["state"], batch["observations"]["state"])
    np.testing.assert_array_equal(got["mc_returns"], batch["mc_returns"])
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_online_probe_is_the_first_transitions_still_stored_in_arrival_order():
    buf = make(capacity=5)
    episode(buf, 0, 2, success=False)  # slots 0 (reset), 1, 2: observations 0 -> 1 -> 2
    assert buf.first(3) is None  # two transitions so far
    first = buf.first(2)
    assert first["observations"]["state"][:, 0].tolist() == [0.0, 1.0]
    episode(buf, 10, 2, success=False)  # slots 3 (reset), 4, then 0 again: the ring wraps
    # slot 0 held the first episode's reset observation, so its first transition is gone; the
    # survivors in arrival order: 1 -> 2, 10 -> 11, 11 -> 12
    got = buf.first(3)
    assert got["observations"]["state"][:, 0].tolist() == [1.0, 10.0, 11.0]
    assert got["next_observations"]["state"][:, 0].tolist() == [2.0, 11.0, 12.0]


def test_the_lr_spike_sabotage_multiplies_each_updates_parameter_change():
    import jax

    from learner.health import params_copy, spiked
    from shared.learning.agents import create_agent, make_update
    from tests.helpers import random_batch, state_obs, tiny_config

    cfg = tiny_config()
    obs = state_obs()
    agent = create_agent(cfg, obs, 2, seed=0)
    before = params_copy(agent)
    after, _ = make_update(cfg, donate=False)(agent, random_batch(obs, 2, (cfg.utd, cfg.batch_size)))
    out = spiked(before, after, 30.0)
    for b, a, o in zip(
        jax.tree.leaves(before),
        jax.tree.leaves((after.actor.params, after.critic.params)),
        jax.tree.leaves((out.actor.params, out.critic.params)),
        strict=True,
    ):
        np.testing.assert_allclose(
            np.asarray(o), np.asarray(b) + 30.0 * (np.asarray(a) - np.asarray(b)), rtol=1e-5, atol=1e-6
        )
    assert out.critic.opt_state is after.critic.opt_state  # only the parameters move
