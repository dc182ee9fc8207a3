"""The robot-server client against the simulated robot server (real HTTP on localhost)."""

import time

import numpy as np
import pytest

from robot_env import contract
from robot_env import geometry as geo
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.sim_robot_server import SimRobotServer
from shared.transport import free_port


@pytest.fixture(scope="module")
def server():
    s = SimRobotServer(port=free_port(), joint_reset_s=0.2).start()
    yield s
    s.close()


@pytest.fixture
def client(server):
    yield RobotClient(server.url, timeout=1.0)
    RobotClient(server.url).post("_faults", {"latency_s": 0, "error_rate": 0, "drop_rate": 0})


def test_state_has_the_contract_fields_and_the_reset_pose(client, server):
    client.joint_reset()
    state = client.get_state()
    assert set(state) == {"pose", "vel", "force", "torque", "gripper_pos"}
    reset = geo.pose6_to_pose7(contract.reset_pose6(server.task, np.zeros(3)))
    np.testing.assert_allclose(state["pose"][:3], reset[:3], atol=2e-3)
    assert 0.0 < state["gripper_pos"] < 0.5  # closed on the peg, normalised
    assert contract.proprio(state, server.task).shape == (contract.STATE_DIM,)


def test_pose_command_moves_the_arm_in_real_time(client):
    client.joint_reset()
    start = client.get_state()["pose"]
    target = start.copy()
    target[1] += 0.02
    client.command_pose(target)
    time.sleep(0.5)  # the simulation runs on the wall clock, like the arm
    np.testing.assert_allclose(client.get_state()["pose"][:3], target[:3], atol=3e-3)
    with pytest.raises(ValueError, match="finite"):
        client.command_pose(np.full(7, np.nan))  # refused before anything is sent


def test_stopped_impedance_ignores_poses_and_compliance_is_reconfigured(client, server):
    client.joint_reset()
    client.stop_impedance()
    start = client.get_state()["pose"]
    client.command_pose(start + np.array([0, 0.03, 0, 0, 0, 0, 0]))
    time.sleep(0.3)
    np.testing.assert_allclose(client.get_state()["pose"][:3], start[:3], atol=2e-3)
    client.start_impedance()
    client.update_params(
        {
            "translational_stiffness": 1000,
            "translational_clip_x": 0.01,
            "translational_clip_y": 0.01,
            "translational_clip_z": 0.01,
        }
    )
    limits = server.in_sim(lambda r: r.model.actuator_forcerange[r._act[0]].copy())
    np.testing.assert_allclose(limits, [-10.0, 10.0])
    with pytest.raises(RobotServerError, match="HTTP 400.*unknown compliance"):
        client.update_params({"stiffnes": 1})
    client.update_params({"translational_stiffness": 2000, "translational_clip_x": 0.01})


def test_gripper_units_are_normalised_once():
    s = SimRobotServer(port=free_port(), gripper_units="raw255").start()
    try:
        raw = RobotClient(s.url, gripper_open_raw=1.0).post("getstate")
        import json

        assert json.loads(raw)["gripper_pos"] > 1.0  # the server speaks 0-255
        normalised = RobotClient(s.url, gripper_open_raw=255.0).get_state()["gripper_pos"]
        assert 0.0 < normalised < 0.5
    finally:
        s.close()


def test_unsupported_and_bad_requests_are_clear_errors(client):
    with pytest.raises(RobotServerError, match="HTTP 501.*no gripper to open"):
        client.open_gripper()
    with pytest.raises(RobotServerError, match="HTTP 404"):
        client.post("no_such_endpoint")
    with pytest.raises(RobotServerError, match="HTTP 400"):
        client.post("pose", {"arr": [1, 2, 3]})
    client.close_gripper()
    frames = client.camera_frames(16)
    assert set(frames) == set(contract.IMAGE_KEYS) and frames["wrist_1"].shape == (16, 16, 3)


@pytest.mark.parametrize("fault", [{"latency_s": 2.0}, {"error_rate": 1.0}, {"drop_rate": 1.0}])
def test_faults_fail_fast_with_the_cause(client, fault):
    RobotClient(client.url).post("_faults", fault)
    t0 = time.monotonic()
    with pytest.raises(RobotServerError, match="getstate"):
        client.get_state()
    assert time.monotonic() - t0 < 1.9  # bounded by the client's 1 s timeout, never a hang


def test_a_dead_server_is_a_clear_error():
    client = RobotClient(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(RobotServerError, match="getstate.*Connection refused|getstate.*Errno"):
        client.get_state()
