"""The actor's control loop against a real in-process ingest server (sockets on localhost)."""

import json
import threading
import time

import gymnasium as gym
import jax
import numpy as np
import pytest

import robot_env
from actor.loop import ControlLoop, LoopConfig
from actor.sender import TransitionSender
from learner.ingest import IngestServer
from learner.ledger import Ledger
from robot_env.contract import RobotEnvError
from robot_env.intervention import InterventionWrapper
from shared.learning.agents import create_agent
from shared.rate import RateKeeper
from shared.storage.replay_buffer import ReplayBuffer
from shared.wire.transport import LearnerSockets, free_port
from tests.helpers import tiny_config

pytestmark = pytest.mark.realtime  # the control loop's clock and a socket server

TAKEOVER = np.array([0.0, 0.0, -1.0, 0.0, 0.0, 0.0], np.float32)


class EveryThirdStep:
    """A person (a scripted device) taking over every third step."""

    def __init__(self):
        self.t = 0

    def command(self, obs):
        self.t += 1
        return TAKEOVER if self.t % 3 == 0 else None

    def reset(self):
        pass

    def close(self):
        pass


def _serve(tmp_path):
    port = free_port()
    socks = LearnerSockets("127.0.0.1", port, free_port(), None)
    buf = ReplayBuffer({"state": ((19,), "float32")}, 6, 1000, 0.98)
    info = {"run": "r", "grad_steps": 0, "warmup_steps": 10**6, "utd": 4, "weights_version": 0}
    server = IngestServer(socks.data, buf, Ledger(), "fp", lambda: info).start()
    sender = TransitionSender("127.0.0.1", port, "a", "fp", tmp_path / "spool").start()
    return socks, buf, server, sender


def _run(tmp_path, env, params_of=lambda agent: agent.actor.params, **loop_kw):
    """A control loop over ``env`` feeding a real in-process ingest server; returns what it did."""
    socks, buf, server, sender = _serve(tmp_path)
    agent = create_agent(tiny_config(), {"state": np.zeros(19, np.float32)}, 6)
    max_steps = loop_kw.pop("max_steps")
    loop = ControlLoop(
        env, agent.nets["actor"], params_of(agent), sender, None, LoopConfig(hz=0, max_steps=max_steps), **loop_kw
    )
    try:
        summary = loop.run()
        assert sender.close(drain_timeout=20)
    finally:
        server.stop()
        socks.close()
    return summary, buf, server


def test_interventions_are_recorded_and_nan_actions_hold(tmp_path):
    # A policy whose parameters went NaN: every action it proposes is refused and held.
    summary, buf, server = _run(
        tmp_path,
        InterventionWrapper(gym.make(robot_env.SIM_ENV_ID), EveryThirdStep()),
        params_of=lambda a: jax.tree.map(lambda x: np.full_like(x, np.nan), a.actor.params),
        max_steps=30,
    )
    # The policy is asked every step (the takeover happens inside the env's step).
    assert summary["steps"] == 30 and summary["invalid_actions"] == 30
    assert server.counters["intervened_steps"] == 10
    actions = buf.actions[buf.valid]
    taken_over = np.all(actions == TAKEOVER, axis=1)
    assert taken_over.sum() == 10 and np.all(actions[~taken_over] == 0.0)
    # The learner's buffer holds the flag on exactly the steps the person took.
    np.testing.assert_array_equal(buf.intervened[buf.valid], taken_over)
    assert buf.stats()["intervened"] == 10


def test_a_paced_simulated_actor_waits_for_the_learners_schedule(tmp_path):
    # With --max-learner-lag the actor holds until the learner's welcome names its warmup and
    # UTD; before this it ran on and could finish its steps before the learner started.
    port = free_port()
    sender = TransitionSender("127.0.0.1", port, "a", "fp", tmp_path / "spool").start()
    agent = create_agent(tiny_config(), {"state": np.zeros(19, np.float32)}, 6)
    cfg = LoopConfig(hz=0, max_steps=20, max_learner_lag=4)
    loop = ControlLoop(gym.make(robot_env.SIM_ENV_ID), agent.nets["actor"], agent.actor.params, sender, None, cfg)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(loop.run()))
    thread.start()
    socks = server = None
    try:
        time.sleep(1.0)
        assert loop.steps == 0 and thread.is_alive()
        socks = LearnerSockets("127.0.0.1", port, free_port(), None)
        buf = ReplayBuffer({"state": ((19,), "float32")}, 6, 1000, 0.98)
        info = {"run": "r", "grad_steps": 0, "warmup_steps": 10**6, "utd": 4, "weights_version": 0}
        server = IngestServer(socks.data, buf, Ledger(), "fp", lambda: info).start()
        thread.join(timeout=60)
        assert result["steps"] == 20
        assert sender.close(drain_timeout=20)
        assert buf.transitions_inserted == 20
    finally:
        loop.stop_event.set()
        thread.join(timeout=10)
        if server is not None:
            server.stop()
        if socks is not None:
            socks.close()


def test_rate_keeper_keeps_deadlines_and_counts_overruns():
    rk = RateKeeper(hz=50)
    rk.wait()
    t0 = time.perf_counter()
    for _ in range(5):
        rk.wait()
    # Five periods of 20 ms: not earlier than the schedule (lateness is measured in benchmarks).
    assert time.perf_counter() - t0 >= 5 * 0.02 - 1e-3
    time.sleep(0.07)  # a step that took 3.5 periods
    rk.wait()
    assert rk.overruns == 1
    t1 = time.perf_counter()
    rk.wait()  # the schedule restarted from the late step: one period, not a burst
    assert time.perf_counter() - t1 >= 0.02 - 1e-3


def test_new_weights_are_prepared_off_the_control_loop():
    from actor.weights import WeightsReceiver
    from shared.wire.policy_weights import weights_message
    from shared.wire.protocol import encode

    agent = create_agent(tiny_config(), {"state": np.zeros(19, np.float32)}, 6)
    wp = free_port()
    socks = LearnerSockets("127.0.0.1", free_port(), wp, None)
    prepared = []
    rx = WeightsReceiver("127.0.0.1", wp, agent.actor.params, "fp", prepare=prepared.append).start()
    try:
        deadline = time.monotonic() + 20
        while rx.latest() is None and time.monotonic() < deadline:
            socks.weights.send(encode(weights_message(agent.actor.params, 1, "fp", grad_steps=8)))
            time.sleep(0.05)
        latest = rx.latest()
        assert latest is not None and latest.version == 1 and rx.learner_grad_steps == 8
        assert len(prepared) == 1 and prepared[0] is latest.params  # prepared before it was offered
        # Weights for another config are refused; the running version stays.
        socks.weights.send(encode(weights_message(agent.actor.params, 2, "other", grad_steps=8)))
        time.sleep(0.3)
        assert rx.latest().version == 1 and rx.refused >= 1
    finally:
        rx.close()
        socks.close()


def test_operator_events_end_episodes_and_pause(tmp_path):
    script = iter([[], [], ["end_episode"], [], ["pause"], [], [], ["pause"], [], []])
    summary, buf, _ = _run(tmp_path, gym.make(robot_env.SIM_ENV_ID), max_steps=7, events=lambda: next(script, []))
    # 10 polls: 7 steps and 3 polls while paused. The operator ended the first episode at its third step.
    assert summary["steps"] == 7 and summary["episodes"] == 1
    dones = buf.dones[buf.valid]
    assert dones.tolist() == [False, False, True, False, False, False, False]
    assert buf.masks[buf.valid].tolist() == [1.0] * 7  # truncated, not terminal


def test_the_keyboard_explains_why_it_cannot_work_here(monkeypatch):
    from actor.keyboard import Keyboard, KeyboardError, key_name

    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(KeyboardError, match="X display"):
        Keyboard()

    class Char:
        char = "S"

    class Special:
        char = None
        name = "esc"

    assert key_name(Char()) == "s" and key_name(Special()) == "esc" and key_name(object()) is None


def test_an_env_that_keeps_time_is_not_paced_twice():
    class KeepsTime(gym.Wrapper):
        metadata = {"keeps_time": True}

    agent = create_agent(tiny_config(), {"state": np.zeros(19, np.float32)}, 6)
    args = (agent.nets["actor"], agent.actor.params, None, None, LoopConfig(hz=10))
    assert ControlLoop(KeepsTime(gym.make(robot_env.SIM_ENV_ID)), *args).rate.period == 0
    assert ControlLoop(gym.make(robot_env.SIM_ENV_ID), *args).rate.period == 0.1


class FlakyRobot(gym.Wrapper):
    """A robot whose server fails: the 2nd and 3rd resets raise, every 7th step fails (the env
    reports it in ``info["robot_error"]`` and ends the episode at the last good observation)."""

    def __init__(self, env):
        super().__init__(env)
        self.resets = 0
        self.t = 0
        self.last = None

    def reset(self, **kw):
        self.resets += 1
        if self.resets in (2, 3):
            raise RobotEnvError("robot server reset at http://robot: ConnectionRefusedError")
        self.last, info = self.env.reset(**kw)
        return self.last, info

    def step(self, action):
        self.t += 1
        if self.t % 7 == 0:
            return self.last, -1.0, False, True, {"robot_error": "robot server getstate: timed out"}
        self.last, r, term, trunc, info = self.env.step(action)
        return self.last, r, term, trunc, info


def test_failed_resets_are_retried_and_failed_steps_never_reach_the_learner(tmp_path):
    env = FlakyRobot(gym.make(robot_env.SIM_ENV_ID))
    summary, buf, server = _run(tmp_path, env, max_steps=30)
    # 30 good steps were sent; the failed ones (every 7th env step) were not
    assert summary["steps"] == 30 and summary["robot_errors"] == 4 and summary["reset_failures"] == 2
    assert server.counters["chunks"] >= 1 and len(buf) == 30
    obs_slots = buf.obs_slot[buf.valid]
    frames = buf.frames["state"]
    nxt = np.flatnonzero(buf.valid)
    # a failed step would have been a transition whose next observation is its observation
    assert not any(np.array_equal(frames[o], frames[n]) for o, n in zip(obs_slots, nxt))


class WildHuman(gym.Wrapper):
    """A person's device reporting out-of-range and broken actions."""

    ACTIONS = (np.full(6, 5.0), np.full(6, np.nan), np.array([0.5, -3.0, 0, 0, 0, 1e12]))

    def __init__(self, env):
        super().__init__(env)
        self.t = 0

    def step(self, action):
        human = self.ACTIONS[self.t % 3]
        self.t += 1
        obs, r, term, trunc, info = self.env.step(human)
        return obs, r, term, trunc, {**info, "intervene_action": human}


def test_intervention_actions_are_recorded_as_executed_clipped_or_held(tmp_path):
    summary, buf, server = _run(tmp_path, WildHuman(gym.make(robot_env.SIM_ENV_ID)), max_steps=6)
    assert summary["steps"] == 6 and server.counters["rejected"] == 0
    actions = buf.actions[buf.valid]
    np.testing.assert_array_equal(actions[0], np.ones(6))
    np.testing.assert_array_equal(actions[1], np.zeros(6))  # non-finite: the env held the pose
    np.testing.assert_array_equal(actions[2], [0.5, -1, 0, 0, 0, 1])


class DeadRobot(gym.Wrapper):
    """A robot server that is down for ``down_s`` seconds from the first reset, then comes back;
    it notes what the actor's status file said at each failed try."""

    def __init__(self, env, down_s, status_file):
        super().__init__(env)
        self.down_s, self.status_file = down_s, status_file
        self.t0 = None
        self.seen = []

    def reset(self, **kw):
        self.t0 = self.t0 or time.monotonic()
        if self.status_file.exists():
            self.seen.append(json.loads(self.status_file.read_text())["state"])
        if time.monotonic() - self.t0 < self.down_s:
            raise RobotEnvError("robot server getstate at http://robot: ConnectionRefusedError")
        return self.env.reset(**kw)


def test_an_actor_without_a_robot_asks_for_help_and_goes_on_when_it_is_back(tmp_path, caplog):
    status = tmp_path / "status.json"
    env = DeadRobot(gym.make(robot_env.SIM_ENV_ID), down_s=1.5, status_file=status)
    socks, _, server, sender = _serve(tmp_path)
    agent = create_agent(tiny_config(), {"state": np.zeros(19, np.float32)}, 6)
    cfg = LoopConfig(hz=0, max_steps=5, help_after_s=0.5, reset_backoff=(0.05, 0.1))
    loop = ControlLoop(env, agent.nets["actor"], agent.actor.params, sender, None, cfg, status_file=status)
    try:
        with caplog.at_level("ERROR", logger="wsrl.actor"):
            summary = loop.run()
        assert sender.close(drain_timeout=20)
    finally:
        server.stop()
        socks.close()
    assert summary["steps"] == 5 and summary["reset_failures"] >= 5
    assert "running" in env.seen and "needs_help" in env.seen  # said while it waited
    helps = [r.getMessage() for r in caplog.records if "NEEDS HELP" in r.getMessage()]
    assert 1 <= len(helps) <= 3 and "ConnectionRefusedError" in helps[0] and "check_robot" in helps[0]
    assert json.loads(status.read_text())["state"] == "running"  # and took it back once the robot answered
