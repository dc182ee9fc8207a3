"""Helpers for tests that run the learner, the actor and robot servers as real processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from learner.checkpoint import LearnerCheckpoints
from shared.config import apply_overrides
from shared.presets import peg_sim_pretrain
from shared.storage.checkpoint import Checkpointer
from shared.wire.transport import free_port

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "agent.critic_net.hidden_dims=[32,32]",
    "agent.actor_net.hidden_dims=[32,32]",
    "agent.num_critics=2",
    "agent.batch_size=32",
]
STATE_DIM, ACTION_DIM = 19, 6


class Proc:
    def __init__(self, args, log_path):
        self.log_path = Path(log_path)
        self.f = open(self.log_path, "w")
        self.p = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            stdout=self.f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait(self, timeout=180):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError(f"{self.log_path.name} did not finish:\n{self.log()[-3000:]}") from None
        return rc

    def log(self):
        self.f.flush()
        return self.log_path.read_text()

    def summary(self):
        return json.loads(self.log().strip().splitlines()[-1])

    def signal(self, sig):
        self.p.send_signal(sig)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def learner_cmd(pretrained, out, ports, warmup, max_env_steps=None, resume=False, extra=()):
    cmd = [
        "learner.online",
        "--pretrained",
        str(pretrained),
        "--out",
        str(out),
        "--warmup-steps",
        str(warmup),
        "--data-port",
        str(ports[0]),
        "--weights-port",
        str(ports[1]),
        "--no-tensorboard",
        "--set",
        "checkpoint_every=200",
        "--set",
        "keep_checkpoints=50",
        "--set",
        "publish_every=1",
    ]
    for o in TINY:
        cmd += ["--set", o]
    if max_env_steps:
        cmd += ["--max-env-steps", str(max_env_steps)]
    if resume:
        cmd.append("--resume")
    return cmd + list(extra)


def actor_cmd(pretrained, out, ports, hz=0, max_steps=None, extra=()):
    cmd = [
        "actor.run",
        "--pretrained",
        str(pretrained),
        "--out",
        str(out),
        "--actor-id",
        "sim",
        "--data-port",
        str(ports[0]),
        "--weights-port",
        str(ports[1]),
        "--hz",
        str(hz),
        "--drain-timeout",
        "20",
    ]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    return cmd + list(extra)


def status(run):
    try:
        return json.loads((Path(run) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_until(cond, timeout=120, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def final_state(run):
    """The learner's newest checkpoint, restored as a resumed learner would."""
    return LearnerCheckpoints(run, keep=3).restore()


def assert_exactly_once(run, expected):
    state = final_state(run)
    buf = state.buffer
    actions = buf.actions[buf.valid]
    assert buf.transitions_inserted == expected
    assert len(actions) == expected
    # Actions are stochastic samples: a transition inserted twice would repeat a row.
    assert len(np.unique(actions, axis=0)) == expected
    assert state.ledger.transitions() == expected


def ports():
    return free_port(), free_port()


def save_pretrained(path):
    """A tiny untrained Cal-QL agent saved as the "pre-trained" checkpoint."""
    from shared.learning.agents import create_agent

    cfg = apply_overrides(peg_sim_pretrain(), TINY)
    obs = {"state": np.zeros(STATE_DIM, np.float32)}
    agent = create_agent(cfg.agent, obs, ACTION_DIM, seed=0)
    ck = Checkpointer(path, async_save=False)
    ck.save(agent, obs, cfg)
    ck.close()
    return path


def kill_and_resume_learner(pretrained, tmp_path, steps, ready, what, between=None, extra=()):
    """A learner and an actor (``steps`` env steps at 100 Hz) on localhost; once ``ready(run)``,
    the learner is SIGKILLed (no final checkpoint), ``between(run)`` runs (the actor keeps
    stepping), and a learner resumes to the end. Returns (the resumed learner's log, the actor's
    summary), both processes having exited 0."""
    pts = ports()
    run = tmp_path / "learner"
    learner = Proc(learner_cmd(pretrained, run, pts, 300, steps, extra=extra), tmp_path / "learner1.log")
    actor = Proc(actor_cmd(pretrained, tmp_path / "actor", pts, hz=100, max_steps=steps), tmp_path / "actor.log")
    try:
        wait_until(lambda: ready(run), what=what)
        learner.kill()
        if between is not None:
            between(run)
        learner = Proc(learner_cmd(pretrained, run, pts, 300, steps, True, extra), tmp_path / "learner2.log")
        assert learner.wait() == 0, learner.log()[-3000:]
        assert actor.wait() == 0, actor.log()[-3000:]
    finally:
        learner.kill()
        actor.kill()
    return learner.log(), actor.summary()
