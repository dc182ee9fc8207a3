"""The actor on ``Franka-v0`` keeps going through robot faults: the learner, the actor and the
simulated robot server as real processes on localhost."""

import json
import time

import pytest

from robot_env.robot_client import RobotClient, RobotServerError
from robot_env.task_config import TASKS_DIR
from shared.wire.transport import free_port
from tests.processes import Proc, actor_cmd, assert_exactly_once, learner_cmd, ports, save_pretrained, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.realtime]  # the learner, the actor and a robot server as processes

STEPS = 160


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_pretrained(tmp_path_factory.mktemp("pretrained") / "checkpoints")


def _short_episode_task(path):
    """The peg task with 20-step episodes, so that faults land in resets too."""
    data = json.loads((TASKS_DIR / "peg_insertion.json").read_text())
    data["episode_length"] = 20
    path.write_text(json.dumps(data))
    return str(path)


def _server(port, task, log):
    proc = Proc(["robot_env.sim_robot_server", "--port", str(port), "--task", task, "--joint-reset-s", "0.5"], log)
    client = RobotClient(f"http://127.0.0.1:{port}")

    def answers():
        try:
            client.get_state()
            return True
        except RobotServerError:
            return False

    wait_until(answers, timeout=60, what="the simulated robot server")
    return proc, client


def test_the_actor_survives_faults_during_resets_and_a_robot_server_restart(pretrained, tmp_path):
    task = _short_episode_task(tmp_path / "task.json")
    pts, rport = ports(), free_port()
    url = f"http://127.0.0.1:{rport}"
    run, act = tmp_path / "learner", tmp_path / "actor"
    server, client = _server(rport, task, tmp_path / "server1.log")
    learner = Proc(
        learner_cmd(pretrained, run, pts, warmup=40, max_env_steps=STEPS, extra=["--task", task]),
        tmp_path / "learner.log",
    )
    actor = Proc(
        actor_cmd(
            pretrained, act, pts, max_steps=STEPS, extra=["--env", "Franka-v0", "--robot-url", url, "--task", task]
        ),
        tmp_path / "actor.log",
    )
    metrics = act / "metrics.jsonl"

    def episodes():
        try:
            return [json.loads(line) for line in metrics.read_text().splitlines()]
        except OSError:
            return []

    try:
        wait_until(lambda: len(episodes()) >= 2, timeout=120, what="two episodes")
        # 1. HTTP 500s (Flask's HTML pages), dropped connections and slow answers, through steps and resets
        client.post("_faults", {"error_rate": 0.2, "drop_rate": 0.05, "latency_s": 0.12, "html_errors": 1})
        n = len(episodes())
        # Two episodes under faults, one of them with the slow server's overruns: a step that fails
        # at once ends its episode at length 0, and two of those had ended this phase before any
        # slow step was taken (a 0.12 s answer overruns the 0.1 s period from the second step on).
        wait_until(
            lambda: len(episodes()) >= n + 2 and any(e.get("env_overruns", 0) > 0 for e in episodes()[n:]),
            timeout=180,
            what="two episodes under faults, one with overruns",
        )
        client.post("_faults", {"error_rate": 0.0, "drop_rate": 0.0, "latency_s": 0.0})
        # 2. the robot server dies (SIGKILL) and comes back on the same port
        server.kill()
        time.sleep(2.0)
        server, client = _server(rport, task, tmp_path / "server2.log")
        assert actor.wait(240) == 0, actor.log()[-3000:]
        assert learner.wait(120) == 0, learner.log()[-3000:]
    finally:
        actor.kill()
        learner.kill()
        server.kill()
    log = actor.log()
    assert "Traceback" not in log
    assert "reset failed" in log and "trying again" in log and "reset worked after" in log
    summary = actor.summary()
    assert summary["steps"] == STEPS and summary["delivered"]
    assert summary["robot_errors"] >= 1 and summary["reset_failures"] >= 1
    # every transition the actor took reached the learner once; failed steps never did
    assert_exactly_once(run, STEPS)
    eps = episodes()
    assert sum(e["robot_errors"] for e in eps) == summary["robot_errors"]
