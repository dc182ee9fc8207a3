"""The robot-server client against the simulated robot server (real HTTP on localhost)."""

import time

import numpy as np
import pytest

from robot_env import contract
from robot_env import geometry as geo
from robot_env.gripper import GRIPPER_FLAVOURS, GripperUnits
from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.sim_robot_server import FLASK_500, SimRobotServer
from shared.wire.transport import free_port

pytestmark = pytest.mark.realtime  # a simulated robot server


@pytest.fixture(scope="module")
def server():
    s = SimRobotServer(port=free_port(), joint_reset_s=0.2).start()
    yield s
    s.close()


NO_FAULTS = {"latency_s": 0, "error_rate": 0, "drop_rate": 0, "html_errors": 0, "reflex": 0}


@pytest.fixture
def client(server):
    yield RobotClient(server.url, timeout=1.0, gripper=server.gripper)
    RobotClient(server.url).post("_faults", NO_FAULTS)
    RobotClient(server.url).post("clearerr")
    RobotClient(server.url).post("startimp")


def to_reset_pose(client, server):
    client.command_pose(geo.pose6_to_pose7(contract.reset_pose6(server.task, np.zeros(3))))
    time.sleep(1.5)  # the 0.2 s target filter and the arm: settled


def test_state_has_the_contract_fields_and_a_joint_reset_goes_home(client, server):
    client.activate_gripper()
    client.close_gripper()
    client.joint_reset()
    state = client.get_state()
    assert set(state) == {"pose", "vel", "force", "torque", "gripper_pos", "gripper_raw"}
    # SERL's home joints put the hand far above the task: where the real arm goes
    np.testing.assert_allclose(state["pose"][:3], server.home_pose6[:3], atol=2e-3)
    assert 0.0 < state["gripper_pos"] < 0.5  # closed on the peg, as an opening
    assert contract.proprio(state, server.task).shape == (contract.STATE_DIM,)
    # the server logged where the arm was when the joint reset began
    assert len(server.joint_resets) >= 1 and len(server.joint_resets[-1]) == 7


def test_pose_command_moves_the_arm_in_real_time(client, server):
    to_reset_pose(client, server)
    start = client.get_state()["pose"]
    target = start.copy()
    target[1] += 0.02
    client.command_pose(target)
    time.sleep(0.1)  # the simulation runs on the wall clock, like the arm, behind the 0.2 s target filter
    moved = client.get_state()["pose"][1] - start[1]
    assert 0.1 * 0.02 < moved < 0.5 * 0.02  # part of the way after one control period
    time.sleep(1.2)
    np.testing.assert_allclose(client.get_state()["pose"][:3], target[:3], atol=3e-3)
    with pytest.raises(ValueError, match="finite"):
        client.command_pose(np.full(7, np.nan))  # refused before anything is sent


def test_stopped_impedance_ignores_poses_and_compliance_is_reconfigured(client, server):
    to_reset_pose(client, server)
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
    np.testing.assert_allclose(limits, [-10.0, 1000 * server.compliance["translational_clip_neg_x"]])
    client.update_params({"translational_clip_neg_x": 0.002})  # the others keep their values (dynamic_reconfigure)
    limits = server.in_sim(lambda r: r.model.actuator_forcerange[r._act[0]].copy())
    np.testing.assert_allclose(limits, [-10.0, 2.0])  # the controller clips the error to [-0.002, 0.01]
    with pytest.raises(RobotServerError, match="HTTP 400.*unknown compliance"):
        client.update_params({"stiffnes": 1})
    client.update_params(server.task.real.compliance)


@pytest.mark.parametrize("flavour", GRIPPER_FLAVOURS)
def test_each_gripper_flavour_reads_and_moves_in_its_own_units(flavour):
    s = SimRobotServer(port=free_port(), gripper=flavour).start()
    try:
        units = GripperUnits(flavour)
        c = RobotClient(s.url, gripper=units)
        state = c.get_state()
        lo, hi = units.reading_range
        assert lo <= state["gripper_raw"] <= hi
        if flavour == "serl_franka":  # the Franka hand: no activation, closed on the 20 mm peg
            assert state["gripper_pos"] == pytest.approx(s.held_opening, abs=0.01)
        else:  # a Robotiq on a fresh server: open, and deaf until activated
            assert state["gripper_pos"] == pytest.approx(1.0)
            c.close_gripper()
            assert c.get_state()["gripper_pos"] == pytest.approx(1.0) and s.gripper_commands_ignored == 1
            c.activate_gripper()
        c.move_gripper(1.0)
        assert c.get_state()["gripper_pos"] == pytest.approx(1.0, abs=0.01)
        c.move_gripper(0.5)
        assert c.get_state()["gripper_pos"] == pytest.approx(0.5, abs=0.01)
        c.close_gripper()
        assert c.get_state()["gripper_pos"] == pytest.approx(s.held_opening, abs=0.01)
        c.open_gripper()
        assert c.get_state()["gripper_pos"] == pytest.approx(1.0, abs=0.01)
    finally:
        s.close()


def test_hand_computed_gripper_units():
    robotiq, franka, norm = (GripperUnits(f) for f in ("serl_robotiq", "serl_franka", "normalised"))
    # SERL's Robotiq: raw 255 is closed, 0 open; a closed Robotiq read as "normalised" looks open
    assert robotiq.opening(255) == 0.0 and robotiq.opening(0) == 1.0 and robotiq.command(0.0) == 255
    assert norm.opening(255) == 1.0  # the inversion the flavour setting exists to prevent
    # SERL's Franka hand: metres of opening, 0.08 = open; /move_gripper n moves to n / 2550 m
    assert franka.opening(0.02) == pytest.approx(0.25) and franka.command(1.0) == 204
    assert franka.commanded_opening(204) == pytest.approx(1.0) and franka.commanded_opening(102) == pytest.approx(0.5)
    # HIL-SERL: reads 1 - raw/255, moves in raw Robotiq units
    assert norm.opening(0.25) == 0.25 and norm.command(0.25) == 191
    for u in (robotiq, franka, norm):
        assert isinstance(u.command(0.3), int)  # the servers take int(): a float 0..1 would become 0
    with pytest.raises(ValueError, match="one of"):
        GripperUnits("raw255")


def test_a_reflex_ignores_poses_until_errors_are_cleared(client, server):
    to_reset_pose(client, server)
    start = client.get_state()["pose"]
    client.post("_faults", {"reflex": 1})
    client.command_pose(start + np.array([0, 0.02, 0, 0, 0, 0, 0]))  # answered, but the arm stops
    time.sleep(0.4)
    np.testing.assert_allclose(client.get_state()["pose"][:3], start[:3], atol=2e-3)
    assert server.pose_log[-1]["ignored"]
    client.clear_error()
    client.command_pose(start + np.array([0, 0.02, 0, 0, 0, 0, 0]))
    time.sleep(1.2)
    assert client.get_state()["pose"][1] == pytest.approx(start[1] + 0.02, abs=3e-3)


def test_unsupported_and_bad_requests_are_clear_errors(client):
    with pytest.raises(RobotServerError, match="HTTP 404"):
        client.post("no_such_endpoint")
    with pytest.raises(RobotServerError, match="HTTP 400"):
        client.post("pose", {"arr": [1, 2, 3]})
    client.close_gripper()
    frames = client.camera_frames(16)
    assert set(frames) == set(contract.IMAGE_KEYS) and frames["wrist_1"].shape == (16, 16, 3)


def test_flask_html_500s_are_reduced_to_their_title_and_retried(client):
    client.post("_faults", {"error_rate": 1.0, "html_errors": 1})
    with pytest.raises(RobotServerError) as e:
        client.get_state()
    assert "HTTP 500 (HTML page) 500 Internal Server Error" in str(e.value) and "<" not in str(e.value)
    assert FLASK_500.startswith(b"<!doctype html>")
    # one retry makes occasional 500s invisible
    client.post("_faults", {"error_rate": 0.3})
    before = client.retried
    for _ in range(40):
        client.get_state()  # P(two 500s in a row) = 0.09 per call: some calls need their retry
    assert client.retried > before


def test_a_server_without_state_yet_answers_500_then_serves():
    s = SimRobotServer(port=free_port(), startup_s=1.0).start()
    try:
        c = RobotClient(s.url, gripper=s.gripper)
        with pytest.raises(RobotServerError, match="HTTP 500"):
            c.get_state()
        time.sleep(1.1)
        assert c.get_state()["pose"].shape == (7,)
    finally:
        s.close()


@pytest.mark.parametrize("fault", [{"latency_s": 2.0}, {"error_rate": 1.0}, {"drop_rate": 1.0}])
def test_faults_fail_fast_with_the_cause(client, fault):
    RobotClient(client.url).post("_faults", fault)
    t0 = time.monotonic()
    with pytest.raises(RobotServerError, match="getstate"):
        client.get_state()
    assert time.monotonic() - t0 < 2.9  # two tries, each bounded by the client's 1 s timeout: never a hang


def test_a_dead_server_is_a_clear_error():
    client = RobotClient(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(RobotServerError, match="getstate.*Connection refused|getstate.*Errno"):
        client.get_state()
