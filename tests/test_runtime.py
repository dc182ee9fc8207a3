"""The actor-learner runtime as real processes on localhost, with the simulation and tiny networks."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq

from actor.loop import LoopConfig
from actor.run import ActorConfig
from actor.sender import SenderConfig, TransitionSender
from shared.config import OnlineConfig, RewardConfig, apply_overrides, from_dict, read_config_file, write_config_file
from shared.presets import peg_sim_online, peg_sim_pretrain
from shared.storage.checkpoint import Checkpointer, list_steps, load_checkpoint
from shared.wire.protocol import MAX_MESSAGE_BYTES, MessageType, decode, encode, make_message
from shared.wire.transport import (
    LearnerSockets,
    TransportError,
    actor_keys,
    fingerprint,
    free_port,
    learner_keys,
    make_keys,
    policy_contract,
)
from tests.processes import (
    ACTION_DIM,
    ROOT,
    STATE_DIM,
    TINY,
    Proc,
    actor_cmd,
    assert_exactly_once,
    final_state,
    kill_and_resume_learner,
    learner_cmd,
    ports,
    save_pretrained,
    status,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.realtime]  # every test here runs the learner and actor as processes


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_pretrained(tmp_path_factory.mktemp("pretrained") / "checkpoints")


def run_to_completion(learner_args, actor_args, tmp_path):
    """Start both processes and wait for both to exit cleanly."""
    learner = Proc(learner_args, tmp_path / "learner.log")
    actor = Proc(actor_args, tmp_path / "actor.log")
    try:
        assert learner.wait() == 0, learner.log()[-3000:]
        assert actor.wait() == 0, actor.log()[-3000:]
    finally:
        learner.kill()
        actor.kill()
    return learner, actor


# ------------------------------------------------------------------------------- end to end


def test_warmup_then_online_every_transition_exactly_once(pretrained, tmp_path):
    """Learner and actor both from one experiment file; each saves the config it ran, which
    ``--config`` reads back to the same config."""
    pts = ports()
    run, act = tmp_path / "learner", tmp_path / "actor"
    given = apply_overrides(
        peg_sim_online(), ["warmup_steps=150", "checkpoint_every=200", "keep_checkpoints=50", "publish_every=1", *TINY]
    )
    experiment = write_config_file(
        tmp_path / "experiment.yaml",
        {"learner": given, "actor": {"loop": {"hz": 0.0, "max_steps": 400, "max_learner_lag": 4.0}}},
    )
    wire = ["--data-port", str(pts[0]), "--weights-port", str(pts[1])]
    _, actor = run_to_completion(
        ["learner.online", "--pretrained", str(pretrained), "--out", str(run), "--config", str(experiment), *wire]
        + ["--no-tensorboard", "--max-env-steps", "400"],
        ["actor.run", "--pretrained", str(pretrained), "--out", str(act), "--config", str(experiment), *wire]
        + ["--actor-id", "sim", "--drain-timeout", "20"],
        tmp_path,
    )
    # What ran is what the file said (the learner's agent as the hand-off made it from the checkpoint) ...
    ran = read_config_file(run / "config.yaml", OnlineConfig, "learner")
    assert ran.agent == load_checkpoint(run / "checkpoints").agent.config
    assert replace(ran, agent=given.agent) == given
    ran_actor = read_config_file(act / "config.yaml", ActorConfig, "actor")
    assert ran_actor == ActorConfig(loop=LoopConfig(hz=0.0, max_steps=400, max_learner_lag=4.0))
    # ... and each saved file, given back as --config, resolves to exactly that config again.
    for module, out, section, cls, saved in (
        ("learner.online", run, "learner", OnlineConfig, ran),
        ("actor.run", act, "actor", ActorConfig, ran_actor),
    ):
        printed = subprocess.run(
            [sys.executable, "-m", module, "--config", str(out / "config.yaml"), "--print-config"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert from_dict(cls, json.loads(printed)[section]) == saved
    summary = actor.summary()
    assert summary["steps"] == 400 and summary["delivered"]
    assert_exactly_once(run, 400)

    # No parameter moved while the learner held fewer than K transitions.
    pre = load_checkpoint(pretrained).agent
    seen_warmup = seen_online = False
    for step in list_steps(run / "checkpoints"):
        ck = load_checkpoint(run / "checkpoints", step)
        agent, meta = ck.agent, ck.meta
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                _leaves(agent.actor.params) + _leaves(agent.critic.params),
                _leaves(pre.actor.params) + _leaves(pre.critic.params),
            )
        )
        if meta.grad_steps == 0:
            seen_warmup = True
            assert same, f"parameters changed during warmup (checkpoint {step})"
        else:
            seen_online = True
            assert meta.env_steps > 150 and not same
    assert seen_warmup and seen_online
    final = load_checkpoint(run / "checkpoints").meta
    assert final.grad_steps == 4 * (400 - 150)  # UTD 4 per online env step, exactly

    # The actor ran the frozen policy in warmup and received newer weights afterwards.
    episodes = [json.loads(line) for line in (act / "metrics.jsonl").read_text().splitlines()]
    assert all(e["weights_version"] == 0 for e in episodes if e["warmup_fraction"] == 1.0)
    assert episodes[-1]["weights_version"] > 0 and summary["weights_version"] > 0
    # The learner logged the actor's episode statistics and its own losses.
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("actor/jitter_p99_ms" in r or "actor/success" in r for r in rows)
    assert any("learner/critic_loss" in r for r in rows)


def test_the_learner_diagnoses_keeps_snapshots_and_rolls_back_when_asked(pretrained, tmp_path):
    """The health monitor in the running learner (learner/health.py): the paper's diagnostics on
    the offline probe saved with the pre-trained checkpoint and on the first online transitions,
    agent snapshots at its checkpoints, and a rollback asked for by launch/rollback.sh."""
    import shutil

    from learner.health import OFFLINE_PROBE_FILE, save_batch
    from learner.snapshots import read_events

    pre = tmp_path / "pretrained"
    shutil.copytree(pretrained, pre)
    rng = np.random.default_rng(0)
    n = 32
    save_batch(
        pre / OFFLINE_PROBE_FILE,
        {
            "observations": {"state": rng.normal(size=(n, STATE_DIM)).astype(np.float32)},
            "next_observations": {"state": rng.normal(size=(n, STATE_DIM)).astype(np.float32)},
            "actions": rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
            "rewards": np.full(n, -1.0, np.float32),
            "masks": np.ones(n, np.float32),
            "dones": np.zeros(n, np.float32),
            "mc_returns": np.full(n, -50.0, np.float32),
        },
    )
    pts = ports()
    run, act = tmp_path / "learner", tmp_path / "actor"
    health = ["health.every=100", f"health.probe_size={n}", "health.keep_snapshots=2"]
    extra = [a for o in health for a in ("--set", o)]
    learner = Proc(learner_cmd(pre, run, pts, warmup=100, max_env_steps=600, extra=extra), tmp_path / "learner.log")
    actor = Proc(actor_cmd(pre, act, pts, max_steps=600, extra=["--max-learner-lag", "4"]), tmp_path / "actor.log")
    rollback = [sys.executable, "-m", "learner.rollback", "--run", str(run)]
    try:
        wait_until(lambda: [s for s in status(run).get("snapshots", {}) if s != "0"], what="a snapshot after warmup")
        step = 0  # the hand-off agent: always kept (later ones rotate)
        r = subprocess.run([*rollback, "--to", str(step)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        event = json.loads(r.stdout.strip().splitlines()[-1])
        assert event["event"] == "rollback" and event["to"] == step and event["reason"] == "requested"
        missing = subprocess.run([*rollback, "--to", "999999"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert missing.returncode != 0 and "no snapshot 999999" in missing.stderr
        assert learner.wait() == 0, learner.log()[-3000:]
        assert actor.wait() == 0, actor.log()[-3000:]
    finally:
        learner.kill()
        actor.kill()
    assert "ROLLBACK (requested) to snapshot" in learner.log()
    rollbacks = [e for e in read_events(run) if e["event"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["snapshot"]["env_steps"] == 0 < rollbacks[0]["env_steps"]
    # the rollback was published as a new weights version, which the actor went on to use
    assert actor.summary()["weights_version"] >= rollbacks[0]["weights_version"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    diag = [r for r in rows if "diag/offline_probe/q" in r]
    assert len(diag) >= 3 and any("diag/online_probe/q" in r for r in rows)
    # the synthetic probe's rows all carry a return of -50: Q minus it is known and finite
    assert all(np.isfinite(r["diag/offline_probe/q_minus_return"]) for r in diag)
    assert (run / "probes.npz").exists()
    final = status(run)
    assert final["last_rollback"]["to"] == step and "0" in final["snapshots"]
    listing = subprocess.run([*rollback, "--list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and len(listing.stdout.strip().splitlines()) == 1 + len(final["snapshots"])


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_learner_killed_and_resumed_loses_and_duplicates_nothing(pretrained, tmp_path):
    """Also: a rollback asked for while the learner is down (launch/rollback.sh) waits in the run
    folder and is applied by the resumed learner."""
    from learner.snapshots import read_events

    asked = {}

    def ask_for_a_rollback(run):  # the actor keeps stepping through the outage
        cmd = [sys.executable, "-m", "learner.rollback", "--run", str(run), "--to", "0", "--wait", "1"]
        asked["r"] = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)

    log, summary = kill_and_resume_learner(
        pretrained,
        tmp_path,
        600,
        lambda run: status(run).get("env_steps", 0) >= 150 and list_steps(run / "checkpoints"),
        "the learner to ingest 150 steps",
        between=ask_for_a_rollback,
    )
    assert "resumed:" in log
    assert summary["steps"] == 600 and summary["delivered"] and summary["learner_restarts"] >= 1
    assert_exactly_once(tmp_path / "learner", 600)
    r = asked["r"]
    assert r.returncode != 0 and "the request stays and is applied when it next runs" in r.stderr, r.stderr
    (rollback,) = [e for e in read_events(tmp_path / "learner") if e["event"] == "rollback"]
    assert rollback["to"] == 0 and rollback["reason"] == "requested" and "ROLLBACK (requested)" in log


def test_actor_killed_and_restarted_loses_and_duplicates_nothing(pretrained, tmp_path):
    pts = ports()
    run, act = tmp_path / "learner", tmp_path / "actor"
    learner = Proc(learner_cmd(pretrained, run, pts, warmup=120), tmp_path / "learner.log")
    actor = None
    try:
        wait_until(lambda: status(run), what="the learner to start")
        actor = Proc(actor_cmd(pretrained, act, pts, hz=50), tmp_path / "actor1.log")
        wait_until(lambda: status(run).get("env_steps", 0) >= 50, what="the learner to ingest 50 steps")
        actor.kill()
        state = json.loads((act / "spool" / "actor_state.json").read_text())
        (first,) = state["journaled"].values()
        assert first < 120  # killed during warmup
        actor = Proc(
            actor_cmd(pretrained, act, pts, max_steps=100, extra=["--max-learner-lag", "4"]), tmp_path / "actor2.log"
        )
        assert actor.wait() == 0, actor.log()[-3000:]
        # Warmup was counted globally: the new actor finished K and ran the learner's weights
        # within its 100 steps (had it started warmup over, it would still be on v0).
        assert actor.summary()["weights_version"] > 0
        wait_until(
            lambda: status(run).get("env_steps") == first + 100,
            timeout=30,
            what=f"{first + 100} transitions at the learner",
        )
        learner.signal(signal.SIGINT)
        assert learner.wait() == 0
    finally:
        learner.kill()
        if actor is not None:
            actor.kill()
    assert_exactly_once(run, first + 100)


# ------------------------------------------------------------------------------ bad input


def _dealer(ctx, port, keys=None):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        s.curve_secretkey, s.curve_publickey, s.curve_serverkey = keys
    s.connect(f"tcp://127.0.0.1:{port}")
    return s


def _reply(sock, timeout_ms=5000):
    assert sock.poll(timeout_ms), "no reply from the learner"
    return decode(sock.recv())


def _sender(fp, port, spool, keys=None, actor_id="tester"):
    return TransitionSender(
        "127.0.0.1", port, actor_id, fp, spool, keys, SenderConfig(flush_interval=0.01, resend_after=1.0)
    ).start()


def _transitions(n, seed=0, dim=STATE_DIM):
    rng = np.random.default_rng(seed)
    obs = {"state": rng.normal(size=dim).astype(np.float32)}
    for i in range(n):
        nxt = {"state": rng.normal(size=dim).astype(np.float32)}
        yield {
            "observations": obs,
            "actions": rng.uniform(-1, 1, ACTION_DIM).astype(np.float32),
            "rewards": -1.0,
            "next_observations": nxt,
            "masks": 1.0,
            "dones": i == n - 1,
        }
        obs = nxt


def _fingerprint(pretrained, task="peg_insertion"):
    ck = load_checkpoint(pretrained)
    return fingerprint(policy_contract(ck.agent.config, ck.obs_spec, ACTION_DIM, RewardConfig(), task))


def test_learner_survives_garbage_and_refuses_bad_actors(pretrained, tmp_path):
    pts = ports()
    run = tmp_path / "learner"
    # The learner serves another task than the actor process below, to see it refused.
    learner = Proc(
        learner_cmd(pretrained, run, pts, warmup=10**6, extra=["--task", "other_task"]), tmp_path / "learner.log"
    )
    ctx = zmq.Context()
    try:
        wait_until(lambda: status(run), what="the learner to start")
        # Raw TCP garbage on both ports: the ZMTP handshake fails and libzmq drops the peer.
        for port in pts:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(os.urandom(4096))
        d = _dealer(ctx, pts[0])
        rng = np.random.default_rng(0)
        good_hello = encode(make_message(MessageType.HELLO, actor="x", session="s", fingerprint="f"))
        for frame in [rng.bytes(100), good_hello[:-3], b"", encode(make_message(MessageType.WEIGHTS, version=1))]:
            d.send(frame)
            assert _reply(d)["code"] == "malformed"
        d.send_multipart([good_hello, b"extra"])
        assert _reply(d)["code"] == "malformed"
        chunk_first = make_message(MessageType.CHUNK, actor="x", session="s", seq=0)
        d.send(encode(chunk_first))
        assert _reply(d)["code"] == "hello_first"
        import msgpack

        d.send(msgpack.packb({"type": "hello", "v": 99, "actor": "x", "session": "s", "fingerprint": "f"}))
        err = _reply(d)
        assert err["code"] == "version" and "99" in err["reason"]
        d.send(good_hello)  # wrong fingerprint
        err = _reply(d)
        assert err["code"] == "fingerprint" and "fingerprint" in err["reason"]
        # Oversized: libzmq drops the connection before the learner sees it.
        big = _dealer(ctx, pts[0])
        big.send(b"\0" * (MAX_MESSAGE_BYTES + 8192))
        assert not big.poll(1000)

        # Real senders with the right fingerprint are still served, two actors at once; a chunk
        # of the wrong shape is refused and kept by the actor.
        fp = _fingerprint(pretrained, task="other_task")
        senders = [_sender(fp, pts[0], tmp_path / f"spool{i}", actor_id=f"robot{i}") for i in range(2)]
        for i, sender in enumerate(senders):
            for t in _transitions(10, seed=i):
                sender.put(t)
        assert all(sender.close(drain_timeout=20) for sender in senders)
        bad = _sender(fp, pts[0], tmp_path / "spool_bad")
        for t in _transitions(3, dim=5):
            bad.put(t)
        bad.close(drain_timeout=5)
        assert list((tmp_path / "spool_bad" / "rejected").glob("*.chunk"))
        wait_until(lambda: status(run).get("env_steps") == 20, timeout=10, what="20 transitions")

        # An actor process for another task is refused and exits with a clear message.
        other = Proc(actor_cmd(pretrained, tmp_path / "other", pts), tmp_path / "other.log")
        assert other.wait(120) == 3
        assert "refused this actor" in other.log() and "fingerprint" in other.log()
        # the refusal names the setting that differs, with both values
        assert "differs in: task: 'other_task' (learner) vs 'peg_insertion' (actor)" in other.log()
        assert learner.p.poll() is None
        learner.signal(signal.SIGINT)
        assert learner.wait() == 0
    finally:
        ctx.destroy(0)
        learner.kill()
    log = learner.log()
    assert "malformed message" in log and "rejected chunk" in log and "refused actor" in log
    assert_exactly_once(run, 20)
    ledger = final_state(run).ledger.to_json()
    assert ledger["robot0"]["transitions"] == ledger["robot1"]["transitions"] == 10


def test_curve_admits_only_listed_actors(pretrained, tmp_path):
    make_keys(tmp_path / "keys")
    make_keys(tmp_path / "stranger")
    with pytest.raises(TransportError, match="needs CURVE keys"):
        LearnerSockets("0.0.0.0", free_port(), free_port(), None)
    with pytest.raises(TransportError, match="not found"):
        learner_keys(tmp_path / "nowhere")
    pts = ports()
    run = tmp_path / "learner"
    learner = Proc(
        learner_cmd(pretrained, run, pts, warmup=10**6, extra=["--keys", str(tmp_path / "keys")]),
        tmp_path / "learner.log",
    )
    ctx = zmq.Context()
    try:
        wait_until(lambda: status(run), what="the learner to start")
        fp = _fingerprint(pretrained)
        good = _sender(fp, pts[0], tmp_path / "spool", actor_keys(tmp_path / "keys"))
        for t in _transitions(5):
            good.put(t)
        assert good.close(drain_timeout=20)
        # A key pair not in the allow-list (it knows the learner's public key) and a plain client.
        stranger = actor_keys(tmp_path / "stranger")
        server = actor_keys(tmp_path / "keys").server_public
        hello = encode(make_message(MessageType.HELLO, actor="s", session="s", fingerprint=fp))
        for keys in [(stranger.secret, stranger.public, server), None]:
            d = _dealer(ctx, pts[0], keys)
            d.send(hello)
            assert not d.poll(2000), "a client without an allowed key got an answer"
        learner.signal(signal.SIGINT)
        assert learner.wait() == 0
    finally:
        ctx.destroy(0)
        learner.kill()
    assert_exactly_once(run, 5)


def test_sim_pipeline_reports_before_and_after(pretrained, tmp_path, capsys):
    """The README's main command, shrunk: tiny networks, 100 + 100 steps, 2 evaluation poses."""
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "learner.sim_pipeline",
        "--out",
        str(out),
        "--pretrained",
        str(pretrained),
        "--warmup-steps",
        "100",
        "--online-steps",
        "100",
        "--episodes",
        "2",
        "--no-progress",
    ]
    for o in TINY:
        cmd += ["--set", o]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["episodes"] == 2 and s["warmup_steps"] == 100 and s["online_steps"] == 100
    assert 0 <= s["pretrained_successes"] <= 2 and 0 <= s["finetuned_successes"] <= 2
    assert s["curve"][-1]["env_steps"] == 200 and s["curve"][-1]["grad_steps"] == 400
    assert Path(s["plot"]).stat().st_size > 10_000 and s["wall_time_s"] > 0
    assert "success on 2 fixed poses: pre-trained" in r.stdout
    # the stages a given checkpoint leaves, each timed (no dataset or pre-training stage)
    stages = s["stage_times_s"]
    assert set(stages) == {"evaluate_pretrained_s", "startup_and_warmup_s", "online_s", "evaluate_checkpoints_s"}
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) <= s["wall_time_s"]
    assert "stage times: evaluate pretrained" in r.stdout
    # one experiment file holds the job (sim:) and both its processes (learner:, actor:); the
    # job's section read back by --config is the job as it ran
    from learner.sim_pipeline import SimJobConfig, main

    experiment = yaml.safe_load((out / "experiment.yaml").read_text())
    assert set(experiment) == {"sim", "learner", "actor"}
    job = read_config_file(out / "experiment.yaml", SimJobConfig, "sim")
    assert job.out == str(out) and job.warmup_steps == 100 and job.overrides == tuple(TINY) and not job.progress
    with pytest.raises(SystemExit, match="0"):  # --print-config ends the command, as --help does
        main(["--config", str(out / "experiment.yaml"), "--print-config"])
    assert json.loads(capsys.readouterr().out)["sim"] == experiment["sim"]


def test_sim_pipeline_stopped_by_sigterm_stops_its_learner_and_actor(pretrained, tmp_path):
    """A scheduler's or a person's ``kill`` ends the main command with its two children: none is
    left running (orphans once kept the cores busy after a background job was stopped)."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "learner.sim_pipeline", "--out", str(out), "--pretrained", str(pretrained)]
    cmd += ["--warmup-steps", "100", "--online-steps", "100000", "--episodes", "1", "--no-progress"]
    for o in TINY:
        cmd += ["--set", o]
    log = tmp_path / "pipeline.log"
    with log.open("w") as f:  # started as a shell starts a background job: SIGINT ignored, kept so by Python
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    status = out / "learner" / "status.json"
    try:
        deadline = time.time() + 300
        while _env_steps(status) == 0:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert len(_processes_of(out, proc.pid)) == 2, _processes_of(out, proc.pid)  # the learner and the actor
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) != 0
        assert _processes_of(out, proc.pid) == [], log.read_text()[-3000:]
    finally:  # a failing test leaves nothing running either
        proc.kill()
        for pid in _processes_of(out, proc.pid, pids=True):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _processes_of(out: Path, parent: int, pids: bool = False) -> list[str]:
    """The command lines (or pids) of the processes writing under ``out``, other than ``parent``."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            line = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if d.name.isdigit() and str(out) in line and d.name != str(parent):
            found.append(d.name if pids else line)
    return found


def _env_steps(status: Path) -> int:
    try:
        return int(json.loads(status.read_text()).get("env_steps", 0))
    except (OSError, ValueError):
        return 0


def _check_recordings(learner_dir, actor_dir, steps):
    """Each stream the live view promises is in the run's recordings, with the right shape."""
    from shared.live_view import read_recording

    (actor_rrd,) = actor_dir.glob("view-actor-*.rrd")
    actor = read_recording(actor_rrd)
    for key in ("wrist_1", "wrist_2"):
        frames = actor[f"actor/camera/{key}"]
        assert len(frames) == steps and all(f["image"].shape == (16, 16, 3) for f in frames)
    assert [r["actor_step"] for r in actor["actor/action"]] == list(range(1, steps + 1))
    assert {len(r["scalars"]) for r in actor["actor/action"]} == {ACTION_DIM}
    for name in ("intervening", "reward", "policy"):
        assert len(actor[f"actor/{name}"]) == steps
    policy = [r["scalars"][0] for r in actor["actor/policy"]]
    assert policy[0] == 0 and max(policy) >= 1  # the frozen policy in warmup, then the learner's weights
    (learner_rrd,) = learner_dir.glob("view-learner-*.rrd")
    learner = read_recording(learner_rrd)
    assert learner["learner/grad_steps"] and all("env_step" in r for r in learner["learner/grad_steps"])
    assert learner["learner/critic_loss"] and learner["learner/updates_per_s"]
    assert any(r["text"].startswith("checkpoint") for r in learner["events"])


def test_wrist_camera_observations_through_the_runtime(tmp_path):
    """Images (two 16x16 wrist cameras, a tiny ResNet-10 with its trunk frozen) from the simulated
    actor into the learner's buffer, each frame's trunk features computed once at ingest and
    stored beside it, then online updates on the features; the actor keeps up through weight
    messages that mostly leave the frozen trunk out."""
    from shared.learning.agents import create_agent
    from shared.learning.encoders import trunk_features

    enc = [
        "agent.encoder.kind=resnet10",
        'agent.encoder.image_keys=["wrist_1","wrist_2"]',
        "agent.encoder.base_filters=8",
        "agent.encoder.bottleneck_dim=16",
        "agent.encoder.num_spatial_features=2",
        "agent.encoder.augment_pad=2",
    ]
    cfg = apply_overrides(peg_sim_pretrain(), TINY + enc)
    obs = {
        "state": np.zeros(STATE_DIM, np.float32),
        "wrist_1": np.zeros((16, 16, 3), np.uint8),
        "wrist_2": np.zeros((16, 16, 3), np.uint8),
    }
    pretrained = tmp_path / "pretrained"
    ck = Checkpointer(pretrained, async_save=False)
    ck.save(create_agent(cfg.agent, obs, ACTION_DIM), obs, cfg)
    ck.close()
    pts = ports()
    run = tmp_path / "learner"
    extra = [x for o in [*enc, "replay_frames_on_disk=true"] for x in ("--set", o)]
    view = ["--view", "save"]  # both record the live view (shared/live_view.py), read back below
    run_to_completion(
        learner_cmd(pretrained, run, pts, warmup=60, max_env_steps=100, extra=extra + view),
        actor_cmd(pretrained, tmp_path / "actor", pts, max_steps=100, extra=["--max-learner-lag", "4", *view]),
        tmp_path,
    )
    assert_exactly_once(run, 100)
    _check_recordings(run, tmp_path / "actor", steps=100)
    buf = final_state(run).buffer
    # the frames and their features went to disk, and back
    assert sorted(buf.disk_frames) == ["wrist_1", "wrist_1@trunk", "wrist_2", "wrist_2@trunk"]
    slots = np.flatnonzero(buf.valid)
    frames = buf.frame("wrist_1", slots)
    assert frames.shape[1:] == (16, 16, 3) and frames.dtype == np.uint8 and frames.std() > 0  # real renders
    learned = load_checkpoint(run / "checkpoints")
    assert learned.meta.grad_steps == 4 * 40
    assert sorted(learned.obs_spec) == ["state", "wrist_1", "wrist_2"]  # the policy's inputs: no cache
    # each stored feature is the frozen trunk's output for its stored frame (computed apart here)
    expected = trunk_features(learned.agent.config.encoder, learned.agent.critic.params["encoder"], {"wrist_1": frames})
    np.testing.assert_allclose(buf.frame("wrist_1@trunk", slots), np.asarray(expected["wrist_1@trunk"]), atol=1e-4)
