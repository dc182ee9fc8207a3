"""``Franka-v0`` against the simulated robot server: real HTTP, physics on the wall clock."""

from dataclasses import replace

import numpy as np
import pytest

from robot_env import contract
from robot_env import geometry as geo
from robot_env.cameras import server_rig
from robot_env.franka_env import FrankaEnv
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.scripted import ScriptedInserter, Skill
from robot_env.sim_robot_server import SimRobotServer
from robot_env.task_config import in_box, load_task
from shared.wire.transport import free_port
from tests.helpers import insert_peg

pytestmark = pytest.mark.realtime  # FrankaEnv against a simulated robot server


def fast_task(**real):
    task = load_task("peg_insertion")
    return replace(task, real=replace(task.real, **real))


@pytest.fixture(scope="module")
def server():
    s = SimRobotServer(port=free_port(), joint_reset_s=0.1).start()
    yield s
    s.close()


@pytest.fixture
def env(server):
    e = FrankaEnv(fast_task(), robot_url=server.url, timeout=0.5)
    yield e
    RobotClient(server.url).post("_faults", {"latency_s": 0, "error_rate": 0, "drop_rate": 0, "reflex": 0})
    e.close()


def test_an_episode_of_the_scripted_expert_succeeds(env):
    obs, info = env.reset(options={"eval_pose": 3})
    assert obs["state"].shape == (contract.STATE_DIM,) and info["eval_pose"] == 3
    policy = ScriptedInserter(env.task, Skill.level(1.0), seed=0)
    policy.reset()
    # the task's own episode (the env truncates it), not a shorter cap: a 40-step cap failed once
    # at idle, as a 45-step cap did in the false-stall test (the expert can wedge on the chamfer)
    while True:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        assert "robot_error" not in info
        if terminated or truncated:
            break
    assert terminated and info["success"] and reward == 0.0
    # The episode ran at the task's 10 Hz: the env kept time itself.
    assert abs(env.timing["period_s"] - 0.1) < 0.02


@pytest.mark.slow
def test_resets_reach_each_of_the_20_fixed_poses(env):
    for i in range(len(env.task.eval_poses)):
        env.reset(options={"eval_pose": i})
        pose = geo.pose7_to_pose6(env.raw_state["pose"])
        want = contract.reset_pose6(env.task, np.asarray(env.task.eval_poses[i]))
        np.testing.assert_allclose(pose[:3], want[:3], atol=3e-3, err_msg=f"pose {i}")
        assert abs(geo.wrap_angle(pose[5] - want[5])) < 0.03, f"pose {i} yaw"


def test_adversarial_actions_never_leave_the_box(env):
    env.reset(options={"eval_pose": 0})
    rng = np.random.default_rng(0)
    garbage = [np.full(6, np.nan), np.full(6, np.inf), np.full(6, -1e12), np.full(6, 1e12)]
    box = env.task.safety_box
    for t in range(30):
        action = garbage[t % 4] if t % 3 == 0 else rng.uniform(-50, 50, 6)
        _, _, terminated, truncated, info = env.step(action)
        assert in_box(geo.pose7_to_pose6(info["commanded_pose"]), box)
        if terminated or truncated:
            env.reset(options={"eval_pose": 0})
    pose = geo.pose7_to_pose6(env.raw_state["pose"])
    low, high = np.asarray(box.low), np.asarray(box.high)
    assert np.all(pose[:3] >= low[:3] - 5e-3) and np.all(pose[:3] <= high[:3] + 5e-3)


@pytest.mark.parametrize("fault", [{"error_rate": 1.0}, {"drop_rate": 1.0}, {"latency_s": 2.0}])
def test_a_failing_server_ends_the_episode_with_the_reason(env, server, fault):
    env.reset(options={"eval_pose": 1})
    obs = env.step(np.zeros(6))[0]
    assert "observation_ms" in env.timing
    RobotClient(server.url).post("_faults", fault)
    import time

    t0 = time.monotonic()
    obs2, _reward, terminated, truncated, info = env.step(np.zeros(6))
    assert truncated and not terminated and "robot server" in info["robot_error"]
    assert env.timing == {}  # the failed step has no timings (the loop must not count the last good one's again)
    assert time.monotonic() - t0 < 2.5  # a call and its one retry, each bounded by the timeout: never a hang
    np.testing.assert_array_equal(obs2["state"], obs["state"])  # the last good observation
    with pytest.raises(RobotServerError, match="reset failed"):
        env.reset()


def test_overruns_are_counted_from_the_reset(env, server):
    """Each request answered 0.12 s late: a step (pose, then state) takes 0.24 s of a 0.1 s
    period. RateKeeper counts a step over a whole period late, so by hand: step 1 ends its period
    0.02 s late (no overrun), steps 2 and 3 are 0.06 s over a whole period (two overruns). The
    env's count is this episode's: a reset starts it again."""
    env.reset(options={"eval_pose": 2})
    RobotClient(server.url).post("_faults", {"latency_s": 0.12})
    for _ in range(3):
        env.step(np.zeros(6))
    assert env.timing["overruns"] >= 2.0  # more only if this machine adds 80 ms to step 1
    RobotClient(server.url).post("_faults", {"latency_s": 0.0})
    env.reset(options={"eval_pose": 2})
    assert env.timing == {}


@pytest.mark.slow
def test_joint_resets_come_every_n_episodes_and_images_come_from_the_server(server):
    before = server.calls.get("jointreset", 0)
    client = RobotClient(server.url, gripper=server.gripper)
    env = FrankaEnv(
        fast_task(joint_reset_every=2),
        robot_url=server.url,
        obs_mode="images",
        image_size=16,
        cameras=server_rig(client, contract.IMAGE_KEYS, 16),
    )
    try:
        for _ in range(5):
            obs, _ = env.reset()
        assert server.calls.get("jointreset", 0) - before == 2  # before episodes 3 and 5
        assert obs["wrist_1"].shape == (16, 16, 3) and obs["wrist_2"].dtype == np.uint8
        obs, *_ = env.step(np.zeros(6))
        assert obs["wrist_1"].std() > 0
    finally:
        env.close()
    with pytest.raises(ValueError, match="needs cameras"):
        FrankaEnv(fast_task(), robot_url=server.url, obs_mode="images")


def test_the_label_recorder_on_franka_keeps_going_after_success(server, tmp_path):
    """Recording on Franka-v0 (the simulated server's cameras): the pose check does not end the
    episode, a person's keys (scripted here) label the frames, the env's verdict is kept beside."""
    from actor.record_labels import record
    from shared.data.labelled_images import LabelledImageWriter, load_labelled_images

    client = RobotClient(server.url, gripper=server.gripper)
    env = FrankaEnv(
        fast_task(),
        robot_url=server.url,
        obs_mode="images",
        image_size=16,
        cameras=server_rig(client, contract.IMAGE_KEYS, 16),
        end_on_success=False,
    )
    presses = {12: ["label_success"], 40: ["end_episode"]}  # the lagging controller inserts in ~20 steps
    step = iter(range(1000))
    policy = ScriptedInserter(env.task, Skill.level(1.0), seed=0)
    writer = LabelledImageWriter(tmp_path, contract.IMAGE_KEYS, 16, "peg_insertion", "keyboard")
    try:
        stats = record(env, policy, writer, 1, "keyboard", events=lambda: presses.get(next(step), []), progress=False)
    finally:
        env.close()
    data = load_labelled_images([tmp_path])
    assert stats.frames == 41 and data.labels.tolist() == [0] * 13 + [1] * 28
    first = int(np.argmax(data.env_success == 1))
    assert 0 < first < 40 and data.env_success[-1] == 1  # inserted, and the episode went on
    assert set(data.env_success.tolist()) <= {0, 1}


# ------------------------------------------------------------- resets and reflexes (the real arm's ways)


def _insert(env):
    return insert_peg(env)


def _log(server):
    return RobotClient(server.url).post("_log")


def test_a_reset_from_the_hole_lifts_out_before_moving_sideways_or_joint_resetting(server):
    import json

    task = fast_task(joint_reset_every=1)
    env = FrankaEnv(task, robot_url=server.url)
    try:
        height = _insert(env)
        assert height < 0.0  # inside the hole: deeper than the target pose's height
        first = len(json.loads(_log(server))["poses"])
        jr_before = len(server.joint_resets)
        env.reset(options={"eval_pose": 7})
    finally:
        env.close()
    log = json.loads(_log(server))
    poses = log["poses"][first:]
    out_of_hole = task.target_pose[2] + task.real.reset_clearance
    in_hole = [p for p in poses if p["here"][2] < out_of_hole - 2e-3]
    assert in_hole, "the reset did not start in the hole"
    for p in in_hole:  # while the tool is in or near the hole: straight up, nothing else
        cmd, here = np.asarray(p["cmd"]), np.asarray(p["here"])
        np.testing.assert_allclose(cmd[:2], here[:2], atol=2e-3, err_msg="sideways motion in the hole")
        assert cmd[2] >= here[2] - 1e-4, "downward motion in the hole"
        assert geo.pose7_to_pose6(cmd)[5] == pytest.approx(geo.pose7_to_pose6(here)[5], abs=0.01)
    # The joint reset came once the tool was out of the hole.
    assert len(log["joint_resets"]) == jr_before + 1
    assert log["joint_resets"][-1][2] >= out_of_hole - 2e-3


def test_no_reset_command_moves_more_than_the_tasks_maximum_step(server):
    import json

    task = fast_task()
    real = task.real
    env = FrankaEnv(task, robot_url=server.url)
    try:
        _insert(env)
        first = len(json.loads(_log(server))["poses"])
        for i in (3, 11, 19):
            env.reset(options={"eval_pose": i})
            assert env.last_reset["largest_command_m"] <= real.reset_max_step + 1e-9
    finally:
        env.close()
    poses = json.loads(_log(server))["poses"][first:]
    prev = geo.pose7_to_pose6(np.asarray(poses[0]["here"]))
    for p in poses:
        cmd = geo.pose7_to_pose6(np.asarray(p["cmd"]))
        slack = 1e-6
        if np.linalg.norm(cmd[:3] - prev[:3]) > real.reset_max_step + 1e-6:
            # a leg's first command starts from where the arm was measured when it was planned; the
            # server logs the state it publishes at 30 Hz, and a settling arm moves in between
            prev = geo.pose7_to_pose6(np.asarray(p["here"]))
            slack = 1e-3
        assert np.linalg.norm(cmd[:3] - prev[:3]) <= real.reset_max_step + slack
        assert np.max(np.abs(geo.wrap_angle(cmd[3:] - prev[3:]))) <= real.reset_max_rot_step + 1e-6
        prev = cmd


def test_after_a_joint_reset_the_way_back_into_the_box_is_interpolated(server):
    import json

    task = fast_task(joint_reset_every=1)
    env = FrankaEnv(task, robot_url=server.url)
    try:
        env.reset(options={"eval_pose": 0})
        first = len(json.loads(_log(server))["poses"])
        env.reset(options={"eval_pose": 1})  # episode 2: a joint reset, home is 20 cm above the box
        home = server.home_pose6
        assert not in_box(home, task.safety_box)
        assert env.last_reset["largest_command_m"] <= task.real.reset_max_step + 1e-9
    finally:
        env.close()
    poses = [geo.pose7_to_pose6(np.asarray(p["cmd"])) for p in json.loads(_log(server))["poses"][first:]]
    outside = [p for p in poses if not in_box(p, task.safety_box, tol=1e-6)]
    assert len(outside) >= 15  # the 0.2 m way in, in 1 cm steps
    entry = contract.clip_to_box(home, task.safety_box)
    for p in outside:  # each on the segment from home to the box: never further out than the arm was
        assert np.all(np.minimum(home[:3], entry[:3]) - 1e-9 <= p[:3])
        assert np.all(p[:3] <= np.maximum(home[:3], entry[:3]) + 1e-9)
    heights = [p[2] for p in outside]
    assert heights == sorted(heights, reverse=True)


def test_pushing_on_the_board_is_not_a_reflex(server):
    env = FrankaEnv(fast_task(), robot_url=server.url)
    down = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # the tool's z points down: into the board
    reflexes = server.robot.reflexes
    try:
        env.reset(options={"pose_offset": (0.02, 0.02, 0.0)})  # beside the hole: the board stops the peg
        for _ in range(12):
            info = env.step(down)[4]
            assert "reflex" not in info, "contact with the board was taken for a reflex"
        force = env.raw_state["force"]
    finally:
        env.close()
    assert env.reflexes == 0 and server.robot.reflexes == reflexes  # the press stays under the threshold
    # libfranka's sign: the robot pushes the board down, along the tool's z (which points down)
    assert 10.0 < force[2] < env.task.real.collision_force
