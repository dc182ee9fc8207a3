"""launch/check_robot.sh against the simulated robot server: a checklist that fails loudly."""

import subprocess
import sys

import pytest

from robot_env.robot_client import RobotClient
from robot_env.sim_robot_server import SimRobotServer
from shared.transport import free_port
from tests.processes import ROOT


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


def test_a_healthy_robot_passes_every_check_and_moves_a_little(server):
    before = len(server.pose_log)
    rc, lines, out = check(server.url, "--cameras", "server")
    assert rc == 0, out
    assert set(lines.values()) == {"PASS"}
    assert {
        "server answers",
        "state is sane",
        "pose inside the safety box",
        "gripper reading",
        "camera wrist_1",
        "camera wrist_2",
        "test move and back",
    } <= set(lines), out
    assert "all checks passed" in out
    assert len(server.pose_log) > before  # the test move happened, in small steps
    assert not any(p["ignored"] for p in server.pose_log[before:])


@pytest.mark.parametrize("flavour", ["normalised", "serl_franka"])
def test_the_wrong_gripper_units_fail_and_nothing_moves(server, flavour):
    before = len(server.pose_log)
    rc, lines, out = check(server.url, "--cameras", "none", "--gripper", flavour)
    assert rc == 1 and lines["gripper reading"] == "FAIL", out
    assert lines["test move and back"] == "FAIL" and "not run" in out
    assert len(server.pose_log) == before  # nothing was commanded


def test_a_normalising_server_read_as_raw_robotiq_reads_open_after_closing():
    s = SimRobotServer(port=free_port(), gripper="normalised").start()
    try:
        rc, lines, out = check(s.url, "--cameras", "none", "--gripper", "serl_robotiq")
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
