"""launch/check_robot.sh against the simulated robot server: a checklist that fails loudly."""

import subprocess
import sys

import numpy as np
import pytest

from robot_env.robot_client import RobotClient
from robot_env.sim_robot_server import SimRobotServer
from shared.wire.transport import free_port
from tests.processes import ROOT

pytestmark = pytest.mark.realtime  # the bring-up check against a simulated robot server


def check(url, *args):
    r = subprocess.run(
        [sys.executable, "-m", "robot_env.check_robot", "--robot-url", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = {line[6:].split(":")[0]: line[:4] for line in r.stdout.splitlines() if line[:4] in ("PASS", "FAIL")}
    return r.returncode, lines, r.stdout + r.stderr


@pytest.fixture(scope="module")
def server():
    s = SimRobotServer(port=free_port()).start()  # speaks the task file's gripper units (serl_robotiq)
    yield s
    s.close()


@pytest.mark.slow
def test_a_healthy_robot_passes_every_check_and_moves_a_little(server):
    before = len(server.pose_log)
    rc, lines, out = check(server.url, "--cameras", "server", "--activate-gripper")
    assert rc == 0, out
    assert set(lines.values()) == {"PASS"}
    assert {
        "server answers",
        "state is sane",
        "pose inside the safety box",
        "no unmodelled load",
        "gripper reading",
        "camera wrist_1",
        "camera wrist_2",
        "test move and back",
        "force sign",
    } <= set(lines), out
    assert "all checks passed" in out
    assert len(server.pose_log) > before  # the test move happened, in small steps
    assert not any(p["ignored"] for p in server.pose_log[before:])


@pytest.mark.parametrize("flavour", ["normalised", "serl_franka"])
def test_the_wrong_gripper_units_fail_and_nothing_moves(server, flavour):
    before = len(server.pose_log)
    rc, lines, out = check(server.url, "--cameras", "none", "--gripper", flavour, "--activate-gripper")
    assert rc == 1 and lines["gripper reading"] == "FAIL", out
    assert lines["test move and back"] == "FAIL" and lines["force sign"] == "FAIL" and "not run" in out
    assert len(server.pose_log) == before  # nothing was commanded


def test_a_normalising_server_read_as_raw_robotiq_reads_open_after_closing():
    s = SimRobotServer(port=free_port(), gripper="normalised").start()
    try:
        rc, lines, out = check(s.url, "--cameras", "none", "--gripper", "serl_robotiq", "--activate-gripper")
        assert rc == 1 and lines["gripper reading"] == "FAIL" and "reads" in out and "(open)" in out, out
    finally:
        s.close()


def test_a_slow_server_fails_the_latency_check(server):
    RobotClient(server.url).post("_faults", {"latency_s": 0.15})
    try:
        rc, lines, out = check(server.url, "--cameras", "none")
    finally:
        RobotClient(server.url).post("_faults", {"latency_s": 0.0})
    assert rc == 1 and lines["server answers"] == "FAIL", out


def test_a_robotiq_never_activated_is_named_and_activation_fixes_it():
    s = SimRobotServer(port=free_port()).start()  # a fresh server: the Robotiq takes no command yet
    try:
        rc, lines, out = check(s.url, "--cameras", "none", "--no-touch")
        assert rc == 1 and lines["gripper reading"] == "FAIL" and "activated" in out and "units" not in out, out
        rc, lines, out = check(s.url, "--cameras", "none", "--no-touch", "--activate-gripper")
        assert rc == 0 and lines["gripper reading"] == "PASS", out
    finally:
        s.close()


@pytest.mark.slow
def test_an_unmodelled_payload_is_named_with_its_mass():
    s = SimRobotServer(port=free_port(), gripper_hw_active=False).start()
    try:
        RobotClient(s.url).post("_faults", {"payload_kg": 1.0})
        rc, lines, out = check(s.url, "--cameras", "none", "--activate-gripper")
        assert rc == 1 and lines["no unmodelled load"] == "FAIL", out
        assert "payload" in out and "1.00 kg" in out and "Desk" in out, out
        assert lines["test move and back"] == "FAIL" and "not run" in out
        RobotClient(s.url).post("set_load", {"mass": 1.0, "F_x_center_load": [0, 0, 0], "load_inertia": [0] * 9})
        rc, lines, out = check(s.url, "--cameras", "none", "--activate-gripper")
        assert rc == 0, out  # the load told to the controller: compensated
    finally:
        s.close()


@pytest.mark.slow
def test_a_server_with_the_other_force_sign_fails_the_touch():
    s = SimRobotServer(port=free_port()).start()
    try:
        RobotClient(s.url).post("_faults", {"force_sign": -1.0})
        rc, lines, out = check(s.url, "--cameras", "none", "--activate-gripper")
        assert rc == 1 and lines["force sign"] == "FAIL" and "K_F_ext_hat_K" in out, out
        assert all(v == "PASS" for k, v in lines.items() if k != "force sign"), out
        # the arm was brought back to where it started
        start = np.asarray(s.pose_log[0]["here"][:3])
        np.testing.assert_allclose(RobotClient(s.url).get_state()["pose"][:3], start, atol=4e-3)
    finally:
        s.close()


def test_a_camera_exposure_out_of_range_is_named(server, monkeypatch, capsys, tmp_path):
    """A D405's stereo module takes up to 165,000 us: 2 s is refused with the range (the fake
    pyrealsense2 of test_cameras: no camera or library here)."""
    import json

    from robot_env import check_robot
    from robot_env.task_config import TASKS_DIR
    from tests.test_cameras import FakeRealSense

    data = json.loads((TASKS_DIR / "peg_insertion.json").read_text())
    for cam in data["real"]["cameras"]:
        cam["exposure"] = 2_000_000
    task = tmp_path / "exposure_task.json"
    task.write_text(json.dumps(data))
    monkeypatch.setitem(sys.modules, "pyrealsense2", FakeRealSense("D405"))
    with pytest.raises(SystemExit) as e:
        check_robot.main(["--robot-url", server.url, "--task", str(task), "--cameras", "realsense", "--no-touch"])
    out = capsys.readouterr().out
    assert e.value.code == 1 and "FAIL  cameras" in out and "out of range" in out and "165000 us" in out, out
    assert "FAIL  test move and back: not run" in out
