"""Runtime faults found by fault injection and fuzzing: each test reproduces one and shows it fixed.

In-process learner parts (the real ingest thread, ledger, buffer and checkpoints) on localhost
sockets; the learner and actor as processes where a kill is the point."""

import json
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from actor.sender import SenderConfig, TransitionSender
from learner.checkpoint import LearnerCheckpoints
from learner.ingest import MAX_SEQ_AHEAD, MAX_SESSIONS_PER_ACTOR, STATS_BURST, STATS_PER_S, IngestServer
from learner.ledger import Ledger
from shared.config import OnlineConfig, PretrainConfig
from shared.data.dataset import ValueLimits
from shared.learning.agents import create_agent
from shared.storage.checkpoint import Checkpointer, CorruptCheckpointError, list_steps, load_checkpoint
from shared.storage.replay_buffer import ReplayBuffer
from shared.wire.chunks import ChunkBuilder
from shared.wire.protocol import MessageType, decode, encode, encode_frames, make_message
from shared.wire.transport import LearnerSockets, actor_keys, free_port, learner_keys, make_keys
from tests.helpers import state_obs, tiny_config
from tests.processes import (
    Proc,
    actor_cmd,
    assert_exactly_once,
    kill_and_resume_learner,
    learner_cmd,
    ports,
    save_pretrained,
    status,
    wait_until,
)

pytestmark = pytest.mark.realtime  # the learner and actor as processes, sockets with timeouts

DIM, ACT = 5, 2
SPEC = {"state": ((DIM,), "float32")}
LIMITS = ValueLimits(reward=1.0, observation=1e4)  # what the learner derives for the default rewards
INFO = {"run": "r", "grad_steps": 0, "warmup_steps": 10**6, "utd": 4, "weights_version": 0}


def transitions(n, seed=0, action=None, reward=-1.0, state=None):
    rng = np.random.default_rng(seed)
    obs = {"state": rng.normal(size=DIM).astype(np.float32)}
    for i in range(n):
        nxt = {"state": rng.normal(size=DIM).astype(np.float32) if state is None else np.full(DIM, state, np.float32)}
        yield {
            "observations": obs,
            "actions": rng.uniform(-1, 1, ACT).astype(np.float32)
            if action is None
            else np.full(ACT, action, np.float32),
            "rewards": reward,
            "next_observations": nxt,
            "masks": 1.0,
            "dones": i == n - 1,
        }
        obs = nxt


class Learnerish:
    """The learner's data path in this process: sockets, ingest thread, buffer, ledger."""

    def __init__(self, keys=None, limits=LIMITS, derive=None):
        self.port = free_port()
        self.socks = LearnerSockets("127.0.0.1", self.port, free_port(), keys)
        self.buffer = ReplayBuffer(SPEC, ACT, 10_000, 0.99, -1.0)
        self.ingest = IngestServer(
            self.socks.data, self.buffer, Ledger(), "fp", lambda: INFO, limits=limits, derive=derive
        ).start()

    def close(self):
        self.ingest.stop()
        self.socks.close()


@pytest.fixture
def learner():
    s = Learnerish()
    yield s
    s.close()


def dealer(ctx, port, keys=None):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        s.curve_secretkey, s.curve_publickey, s.curve_serverkey = keys.secret, keys.public, keys.server_public
    s.connect(f"tcp://127.0.0.1:{port}")
    return s


def reply(sock, timeout_ms=5000):
    assert sock.poll(timeout_ms), "no reply from the learner"
    return decode(sock.recv())


def hello(sock, actor, session="s"):
    sock.send(encode(make_message(MessageType.HELLO, actor=actor, session=session, fingerprint="fp")))
    return reply(sock)


def chunk(actor, session, seq, n=2, seed=0):
    b = ChunkBuilder()
    for t in transitions(n, seed):
        b.add(t)
    return encode_frames(b.build(actor, session, seq))


# --------------------------------------------------------------- 1. value ranges at ingest


def test_a_poisoned_chunk_is_refused_kept_by_the_actor_and_resume_works_after(learner, tmp_path):
    sender = TransitionSender(
        "127.0.0.1",
        learner.port,
        "robot",
        "fp",
        tmp_path / "spool",
        None,
        SenderConfig(chunk_transitions=5, flush_interval=0.01, resend_after=0.5),
    ).start()
    batches = [
        transitions(5, seed=1),
        transitions(5, seed=2, action=2.0),  # finite, out of range
        transitions(5, seed=3, action=1e12),
        transitions(5, seed=4, state=3e38),
        transitions(5, seed=5, reward=1e30),
        transitions(5, seed=6, reward=-1e30),
        transitions(5, seed=7),
    ]
    for batch in batches:
        for t in batch:
            sender.put(t)
        time.sleep(0.05)  # one chunk each
    assert not sender.close(drain_timeout=10)  # refused chunks were not delivered, and it says so
    assert sender.status()["rejected_transitions"] == 25
    assert len(learner.buffer) == 10 and learner.ingest.counters["rejected"] == 5
    rejected = sorted((tmp_path / "spool" / "rejected").glob("*.chunk"))
    reasons = " ".join(p.with_suffix(".chunk.reason").read_text() for p in rejected)
    assert len(rejected) == 5 and "actions must be" in reasons and "rewards must be" in reasons
    assert "observation 'state' must be" in reasons
    # What was accepted checkpoints and restores: --resume works after the poisoned chunks.
    cfg = OnlineConfig(agent=tiny_config())
    ckpts = LearnerCheckpoints(tmp_path / "run", keep=3)
    ckpts.save(
        create_agent(cfg.agent, state_obs(DIM), ACT),
        cfg,
        learner.buffer,
        learner.ingest.ledger,
        learner.ingest.lock,
        0,
        "run",
        None,
        0,
    )
    ckpts.close()
    assert len(LearnerCheckpoints(tmp_path / "run", keep=3).restore(10_000).buffer) == 10


def test_a_learner_slow_to_ingest_is_not_flooded_with_resends(tmp_path):
    """The image learner computes each new frame's trunk features as it takes a chunk, and pauses
    now and then (a checkpoint, an evaluation): with a fixed 0.5 s timeout every chunk queued
    behind a pause is sent again; the timer that follows the acks (RFC 6298) sends far fewer
    again, and either way each transition is inserted exactly once."""
    resends = {}
    for name, cfg in (
        ("fixed", SenderConfig(chunk_transitions=5, flush_interval=0.01, resend_after=0.5, max_resend_after=0.5)),
        ("adaptive", SenderConfig(chunk_transitions=5, flush_interval=0.01, resend_after=0.5)),
    ):
        taken = []

        def slow(frames, taken=taken):  # 50 ms a chunk, and a 1.5 s pause every 10th
            taken.append(1)
            time.sleep(1.5 if len(taken) % 10 == 0 else 0.05)
            return frames

        learner = Learnerish(derive=slow)
        try:
            sender = TransitionSender("127.0.0.1", learner.port, "robot", "fp", tmp_path / name, None, cfg).start()
            for i in range(40):  # a chunk every 60 ms, the learner's pace between its pauses
                for t in transitions(5, seed=i):
                    sender.put(t)
                time.sleep(0.06)
            assert sender.close(drain_timeout=60)
            resends[name] = sender.status()["resends"]
            assert len(learner.buffer) == 200  # every transition once, however often its chunk came
            assert learner.ingest.counters["duplicates"] <= resends[name]
        finally:
            learner.close()
    assert resends["adaptive"] < resends["fixed"], resends


# ------------------------------------------------------------------ 3, 4. damaged checkpoints


def _save_steps(directory, steps=(1, 2)):
    cfg = tiny_config("calql", utd=1)
    agent = create_agent(cfg, state_obs(DIM), ACT)
    ck = Checkpointer(directory, keep=5, async_save=False)
    for s in steps:
        ck.save(agent, state_obs(DIM), PretrainConfig(agent=cfg), step=s)
    ck.close()
    return agent


def _flip_bits(path, n=8, seed=0):
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(len(data) // 4, len(data), n):  # past headers: into the data
        data[i] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))


def _largest_file(directory):
    return max((p for p in Path(directory).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_flipped_bits_in_the_agent_are_detected_and_an_older_step_is_used(tmp_path):
    _save_steps(tmp_path)
    _flip_bits(_largest_file(tmp_path / "2" / "agent"))
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(tmp_path, step=2)  # an explicit step is never replaced
    ck = load_checkpoint(tmp_path)
    assert ck.step == 1 and ck.skipped and ck.skipped[0][0] == 2


def test_an_edited_meta_and_non_finite_parameters_are_refused(tmp_path):
    agent = _save_steps(tmp_path)
    meta = _largest_file(tmp_path / "2" / "meta")
    text = meta.read_text()
    meta.write_text(text.replace('"env_steps": 0', '"env_steps": 9'))
    with pytest.raises(CorruptCheckpointError, match="meta item does not match its checksum"):
        load_checkpoint(tmp_path, step=2)
    bad = agent.replace(critic=agent.critic.replace(params=jax_nan(agent.critic.params)))
    ck = Checkpointer(tmp_path / "nan", async_save=False)
    ck.save(bad, state_obs(DIM), PretrainConfig(agent=tiny_config("calql", utd=1)), step=1)
    ck.close()
    with pytest.raises(CorruptCheckpointError, match="non-finite"):
        load_checkpoint(tmp_path / "nan", step=1)


def jax_nan(tree):
    import jax

    leaves, treedef = jax.tree.flatten(tree)
    leaves[0] = np.full(np.shape(leaves[0]), np.nan, np.float32)
    return jax.tree.unflatten(treedef, leaves)


def _learner_state(tmp_path, env_steps):
    cfg = OnlineConfig(agent=tiny_config())
    buf = ReplayBuffer(SPEC, ACT, 100, 0.99, -1.0)
    for t in transitions(env_steps):
        buf.insert(t)
    ledger = Ledger()
    ledger.add("robot", "s", 0, env_steps)
    return cfg, create_agent(cfg.agent, state_obs(DIM), ACT), buf, ledger


def _damage(path, how):
    if how == "deleted":
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    elif how == "truncated":
        f = path if path.is_file() else _largest_file(path)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        _flip_bits(path if path.is_file() else _largest_file(path))


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "deleted"])
@pytest.mark.parametrize("item", ["agent", "delta", "chain", "meta"])
def test_a_damaged_newest_learner_checkpoint_is_quarantined_and_saving_goes_on(tmp_path, item, how):
    ckpts = LearnerCheckpoints(tmp_path, keep=2)
    lock = threading.Lock()
    for n in (5, 10):
        cfg, agent, buf, ledger = _learner_state(tmp_path, n)
        ckpts.save(agent, cfg, buf, ledger, lock, 0, "run", None, 0)
    ckpts.close()
    target = {
        "agent": tmp_path / "checkpoints" / "10" / "agent",
        "meta": tmp_path / "checkpoints" / "10" / "meta",
        "delta": tmp_path / "replay" / "delta_000000000010.npz",
        "chain": tmp_path / "replay" / "chain_000000000010.json",
    }[item]
    _damage(target, how)
    resumed = LearnerCheckpoints(tmp_path, keep=2)
    state = resumed.restore(100)
    assert state.step == 5 and state.env_steps == 5  # the older one
    (q,) = (tmp_path / "quarantine").iterdir()
    assert q.name.startswith("checkpoints-10-") and (q / "reason.txt").read_text()
    assert not (tmp_path / "replay" / "delta_000000000010.npz").exists()
    assert not (tmp_path / "replay" / "chain_000000000010.json").exists()
    # The resumed learner reaches the damaged step's id again, and saves it (no StepAlreadyExists),
    # and rotation keeps the newest usable ones.
    cfg, agent, buf, ledger = _learner_state(tmp_path, 10)
    resumed.save(agent, cfg, buf, ledger, lock, 0, "run", None, 0)
    cfg, agent, buf, ledger = _learner_state(tmp_path, 12)
    resumed.save(agent, cfg, buf, ledger, lock, 0, "run", None, 0)
    resumed.close()
    final = LearnerCheckpoints(tmp_path, keep=2)
    assert final.restore(100).step == 12
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [10, 12]


def test_every_file_of_a_learner_checkpoint_is_checked_before_orbax_reads_it(tmp_path, capfd):
    """A flipped bit in the agent's array metadata made orbax abort its asynchronous read half-way
    and print 98 "Event loop is closed" tracebacks during a resume that then succeeded on the
    older step (61 for a flip in its data file), hiding real errors; 14 of 22 single-file flips
    went unnoticed (bytes the restored values did not depend on). Each file's size and CRC32 are
    now checked first: every flip is found and named, and nothing is printed."""
    import shutil

    base = tmp_path / "base"
    ckpts = LearnerCheckpoints(base, keep=2)
    for n in (5, 10):
        cfg, agent, buf, ledger = _learner_state(tmp_path, n)
        ckpts.save(agent, cfg, buf, ledger, threading.Lock(), 0, "run", None, 0)
    ckpts.close()
    newest = base / "checkpoints" / "10"
    files = sorted(f.relative_to(base) for f in newest.rglob("*") if f.is_file())
    assert any("array_metadatas" in str(f) for f in files) and (newest / "files.crc32.json").exists()
    capfd.readouterr()
    for i, f in enumerate(files):
        run = tmp_path / f"run{i}"
        shutil.copytree(base, run)
        _flip_bits(run / f, n=4, seed=i)
        assert LearnerCheckpoints(run, keep=2).restore(100).step == 5, f
        (q,) = (run / "quarantine").iterdir()
        assert f.name in (q / "reason.txt").read_text() or "files.crc32.json" in str(f), f
    assert "Event loop is closed" not in capfd.readouterr().err


def test_one_damaged_file_never_costs_what_the_actors_were_told_to_forget(tmp_path):
    """Six checkpoints of one growing buffer (keep 3). Before, every checkpoint's chain began
    with the first full delta: one flipped bit there quarantined all of them. Now no file is
    needed by every kept checkpoint, and for every single file damaged in turn the resume finds
    a checkpoint holding at least what the last save called durable (what actors forget)."""
    import shutil

    run = tmp_path / "run"
    ckpts = LearnerCheckpoints(run, keep=3)
    cfg, agent, _, _ = _learner_state(tmp_path, 1)
    buf, ledger, lock = ReplayBuffer(SPEC, ACT, 1000, 0.99, -1.0), Ledger(), threading.Lock()
    durable = []
    for seq in range(6):
        for t in transitions(7, seed=seq):
            buf.insert(t)
        ledger.add("robot", "s", seq, 7)
        durable.append(ckpts.save(agent, cfg, buf, ledger, lock, 0, "run", None, 0)[2].transitions())
    ckpts.close()
    assert durable == [0, 0, 14, 14, 28, 28]  # the checkpoint before the newest one's chain
    kept = list_steps(run / "checkpoints")
    assert kept == [28, 35, 42]
    chains = [json.loads((run / "replay" / f"chain_{k:012d}.json").read_text())["deltas"] for k in kept]
    uses = [{e["name"][len("delta_") : -len(".npz")].lstrip("0") for e in chain} for chain in chains]
    assert uses == [{"21", "28"}, {"35"}, {"35", "42"}]  # full cuts at 21 and 35: none shared by all
    files = sorted((run / "replay").iterdir()) + [run / "checkpoints" / str(k) / "agent" for k in kept]
    assert len(files) == 3 + 4 + 3  # the chains, the deltas and the agents
    for i, f in enumerate(files):
        copy = tmp_path / f"copy{i}"
        shutil.copytree(run, copy)
        _damage(copy / f.relative_to(run), "bit-flipped")
        state = LearnerCheckpoints(copy, keep=3).restore(1000)
        assert state.ledger.transitions() >= durable[-1], f.name
        assert state.buffer.transitions_inserted == state.ledger.transitions() == state.step


def test_a_failed_read_quarantines_nothing(tmp_path, monkeypatch):
    """An EIO (a failing disk, a network mount) while restoring says nothing about the files: the
    checkpoints stay where they are and the error says to try again."""
    import errno

    import learner.checkpoint as lc
    from shared.storage.checkpoint import CheckpointError

    ckpts = LearnerCheckpoints(tmp_path, keep=2)
    for n in (5, 10):
        cfg, agent, buf, ledger = _learner_state(tmp_path, n)
        ckpts.save(agent, cfg, buf, ledger, threading.Lock(), 0, "run", None, 0)
    ckpts.close()

    def failing(*a, **kw):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(lc, "load_checkpoint", failing)
    with pytest.raises(CheckpointError, match="nothing was moved"):
        LearnerCheckpoints(tmp_path, keep=2).restore(100)
    assert not (tmp_path / "quarantine").exists()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [5, 10]


def test_a_resume_whose_checkpoints_were_all_quarantined_refuses_to_start_over(pretrained, tmp_path):
    """Flipped bits in every delta (a failing disk) quarantine every checkpoint; the next
    --resume must not silently start the run over under the same id: it refuses, naming the
    quarantine, until --restart is spelled out."""
    import sys

    run = tmp_path / "learner"
    ckpts = LearnerCheckpoints(run, keep=3)
    cfg, agent, buf, ledger = _learner_state(run, 0)
    for k, t in enumerate(transitions(15)):  # one growing buffer
        buf.insert(t)
        ledger.add("robot", "s", k, 1)
        if (k + 1) % 5 == 0:
            ckpts.save(agent, cfg, buf, ledger, threading.Lock(), 0, "run", None, 0)
    ckpts.close()
    (run / "run.json").write_text(json.dumps({"run": "run", "pretrained": str(pretrained), "created": 0}))
    for delta in (run / "replay").glob("delta_*.npz"):
        _flip_bits(delta)
    with pytest.raises(Exception, match="no usable learner checkpoint"):
        LearnerCheckpoints(run, keep=3).restore(100)
    assert not any(p.name.isdigit() for p in (run / "checkpoints").iterdir())
    cmd = [sys.executable, "-m", *learner_cmd(pretrained, run, ports(), warmup=10, max_env_steps=20, resume=True)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--restart" in r.stderr and "quarantine" in r.stderr, r.stderr[-2000:]
    assert (run / "quarantine").exists() and not (run / "status.json").exists()  # nothing started


def test_an_actor_given_a_damaged_pretrained_checkpoint_says_so_in_one_line(tmp_path):
    import sys

    bad = tmp_path / "pretrained"
    _save_steps(bad, steps=(1,))
    _flip_bits(_largest_file(bad / "1" / "agent"))
    for where in (bad, tmp_path / "nowhere"):
        cmd = [sys.executable, "-m", *actor_cmd(where, tmp_path / "actor", ports(), max_steps=5)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert f"actor: cannot use the pre-trained checkpoint {where}" in r.stderr


# ---------------------------------------------------------------- 5. identity bound to the key


def test_a_listed_key_cannot_speak_for_another_actor(tmp_path):
    make_keys(tmp_path, ("alpha", "beta"))
    lk = learner_keys(tmp_path)
    s = Learnerish(keys=lk)
    ctx = zmq.Context()
    try:
        a = dealer(ctx, s.port, actor_keys(tmp_path, "alpha"))
        b = dealer(ctx, s.port, actor_keys(tmp_path, "beta"))
        assert hello(a, "robot", "sa")["type"] == "welcome"
        refused = hello(b, "robot", "sb")
        assert refused["type"] == "error" and refused["code"] == "identity"
        # beta's connection was never welcomed as robot: its forged chunk goes nowhere
        b.send_multipart(chunk("robot", "sa", 5))
        assert reply(b)["code"] == "hello_first"
        assert hello(b, "beta-robot", "sb")["type"] == "welcome"  # under its own name it is fine
        assert len(s.buffer) == 0
        assert s.ingest.ledger.key_of("robot") != s.ingest.ledger.key_of("beta-robot")
    finally:
        ctx.destroy(0)
        s.close()


def test_a_refused_hello_claims_no_id_and_an_id_can_be_released(tmp_path):
    """A wrongly configured robot PC (another checkpoint: a different fingerprint) under the
    right actor's id is refused without binding the id to its key; and a learner started with
    --release-actor unbinds an id that was bound to the wrong key."""
    make_keys(tmp_path, ("alpha", "beta"))
    s = Learnerish(keys=learner_keys(tmp_path))
    ctx = zmq.Context()
    try:
        wrong = dealer(ctx, s.port, actor_keys(tmp_path, "beta"))
        wrong.send(encode(make_message(MessageType.HELLO, actor="robot", session="sw", fingerprint="other")))
        assert reply(wrong)["code"] == "fingerprint"
        assert s.ingest.ledger.key_of("robot") is None  # nothing claimed
        right = dealer(ctx, s.port, actor_keys(tmp_path, "alpha"))
        assert hello(right, "robot", "sa")["type"] == "welcome"  # the right actor is not an impostor
        bound = s.ingest.ledger.key_of("robot")
        assert bound is not None and hello(wrong, "robot", "sw2")["code"] == "identity"
    finally:
        ctx.destroy(0)
        s.close()
    ledger = Ledger({"robot": {"sessions": {}, "transitions": 0, "key": bound}})
    assert ledger.release("robot") and ledger.key_of("robot") is None and not ledger.release("robot")


# ------------------------------------------------------------------- 7. bounded peers


def test_far_future_seqs_stats_floods_and_session_floods_stay_bounded(learner):
    ctx = zmq.Context()
    try:
        d = dealer(ctx, learner.port)
        assert hello(d, "robot", "s0")["type"] == "welcome"
        # far-future sequence numbers are refused, so the ledger (and every ACK) stays small
        for seq in (MAX_SEQ_AHEAD + 10, 10**9, 2**40):
            d.send_multipart(chunk("robot", "s0", seq))
            r = reply(d)
            assert r["type"] == "error" and r["code"] == "rejected" and "beyond" in r["reason"]
        d.send_multipart(chunk("robot", "s0", 0))
        ack = reply(d)
        assert ack["type"] == "ack" and len(encode(ack)) < 2000
        # a STATS flood is rate-limited
        t0 = time.monotonic()
        for _ in range(500):
            d.send(encode(make_message(MessageType.STATS, actor="robot", session="s0", stats={"x": 1.0})))
        wait_until(
            lambda: learner.ingest.counters["stats"] + learner.ingest.counters["stats_dropped"] == 500,
            timeout=10,
            what="500 stats",
        )
        allowed = STATS_BURST + STATS_PER_S * (time.monotonic() - t0) + 1
        assert learner.ingest.counters["stats"] <= allowed < 100
        # a flood of new sessions: refused past the cap while their data is not checkpointed ...
        for i in range(1, MAX_SESSIONS_PER_ACTOR + 5):
            r = hello(d, "robot", f"s{i}")
            if r["type"] == "welcome":
                d.send_multipart(chunk("robot", f"s{i}", 0))
                reply(d)
        assert len(learner.ingest.ledger.sessions("robot")) == MAX_SESSIONS_PER_ACTOR
        assert learner.ingest.counters["refused"] >= 4
        # ... and once a checkpoint holds them, the oldest are forgotten to make room
        learner.ingest.set_committed(learner.ingest.ledger.copy())
        for i in range(100, 140):
            assert hello(d, "robot", f"s{i}")["type"] == "welcome"
            d.send_multipart(chunk("robot", f"s{i}", 0))
            assert reply(d)["type"] == "ack"
        assert len(learner.ingest.ledger.sessions("robot")) <= MAX_SESSIONS_PER_ACTOR
        assert len(learner.buffer._streams) <= MAX_SESSIONS_PER_ACTOR
    finally:
        ctx.destroy(0)


def test_a_chunk_that_never_comes_is_reported_lost_and_later_chunks_are_still_taken(learner, tmp_path):
    """A hole in a session (seq 1 never arrives: nobody holds it any more) used to turn, after
    MAX_SEQ_AHEAD later chunks, into the refusal of every chunk after it. Now the hole is given
    up and counted (log, counters, each ACK) and ingest goes on: nothing after it is refused."""
    ctx = zmq.Context()
    try:
        d = dealer(ctx, learner.port)
        assert hello(d, "robot", "s0")["type"] == "welcome"
        sent = [0, *range(2, MAX_SEQ_AHEAD + 200)]  # more than MAX_SEQ_AHEAD chunks past the hole
        for seq in sent:
            d.send_multipart(chunk("robot", "s0", seq, n=1, seed=seq))
            r = reply(d)
            assert r["type"] == "ack", r
        assert learner.ingest.counters["rejected"] == 0
        assert learner.ingest.counters["lost_chunks"] == 1 and r["lost_chunks"] == 1
        assert len(learner.buffer) == len(sent) and learner.ingest.ledger.marks("robot") == {"s0": [sent[-1], []]}
    finally:
        ctx.destroy(0)
    # the actor is told: its summary counts the loss and never says "delivered"
    sender = TransitionSender(
        "127.0.0.1", learner.port, "robot", "fp", tmp_path / "spool", None, SenderConfig(flush_interval=0.01)
    ).start()
    for t in transitions(5):
        sender.put(t)
    wait_until(lambda: sender.counters["learner_lost_chunks"] == 1, timeout=10, what="the loss reported")
    assert not sender.close(drain_timeout=5) and sender.status()["learner_lost_chunks"] == 1
    assert sender.unacked_transitions == 0  # its own 5 arrived: "not delivered" is for the lost chunk


# ----------------------------------------------------- 2. killed before the first checkpoint


def test_an_actor_never_reports_delivery_of_what_it_archived(learner, tmp_path):
    spool = tmp_path / "spool"
    first = TransitionSender(
        "127.0.0.1", free_port(), "robot", "fp", spool, None, SenderConfig(flush_interval=0.01)
    ).start()  # no learner there
    for t in transitions(10):
        first.put(t)
    assert not first.close(drain_timeout=0.5)  # kept for the next run
    state = json.loads((spool / "actor_state.json").read_text())
    (spool / "actor_state.json").write_text(json.dumps({**state, "run": "an-earlier-run"}))
    second = TransitionSender("127.0.0.1", learner.port, "robot", "fp", spool).start()
    wait_until(lambda: second.welcomed, timeout=10, what="a welcome")
    assert not second.close(drain_timeout=2)  # archived for another run: not delivered
    assert second.archived_transitions == 10 and len(learner.buffer) == 0
    assert len(list((spool / "run-an-earlier-run").glob("*.chunk"))) >= 1


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_pretrained(tmp_path_factory.mktemp("pretrained") / "checkpoints")


@pytest.mark.slow
def test_a_fallback_to_an_older_checkpoint_with_the_actor_connected_loses_nothing(pretrained, tmp_path):
    """The newest checkpoint is damaged when the killed learner resumes: it falls back one step.
    The actors were told as durable only what two checkpoints held, so they still journal what
    only the damaged one had, resend it, and the ledger has no hole: every transition, once."""

    run = tmp_path / "learner"

    def damage_the_newest(run):
        _damage(run / "checkpoints" / str(max(list_steps(run / "checkpoints"))), "bit-flipped")

    log, summary = kill_and_resume_learner(
        pretrained,
        tmp_path,
        600,
        lambda run: status(run).get("env_steps", 0) >= 200 and len(list_steps(run / "checkpoints")) >= 3,
        "three checkpoints",
        between=damage_the_newest,
    )
    assert "quarantined checkpoint" in log
    assert summary["steps"] == 600 and summary["delivered"] and summary["rejected_transitions"] == 0
    assert_exactly_once(run, 600)


def test_a_fallback_with_the_actor_connected_and_over_1024_chunks_after_it_loses_nothing(tmp_path):
    """Item 1 at its full length: the newest checkpoint is damaged, the learner falls back one
    step with the actor connected, and 1,100 more chunks follow (before, a hole left by the
    fallback turned every chunk past the 1,024th into a refusal). The learner side runs in this
    process (its real ingest thread, ledger, buffer and checkpoints), so the actor's chunks can be
    single transitions."""
    data_port, weights_port = free_port(), free_port()
    run = tmp_path / "learner"
    cfg, agent, _, _ = _learner_state(tmp_path, 1)

    def learner_side(resume):
        ckpts = LearnerCheckpoints(run, keep=3)
        if resume:
            state = ckpts.restore(5000)
            buf, ledger = state.buffer, state.ledger
        else:
            buf, ledger = ReplayBuffer(SPEC, ACT, 5000, 0.99, -1.0), Ledger()
        socks = LearnerSockets("127.0.0.1", data_port, weights_port, None)
        return ckpts, socks, IngestServer(socks.data, buf, ledger, "fp", lambda: INFO).start()

    def feed(sender, ingest, n, seed):
        total = ingest.ledger.transitions() + n  # before the puts: some arrive while they are made
        for t in transitions(n, seed=seed):
            sender.put(t)
        wait_until(lambda: ingest.ledger.transitions() >= total, timeout=120, what=f"{total} transitions in")

    def checkpoint(ckpts, ingest, final=False):
        _, committed, durable = ckpts.save(agent, cfg, ingest.buffer, ingest.ledger, ingest.lock, 0, "r", None, 0)
        ingest.set_committed(committed if final else durable)

    ckpts, socks, ingest = learner_side(resume=False)
    sender = TransitionSender(
        "127.0.0.1",
        data_port,
        "robot",
        "fp",
        tmp_path / "spool",
        None,
        SenderConfig(chunk_transitions=1, flush_interval=0.005, resend_after=0.5),
    ).start()
    try:
        for seed in range(3):
            feed(sender, ingest, 300, seed)
            checkpoint(ckpts, ingest)
        ckpts.close()
        ingest.stop()  # killed: no final checkpoint
        socks.close()
        _damage(run / "checkpoints" / str(max(list_steps(run / "checkpoints"))), "bit-flipped")
        ckpts, socks, ingest = learner_side(resume=True)
        assert ingest.ledger.transitions() == 600  # the fallback: one step back
        feed(sender, ingest, 1100, seed=3)
        wait_until(lambda: ingest.ledger.transitions() == 2000, timeout=120, what="the resent 300")
        assert ingest.counters["rejected"] == 0 and ingest.counters["lost_chunks"] == 0
        checkpoint(ckpts, ingest, final=True)
        assert sender.close(drain_timeout=10)  # delivered, and said so
    finally:
        ckpts.close()
        ingest.stop()
        socks.close()
    buf = ingest.buffer
    actions = buf.actions[buf.valid]
    assert len(actions) == len(np.unique(actions, axis=0)) == buf.transitions_inserted == 2000  # each once
    assert sender.counters["learner_lost_chunks"] == 0


@pytest.mark.slow
def test_a_learner_resumed_past_its_warmup_compiles_before_it_takes_data(pretrained, tmp_path):
    """Before, the first update's compile ran while the actors' resent backlog arrived, and no
    checkpoint could commit that backlog until it finished. Now a learner resumed past its
    warmup compiles first (the actors journal meanwhile), then takes data."""
    pts, run = ports(), tmp_path / "learner"
    procs = [
        Proc(learner_cmd(pretrained, run, pts, 20, 60), tmp_path / "learner1.log"),
        Proc(actor_cmd(pretrained, tmp_path / "actor", pts, hz=100, max_steps=60), tmp_path / "actor1.log"),
    ]
    try:
        assert [p.wait() for p in procs] == [0, 0], procs[0].log()[-3000:]
        procs = [
            Proc(learner_cmd(pretrained, run, pts, 20, 120, resume=True), tmp_path / "learner2.log"),
            Proc(actor_cmd(pretrained, tmp_path / "actor", pts, hz=100, max_steps=60), tmp_path / "actor2.log"),
        ]
        assert [p.wait() for p in procs] == [0, 0], procs[0].log()[-3000:]
    finally:
        for p in procs:
            p.kill()
    log = procs[0].log()
    assert "resumed: 60 env steps" in log
    assert log.index("compiled the update") < log.index("connected")
    assert_exactly_once(run, 120)


@pytest.mark.slow
def test_a_learner_killed_before_its_first_checkpoint_resumes_with_everything(pretrained, tmp_path):
    run = tmp_path / "learner"

    def no_checkpoint_yet(run):
        assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
        time.sleep(1.0)

    log, summary = kill_and_resume_learner(
        pretrained,
        tmp_path,
        500,
        lambda run: status(run).get("env_steps", 0) >= 150,
        "150 transitions",
        between=no_checkpoint_yet,
        extra=["--set", "checkpoint_every=1000000"],
    )
    assert "no checkpoint yet" in log
    assert summary["steps"] == 500 and summary["delivered"]
    assert_exactly_once(run, 500)  # the transitions delivered before the kill came again


# ------------------------------------------------------------------------ 6. a full disk


def _mount_tmpfs(path, size):
    path.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs, and mounting one failed: {r.stderr.decode().strip()}")


def test_a_full_spool_disk_does_not_stop_the_actor_or_lose_a_transition(tmp_path):
    spool = tmp_path / "spool"
    _mount_tmpfs(spool, "64k")
    port = free_port()
    try:
        sender = TransitionSender(
            "127.0.0.1", port, "robot", "fp", spool, None, SenderConfig(chunk_transitions=100, flush_interval=0.01)
        ).start()
        n = 3000  # about 800 KB of chunks: the 64 KB disk fills after a few
        for i, t in enumerate(transitions(n, seed=1)):
            sender.put(t)
            if i % 500 == 0:
                time.sleep(0.05)
        wait_until(lambda: sender.spool.unacked_transitions == n, timeout=20, what="everything journaled")
        assert sender.spool.disk_full and not sender.fatal  # the sender thread lived through it
        # the learner comes up: everything arrives, once
        socks = LearnerSockets("127.0.0.1", port, free_port(), None)
        buf = ReplayBuffer(SPEC, ACT, 10_000, 0.99, -1.0)
        ingest = IngestServer(socks.data, buf, Ledger(), "fp", lambda: INFO).start()
        try:
            assert sender.close(drain_timeout=20)
            assert len(buf) == n and ingest.counters["duplicates"] == 0
        finally:
            ingest.stop()
            socks.close()
    finally:
        subprocess.run(["umount", str(spool)], capture_output=True)


@pytest.mark.parametrize("learner_comes", [True, False])
def test_ctrl_c_with_a_full_spool_disk_waits_for_the_learner_and_never_claims_memory_is_disk(
    tmp_path, caplog, learner_comes
):
    """What could not be written to the full spool lives in memory only: on close the sender waits
    for an ack (here the learner comes up during the wait) instead of exiting and losing it; given
    up (a second Ctrl-C), it says how many are lost, and claims only the written ones as spooled."""
    spool = tmp_path / "spool"
    _mount_tmpfs(spool, "64k")
    port = free_port()
    n = 3000
    learner: list = []
    try:
        sender = TransitionSender("127.0.0.1", port, "robot", "fp", spool, None, SenderConfig(chunk_transitions=100))
        sender.start()
        for t in transitions(n, seed=1):
            sender.put(t)
        wait_until(lambda: sender.spool.unacked_transitions == n, timeout=20, what="everything taken")
        memory_only = sender.spool.memory_only_transitions
        assert sender.spool.disk_full and memory_only > 0
        give_up = threading.Event()

        def come_up():
            time.sleep(1.0)
            socks = LearnerSockets("127.0.0.1", port, free_port(), None)
            buf = ReplayBuffer(SPEC, ACT, 10_000, 0.99, -1.0)
            learner.extend([socks, buf, IngestServer(socks.data, buf, Ledger(), "fp", lambda: INFO).start()])

        threading.Thread(target=come_up).start() if learner_comes else threading.Timer(1.0, give_up.set).start()
        with caplog.at_level("WARNING", logger="wsrl.actor.sender"):
            delivered = sender.close(drain_timeout=0.2, unwritten_timeout=30, give_up=give_up)
        if learner_comes:
            assert delivered and len(learner[1]) == n  # nothing lost to the full disk
        else:
            assert not delivered and sender.counters["lost_unwritten"] == memory_only
            assert f"{memory_only} transitions were never written" in caplog.text and "LOST" in caplog.text
            assert f"{n - memory_only} transitions not acknowledged yet; they stay in" in caplog.text
    finally:
        if learner:
            learner[2].stop()
            learner[0].close()
        subprocess.run(["umount", str(spool)], capture_output=True)


def test_a_spool_at_its_memory_bound_on_a_full_disk_holds_the_loop(tmp_path):
    from actor.spool import Spool

    spool_dir = tmp_path / "spool"
    _mount_tmpfs(spool_dir, "16k")
    try:
        sp = Spool(spool_dir, memory_bytes=50_000)
        frames = [np.zeros(10_000, np.uint8).tobytes()]
        for seq in range(8):
            sp.add("s", seq, 1, frames)
        assert sp.disk_full and sp.saturated and sp.unacked_transitions == 8  # nothing dropped
        for seq in range(8):
            sp.ack("s", seq)
        sp.commit("s", 7)  # the learner checkpointed them: memory and disk free again
        assert not sp.saturated and sp.retry_disk() == 0 and not sp.disk_full
    finally:
        subprocess.run(["umount", str(spool_dir)], capture_output=True)
