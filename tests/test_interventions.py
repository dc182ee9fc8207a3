"""Human interventions: devices, the wrapper, the flag through buffer and dataset, the demo mix,
and teleoperated collection in the simulation."""

import json
import queue
import time
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import robot_env
from actor.teleop import KeyboardTeleop, SpaceMouse, SpaceMouseConfig, spacemouse_action
from robot_env.contract import state_slices, task_env
from robot_env.intervention import InterventionWrapper
from robot_env.rollout import run_episode
from robot_env.scripted import ScriptedHuman
from shared.data.dataset import load_arrays, save_arrays
from shared.storage.replay_buffer import ReplayBuffer

TOOL_AXES = (0, 1, 2, 3, 4, 5)  # the puck's axes as the action's, in the tool frame


def puck(x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=(0, 0)):
    """pyspacemouse's state object (its attributes)."""
    return SimpleNamespace(t=time.time(), x=x, y=y, z=z, roll=roll, pitch=pitch, yaw=yaw, buttons=list(buttons))


class ScriptedReader:
    """pyspacemouse.read for the device thread: the test's events in order, then no new event."""

    def __init__(self):
        self.events = queue.SimpleQueue()
        self.taken = 0

    def __call__(self):
        try:
            state = self.events.get_nowait()
        except queue.Empty:
            return None
        self.taken += 1
        return state

    def send(self, device, state):
        before = self.taken
        self.events.put(state)
        deadline = time.monotonic() + 5
        while self.taken == before or device.state()[2] == 0.0:
            assert time.monotonic() < deadline, "the device thread did not read the event"
            time.sleep(0.001)
        time.sleep(0.01)  # the reading is stored right after it is taken


def test_the_dead_zone_and_scaling_by_hand():
    cfg = SpaceMouseConfig(dead_zone=0.1, translation_scale=0.5, rotation_scale=2.0, axes=TOOL_AXES, signs=(1,) * 6)
    # |0.05| is inside the dead zone; 0.55 -> (0.55 - 0.1) / 0.9 = 0.5, times 0.5; -1 -> -1 * 0.5;
    # rotations: 0.28 -> 0.2 * 2 = 0.4; -0.1 (the edge) -> 0; 1.0 -> 1 * 2 clipped to 1.
    a = spacemouse_action(np.array([0.05, 0.55, -1.0, 0.28, -0.1, 1.0]), cfg)
    np.testing.assert_allclose(a, [0.0, 0.25, -0.5, 0.4, 0.0, 1.0], atol=1e-6)
    # A permutation and signs: the puck's y drives action x, reversed.
    swap = SpaceMouseConfig(dead_zone=0.0, axes=(1, 0, 2, 3, 4, 5), signs=(-1, 1, 1, 1, 1, 1))
    np.testing.assert_allclose(spacemouse_action(np.array([0.2, 0.6, 0, 0, 0, 0]), swap), [-0.6, 0.2, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="permutation"):
        SpaceMouseConfig(axes=(0, 0, 1, 2, 3, 4))


def test_the_device_thread_turns_an_event_stream_into_actions():
    reader = ScriptedReader()
    mouse = SpaceMouse(SpaceMouseConfig(dead_zone=0.1, axes=TOOL_AXES, signs=(1,) * 6, frame="tool"), reader=reader)
    try:
        assert mouse.command({}) is None  # nothing heard yet
        reader.send(mouse, puck(x=0.05, yaw=-0.08))  # resting in the dead zone: no takeover
        assert mouse.command({}) is None
        reader.send(mouse, puck(x=0.55, z=-1.0))
        np.testing.assert_allclose(mouse.command({}), [0.5, 0, -1, 0, 0, 0], atol=1e-6)
        reader.send(mouse, puck(buttons=(1, 0)))  # the button held, the puck at rest: hold still
        np.testing.assert_array_equal(mouse.command({}), np.zeros(6))
        reader.send(mouse, puck(x=float("nan")))  # a garbled reading is no motion
        assert mouse.command({}) is None
        reader.send(mouse, puck(y=0.55))
        time.sleep(0.35)
        assert mouse.command({}) is not None
        mouse.cfg = SpaceMouseConfig(dead_zone=0.1, axes=TOOL_AXES, signs=(1,) * 6, frame="tool", stale_after=0.3)
        assert mouse.command({}) is None  # no reading for 0.35 s > stale_after: released
    finally:
        mouse.close()
    button_mode = SpaceMouse(
        SpaceMouseConfig(engage="button", axes=TOOL_AXES, signs=(1,) * 6, frame="tool"), reader=(r := ScriptedReader())
    )
    try:
        r.send(button_mode, puck(x=0.9))  # moving without the button: the policy keeps control
        assert button_mode.command({}) is None
        r.send(button_mode, puck(x=0.9, buttons=(1, 0)))
        np.testing.assert_allclose(button_mode.command({}), [(0.9 - 0.1) / 0.9, 0, 0, 0, 0, 0], atol=1e-6)
    finally:
        button_mode.close()


def test_a_silent_wireless_puck_is_released_though_its_last_state_is_read_again():
    """pyspacemouse.read() returns its cached state (same event time ``t``) when no report came: a
    puck that goes out of range must not keep driving the arm with its last deflection."""
    last = puck(x=0.9)  # the last report before the puck went silent

    mouse = SpaceMouse(SpaceMouseConfig(frame="tool", stale_after=0.2), reader=lambda: last)
    try:
        time.sleep(0.05)
        assert mouse.command({}) is not None  # fresh: it drives
        time.sleep(0.3)
        assert mouse.command({}) is None  # nothing new for 0.3 s: released
    finally:
        mouse.close()


def test_an_unplugged_spacemouse_reads_as_released():
    def broken():
        raise OSError("device disconnected")

    mouse = SpaceMouse(SpaceMouseConfig(frame="tool"), reader=broken)
    try:
        time.sleep(0.05)
        assert mouse.command({}) is None and "disconnected" in mouse.error
    finally:
        mouse.close()


def test_keyboard_teleop_moves_while_keys_are_held():
    kb = KeyboardTeleop(speed=0.5, listen=False)
    assert kb.command({}) is None
    kb.on_press(SimpleNamespace(char="w"))
    kb.on_press(SimpleNamespace(char="R"))  # up: -z in the target frame
    kb.on_press(SimpleNamespace(char="u"))
    kb.on_press(SimpleNamespace(char="x"))  # not bound
    np.testing.assert_allclose(kb.command({}), [0.5, 0, -0.5, 0, 0, 0.5])
    kb.on_release(SimpleNamespace(char="w"))
    kb.on_release(SimpleNamespace(char="r"))
    kb.on_release(SimpleNamespace(char="u"))
    assert kb.command({}) is None


class Fixed:
    """A device that always takes over with one action."""

    def __init__(self, action):
        self.action, self.resets = action, 0

    def command(self, obs):
        return self.action

    def reset(self):
        self.resets += 1

    def close(self):
        pass


def test_the_wrapper_executes_the_persons_action_clipped_and_flags_it():
    dev = Fixed(np.array([2.0, -3.0, 0.5, 0, 0, 0], np.float32))
    env = InterventionWrapper(gym.make(robot_env.SIM_ENV_ID), dev)
    buf = ReplayBuffer({"state": ((19,), "float32")}, 6, 100, 0.98)
    result = run_episode(env, lambda obs: np.zeros(6, np.float32), seed=0, record=buf.insert)
    assert dev.resets == 1 and result.intervened == result.length
    np.testing.assert_array_equal(buf.actions[buf.valid][0], [1.0, -1.0, 0.5, 0, 0, 0])
    assert buf.intervened[buf.valid].all()
    dev.action = np.full(6, np.nan, np.float32)
    env.reset(seed=1)
    _, _, _, _, info = env.step(np.ones(6, np.float32))
    assert info["intervened"] and np.array_equal(info["intervene_action"], np.zeros(6))  # NaN: held


def test_the_scripted_human_takes_over_far_from_the_hole_and_hands_back_near_it():
    env = gym.make(robot_env.SIM_ENV_ID)
    human = ScriptedHuman(task_env(env).task, distance=0.02)
    pose = state_slices()["tcp_pose"]

    def at(x):
        state = np.zeros(19, np.float32)
        state[pose.start] = x
        return {"state": state}

    assert human.command(at(0.015)) is None  # within 2 cm
    assert human.command(at(0.025)) is not None  # strayed: takes over
    assert human.command(at(0.015)) is not None  # still on until within 1 cm
    assert human.command(at(0.009)) is None
    human.reset()
    env.close()


def test_the_flag_survives_save_and_load_and_old_files_load_without_it_or_under_its_old_name(tmp_path):
    buf = ReplayBuffer({"state": ((1,), "float32")}, 1, 20, 0.9)
    for i in range(6):
        buf.insert({**_t(i), "dones": i == 5, "intervened": i in (1, 2)})
    path = buf.save(tmp_path / "d.npz")
    back = ReplayBuffer.load(path)
    np.testing.assert_array_equal(back.intervened[back.valid], [0, 1, 1, 0, 0, 0])
    arrays, meta = load_arrays(path)
    flags = arrays.pop("intervened")  # a file written before the field existed
    save_arrays(tmp_path / "old.npz", arrays, meta)
    old = ReplayBuffer.load(tmp_path / "old.npz")
    assert len(old) == 6 and not old.intervened.any()
    # a file written while the flag was called "interventions" keeps its flags
    save_arrays(tmp_path / "renamed.npz", {**arrays, "interventions": flags}, meta)
    renamed = ReplayBuffer.load(tmp_path / "renamed.npz")
    np.testing.assert_array_equal(renamed.intervened[renamed.valid], [0, 1, 1, 0, 0, 0])


def test_the_demo_mix_gives_each_minibatch_its_share_of_intervened_transitions():
    buf = ReplayBuffer({"state": ((1,), "float32")}, 1, 2000, 0.9)
    for i in range(1000):
        buf.insert({**_t(i), "intervened": i % 20 == 0})  # 5 %
    rng = np.random.default_rng(0)
    plain = buf.sample(40, rng, leading=(4,))
    mixed = buf.sample(40, rng, leading=(4,), intervened_fraction=0.25)
    flag = mixed["next_observations"]["state"][..., 0] - 1  # the transition's index
    intervened = (flag % 20 == 0).reshape(4, 40)
    assert intervened[:, :10].all()  # round(0.25 * 40) = 10 per minibatch, drawn from the demo share
    share = intervened.mean()
    assert 0.25 <= share < 0.25 + 0.75 * 0.15  # plus the uniform part's ~5 %
    base = ((plain["next_observations"]["state"][..., 0] - 1) % 20 == 0).mean()
    assert base < 0.15
    empty = ReplayBuffer({"state": ((1,), "float32")}, 1, 10, 0.9)
    empty.insert({**_t(0), "intervened": False})
    assert empty.sample(4, rng, intervened_fraction=0.5)["actions"].shape == (4, 1)  # none yet: uniform


def _t(i):
    """Transition i of one long episode of 1-D states i -> i + 1."""
    return {
        "observations": {"state": np.full(1, i, np.float32)},
        "actions": np.zeros(1, np.float32),
        "rewards": -1.0,
        "next_observations": {"state": np.full(1, i + 1, np.float32)},
        "masks": 1.0,
        "dones": False,
    }


def test_teleoperated_collection_in_the_simulation_writes_a_flagged_dataset(tmp_path, capsys):
    from actor.collect_data import main

    out = tmp_path / "teleop.npz"
    main(["--intervene", "scripted", "--obs-mode", "state", "--episodes", "2", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["intervened_steps"] > 0
    buf = ReplayBuffer.load(out)
    assert buf.intervened[buf.valid].sum() == summary["intervened_steps"]
    assert len(buf) == summary["transitions"] and np.isfinite(buf.mc_returns[buf.valid]).all()


def test_the_device_thread_paces_a_reader_that_always_answers():
    """pyspacemouse.read() returns the current state at once, never None: the thread must not spin."""
    calls = []

    def always():
        calls.append(1)
        return puck(x=0.5)

    mouse = SpaceMouse(SpaceMouseConfig(poll_s=0.005, frame="tool"), reader=always)
    try:
        time.sleep(0.3)
        assert mouse.command({}) is not None
        assert 10 < len(calls) <= 0.3 / 0.005 + 5  # about 200 reads/s, not a busy loop
    finally:
        mouse.close()
