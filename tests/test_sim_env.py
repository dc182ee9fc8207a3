"""The MuJoCo peg-insertion simulation: spaces, control, safety box, success, seeding, cameras."""

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robot_env
from robot_env import contract
from robot_env import geometry as geo
from robot_env.peg_sim_env import PegInsertionSimEnv
from robot_env.task_config import in_box, load_task
from shared.config import RewardConfig

TASK = load_task("peg_insertion")
POSE = contract.state_slices()["tcp_pose"]


@pytest.fixture(scope="module")
def env():
    e = gym.make(robot_env.SIM_ENV_ID)
    yield e
    e.close()


def test_registered_with_the_contract_spaces(env):
    assert robot_env.SIM_ENV_ID in gym.registry
    space = env.observation_space
    assert list(space.spaces) == ["state"]
    assert space["state"].shape == (19,) and space["state"].dtype == np.float32
    assert env.action_space.shape == (6,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=0)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (19,)
    assert info["success"] is False
    check_env(env.unwrapped, skip_render_check=True)


def test_reset_pose_and_gripper_reading(env):
    obs, _info = env.reset(seed=0, options={"pose_offset": (0.0, 0.0, 0.0)})
    s = contract.state_slices()
    # 6 cm straight above the target: in the target frame (z down) that is z = -0.06
    np.testing.assert_allclose(obs["state"][POSE], [0, 0, -0.06, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(obs["state"][s["gripper_pose"]], [0.25])  # 2 cm peg in an 8 cm hand
    np.testing.assert_allclose(obs["state"][s["tcp_force"]], 0, atol=1e-9)


def test_one_step_moves_by_the_scaled_action(env):
    env.reset(seed=0, options={"pose_offset": (0.0, 0.0, 0.0)})
    start = env.unwrapped.raw_state["pose"].copy()
    _obs, reward, term, trunc, info = env.step(np.array([1, 0, -0.5, 0, 0, 0.5], np.float32))
    moved = geo.pose7_to_pose6(env.unwrapped.raw_state["pose"]) - geo.pose7_to_pose6(start)
    # commanded: +2 cm x, +1 cm z (tool z is down), base yaw -0.05 rad; the impedance
    # controller gets within a millimetre and 15% of the turn in one 0.1 s period
    np.testing.assert_allclose(moved[:3], [0.02, 0, 0.01], atol=1e-3)
    np.testing.assert_allclose(moved[5], -0.05, atol=0.0075)
    np.testing.assert_allclose(
        geo.pose7_to_pose6(info["commanded_pose"])[:3], geo.pose7_to_pose6(start)[:3] + [0.02, 0, 0.01], atol=1e-9
    )
    assert reward == -1.0 and not term and not trunc


def test_safety_box_holds_under_garbage_actions(env):
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    garbage = [np.full(6, np.nan), np.full(6, 1e9), np.full(6, -1e9), np.array([np.inf, 0, 0, 0, 0, -np.inf])]
    low, high = np.array(TASK.safety_box.low), np.array(TASK.safety_box.high)
    for i in range(150):
        a = garbage[i % 4] if i % 3 == 0 else rng.uniform(-50, 50, 6)
        obs, _, term, trunc, info = env.step(a)
        commanded = geo.pose7_to_pose6(info["commanded_pose"])
        assert in_box(commanded, TASK.safety_box, tol=1e-9), commanded
        assert info["invalid_action"] == (not np.all(np.isfinite(a)))
        assert np.all(np.isfinite(obs["state"]))
        # the arm itself stays within a few millimetres of the box (contacts can push it)
        pos = env.unwrapped.raw_state["pose"][:3]
        assert np.all(pos > low[:3] - 0.005) and np.all(pos < high[:3] + 0.005)
        if term or trunc:
            env.reset()


def test_nan_action_holds_the_pose(env):
    env.reset(seed=2, options={"pose_offset": (0.01, -0.01, 0.2)})
    before = env.unwrapped.raw_state["pose"].copy()
    _, _, _, _, info = env.step(np.array([np.nan, 0, 0, 0, 0, 0]))
    assert info["invalid_action"]
    np.testing.assert_allclose(env.unwrapped.raw_state["pose"][:3], before[:3], atol=1e-4)


def _teleport_to(env, target_offset_m):
    """Place the hand at the target pose moved by ``target_offset_m`` (base frame xyz)."""
    robot = env.unwrapped.robot
    pose6 = np.array(TASK.target_pose) + np.concatenate([target_offset_m, [0, 0, 0]])
    robot.teleport(geo.pose6_to_pose7(pose6))
    return robot


def test_success_detection_on_hand_placed_states(env):
    env.reset(seed=0)
    depth_target, depth_success = TASK.sim.target_depth, TASK.sim.success_depth
    robot = _teleport_to(env, [0, 0, 0])  # fully inserted
    assert robot.insertion_depth() == pytest.approx(depth_target, abs=1e-9) and robot.peg_in_hole()
    robot = _teleport_to(env, [0, 0, depth_target - depth_success + 0.001])  # 1 mm short of success depth
    assert not robot.peg_in_hole()
    robot = _teleport_to(env, [0, 0, depth_target - depth_success - 0.001])  # 1 mm past it
    assert robot.peg_in_hole()
    robot = _teleport_to(env, [0, 0, 0.03])  # above the hole
    assert robot.insertion_depth() < 0 and not robot.peg_in_hole()
    robot = _teleport_to(env, [0.02, 0, 0])  # deep enough but beside the hole (inside the board)
    assert not robot.peg_in_hole()


def test_insertion_ends_the_episode_with_the_configured_reward():
    env = PegInsertionSimEnv(reward=RewardConfig(scale=10.0, bias=-2.0))
    env.reset(seed=0, options={"pose_offset": (0.0, 0.0, 0.0)})
    rewards = []
    for _ in range(10):
        _, r, term, trunc, info = env.step(np.array([0, 0, 1, 0, 0, 0], np.float32))
        rewards.append(r)
        if term:
            break
    assert term and info["success"] and not trunc
    assert rewards[-1] == 8.0 and all(r == -2.0 for r in rewards[:-1])  # 10 * 1 - 2 and 10 * 0 - 2
    env.close()


def test_pressing_on_the_board_reads_the_limited_force():
    env = PegInsertionSimEnv()
    env.reset(seed=0, options={"pose_offset": (0.03, 0.0, 0.0)})  # 3 cm beside the hole
    for _ in range(6):
        obs, *_ = env.step(np.array([0, 0, 1, 0, 0, 0], np.float32))
    force = obs["state"][contract.state_slices()["tcp_force"]]
    # libfranka's K_F_ext_hat_K: the robot pushes the board down, +z in the tool frame (z points
    # down), at the controller's 20 N limit
    np.testing.assert_allclose(force, [0, 0, TASK.sim.force_limit], atol=0.5)
    env.close()


def test_compliance_can_be_reconfigured():
    # the robot server's /update_param: a softer, weaker controller pushes with its new limit
    env = PegInsertionSimEnv()
    env.robot.set_compliance(stiffness=(1000.0, 100.0), damping=(60.0, 5.0), force_limit=8.0, torque_limit=2.0)
    env.reset(seed=0, options={"pose_offset": (0.03, 0.0, 0.0)})
    for _ in range(8):
        obs, *_ = env.step(np.array([0, 0, 1, 0, 0, 0], np.float32))
    np.testing.assert_allclose(obs["state"][contract.state_slices()["tcp_force"]], [0, 0, 8.0], atol=0.5)
    env.close()


def test_episode_time_limit():
    env = PegInsertionSimEnv(task=replace(TASK, episode_length=5))
    env.reset(seed=0)
    flags = [env.step(np.zeros(6, np.float32))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    env.close()


def test_seeding_is_deterministic():
    def rollout(seed):
        env = PegInsertionSimEnv()
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        states = [obs["state"]]
        for _ in range(15):
            states.append(env.step(rng.uniform(-1, 1, 6))[0]["state"])
        env.close()
        return info["reset_offset"], np.stack(states)

    off_a, a = rollout(7)
    off_b, b = rollout(7)
    off_c, _ = rollout(8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(off_a, off_b)
    assert not np.allclose(off_a, off_c)
    rr = TASK.random_reset
    assert np.all(np.abs(off_a) <= [rr.xy, rr.xy, rr.yaw])


def test_eval_resets_walk_through_the_20_fixed_poses():
    env = PegInsertionSimEnv(reset_mode="eval")
    seen = []
    for _ in range(21):
        _, info = env.reset()
        seen.append(info["eval_pose"])
    assert seen == list(range(20)) + [0]
    _obs, info = env.reset(options={"eval_pose": 7})
    dx, dy, dyaw = TASK.eval_poses[7]
    pose6 = geo.pose7_to_pose6(env.raw_state["pose"])
    np.testing.assert_allclose(pose6[[0, 1]], np.array(TASK.reset_pose)[[0, 1]] + [dx, dy], atol=1e-9)
    np.testing.assert_allclose(pose6[5], dyaw, atol=1e-9)
    with pytest.raises(ValueError, match="eval_pose"):
        env.reset(options={"eval_pose": 20})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"teleport": 1})
    env.close()


def test_wrist_cameras_render_at_a_tiny_size():
    env = PegInsertionSimEnv(obs_mode="images", image_size=16, render_mode="rgb_array", render_size=24)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"state", "wrist_1", "wrist_2"}
    for key in ("wrist_1", "wrist_2"):
        assert obs[key].shape == (16, 16, 3) and obs[key].dtype == np.uint8
        assert env.observation_space[key].contains(obs[key])
        assert obs[key].std() > 5  # a real picture, not a blank buffer
    assert not np.array_equal(obs["wrist_1"], obs["wrist_2"])  # two viewpoints
    obs2, *_ = env.step(np.array([1, 0, 0, 0, 0, 0], np.float32))
    assert not np.array_equal(obs["wrist_1"], obs2["wrist_1"]) or not np.array_equal(obs["wrist_2"], obs2["wrist_2"])
    frame = env.render()
    assert frame.shape == (24, 24, 3) and frame.dtype == np.uint8
    env.close()
