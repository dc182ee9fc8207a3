"""The transition chunk format, the learner's ledger and the actor's spool (no sockets)."""

import numpy as np
import pytest

from actor.spool import Spool
from learner.ledger import Ledger
from shared.data.dataset import ValueLimits
from shared.storage.replay_buffer import ReplayBuffer
from shared.wire.chunks import ChunkBuilder, unpack_chunk
from shared.wire.protocol import ProtocolError, decode, decode_frames, encode, encode_frames

SPEC = {"state": ((3,), "float32"), "wrist_1": ((4, 4, 3), "uint8")}


def _obs(i):
    return {"state": np.full(3, i, np.float32), "wrist_1": np.full((4, 4, 3), i, np.uint8)}


def _episode_transitions(start, length, done_at_end=True):
    obs = _obs(start)
    out = []
    for i in range(length):
        nxt = _obs(start + i + 1)
        out.append(
            {
                "observations": obs,
                "actions": np.full(2, (start + i) / 100, np.float32),  # in [-1, 1], distinct
                "rewards": -1.0,
                "next_observations": nxt,
                "masks": 1.0,
                "dones": done_at_end and i == length - 1,
            }
        )
        obs = nxt
    return out


def test_chunk_stores_each_frame_once_and_round_trips():
    b = ChunkBuilder()
    ts = _episode_transitions(0, 3) + _episode_transitions(10, 2)
    for t in ts:
        b.add(t)
    msg = decode_frames(encode_frames(b.build("a", "s1", 7)))
    # 3 transitions of one episode: 4 frames; a new episode (new reset obs): 2 + 1 frames.
    assert msg["frames"]["state"].shape == (4 + 3, 3)
    assert msg["obs_index"].tolist() == [0, 1, 2, 4, 5]
    assert msg["next_index"].tolist() == [1, 2, 3, 5, 6]
    out = unpack_chunk(msg, SPEC, 2).transitions()
    assert len(out) == 5 and len(b) == 0
    for t, u in zip(ts, out):
        for k in SPEC:
            np.testing.assert_array_equal(u["observations"][k], t["observations"][k])
            np.testing.assert_array_equal(u["next_observations"][k], t["next_observations"][k])
        np.testing.assert_array_equal(u["actions"], t["actions"])
        assert u["dones"] == t["dones"] and u["masks"] == t["masks"]


def _valid_msg():
    b = ChunkBuilder()
    for t in _episode_transitions(0, 3):
        b.add(t)
    return decode(encode(b.build("a", "s1", 0)))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m["frames"].pop("wrist_1"), "keys"),
        (lambda m: m["frames"].__setitem__("state", m["frames"]["state"].astype(np.float64)), "float32"),
        (lambda m: m.__setitem__("obs_index", np.array([0, 1, 9], np.int32)), "outside"),
        (lambda m: m["actions"].__setitem__((1, 0), np.nan), "actions must be finite"),
        (lambda m: m["frames"]["state"].__setitem__((0, 0), np.inf), "'state' must be finite"),
        # finite but out of range: what would poison every later checkpoint
        (lambda m: m["actions"].__setitem__((1, 0), 2.0), r"actions must be finite and within \[-1, 1\]"),
        (lambda m: m["actions"].__setitem__((0, 1), 1e12), "actions must be"),
        (lambda m: m["frames"]["state"].__setitem__((0, 0), 3e38), "observation 'state' must be"),
        (lambda m: m["rewards"].__setitem__(0, 1e30), "rewards must be finite and within"),
        (lambda m: m["masks"].__setitem__(0, 0.5), "masks"),
        (lambda m: m.__setitem__("rewards", np.zeros(2, np.float32)), "rewards"),
        (lambda m: m.__setitem__("seq", -1), "seq"),
        (lambda m: m.__setitem__("actor", "x" * 100), "actor"),
        (lambda m: m.__setitem__("obs_index", np.zeros(0, np.int32)), "1-4096"),
        (lambda m: m.__setitem__("frames", [1, 2]), "keys"),
    ],
)
def test_bad_chunks_are_refused_whole(mutate, message):
    msg = _valid_msg()
    mutate(msg)
    with pytest.raises(ProtocolError, match=message):
        unpack_chunk(msg, SPEC, 2)


def test_ingest_and_the_loader_apply_the_same_value_limits(tmp_path):
    """Whatever ingest accepts, a replay snapshot of it loads back: one definition of valid."""
    limits = ValueLimits(reward=1.0, observation=100.0)
    ok = _valid_msg()
    ok["actions"][0, 0] = 1.0  # on the edge: fine for both
    chunk = unpack_chunk(ok, SPEC, 2, limits)
    buf = ReplayBuffer(SPEC, 2, 16, 0.99, -1.0)
    buf.insert_chunk(**chunk.arrays())
    ReplayBuffer.load(buf.save(tmp_path / "ok.npz"))
    bad = _valid_msg()
    bad["frames"]["state"][0, 0] = 1e3  # finite, but beyond the learner's state limit
    with pytest.raises(ProtocolError, match="observation 'state'"):
        unpack_chunk(bad, SPEC, 2, limits)
    assert ValueLimits().problem(np.full((1, 2), 2.0), np.zeros(1), {}) == "actions must be finite and within [-1, 1]"


def test_ledger_watermark_and_out_of_order():
    led = Ledger()
    for seq in (0, 1, 3, 5):
        led.add("a", "s", seq, 10)
    assert led.marks("a") == {"s": [1, [3, 5]]}
    led.add("a", "s", 2, 10)
    assert led.marks("a") == {"s": [3, [5]]}
    assert led.has("a", "s", 0) and led.has("a", "s", 5) and not led.has("a", "s", 4)
    assert not led.has("a", "other", 0) and not led.has("b", "s", 0)
    assert led.transitions() == 50 and led.transitions("a") == 50
    again = Ledger(led.to_json())
    assert again.to_json() == led.to_json()
    snap = led.copy()
    led.add("a", "s", 4, 1)
    assert snap.marks("a") == {"s": [3, [5]]} and led.marks("a") == {"s": [5, []]}


def test_a_ledger_hole_that_outlives_its_bound_is_counted_lost_not_kept_open():
    led = Ledger()
    for seq in (0, 2, 3, 5):  # 1 and 4 missing
        led.add("a", "s", seq, 10)
    assert led.highest("a", "s") == 5 and led.highest("a", "other") == -1
    assert led.close_holes("a", "s", max_extras=3) == []  # 3 waiting: within the bound
    led.add("a", "s", 6, 10)
    assert led.close_holes("a", "s", max_extras=3) == [1, 4]  # 4 waiting: both holes given up
    assert led.marks("a") == {"s": [6, []]} and led.lost("a") == 2 and led.transitions("a") == 50
    assert Ledger(led.to_json()).lost("a") == 2  # kept in every checkpoint
    led.add("a", "s", 7, 10)
    assert led.marks("a") == {"s": [7, []]}


def test_spool_journal_ack_commit_and_restart(tmp_path):
    sp = Spool(tmp_path, memory_bytes=250)
    for seq in range(4):
        sp.add("s1", seq, 10, [bytes([seq]) * 60, bytes([seq]) * 40])
    # Only the newest payloads stay in memory (250 bytes); all four are on disk.
    assert sp.memory_in_use <= 250 and sp.spilled == 2
    assert len(list(tmp_path.glob("*.chunk"))) == 4
    assert sp.payload(("s1", 0)) == [bytes([0]) * 60, bytes([0]) * 40]  # read back from disk
    assert sp.unacked_transitions == 40
    assert sp.due(now=10.0, resend_after=2.0, limit=10, max_in_flight=3) == [("s1", 0), ("s1", 1), ("s1", 2)]
    for seq in range(3):
        sp.mark_sent(("s1", seq), 10.0)
    assert sp.due(now=11.0, resend_after=2.0, limit=10, max_in_flight=3) == []  # three in flight
    assert sp.ack("s1", 0) == 10 and sp.ack("s1", 0) == 0
    assert sp.due(now=11.0, resend_after=2.0, limit=10, max_in_flight=3) == [("s1", 3)]
    assert sp.due(now=12.5, resend_after=2.0, limit=10, max_in_flight=5) == [("s1", 1), ("s1", 2), ("s1", 3)]
    sp.ack("s1", 1)
    sp.commit("s1", 0)  # the learner checkpointed chunk 0: forgotten, file gone
    assert len(sp) == 3 and not list(tmp_path.glob("s1-000000000000-*"))
    # A new process finds everything not committed, all unacknowledged (the learner dedupes).
    sp2 = Spool(tmp_path)
    assert len(sp2) == 3 and sp2.unacked_transitions == 30
    # A learner that restarted from its checkpoint needs the acknowledged ones again.
    assert sp.unack_all() == 10 and sp.unacked_transitions == 30
    sp.reject("s1", 2, "bad shape")
    assert (tmp_path / "rejected" / "s1-000000000002-10.chunk").exists()
    assert "bad shape" in (tmp_path / "rejected" / "s1-000000000002-10.chunk.reason").read_text()
    assert sp.archive("run-old") == (2, 20) and len(sp) == 0 and sp.unacked_transitions == 0
    assert len(list((tmp_path / "run-old").glob("*.chunk"))) == 2


def test_chunk_insert_matches_one_by_one_insert():
    from shared.storage.replay_buffer import ReplayBuffer

    ts = _episode_transitions(0, 3) + _episode_transitions(10, 2, done_at_end=False) + _episode_transitions(12, 2)
    b = ChunkBuilder()
    for t in ts[:4]:
        b.add(t)
    first = unpack_chunk(decode_frames(encode_frames(b.build("a", "s", 0))), SPEC, 2)
    for t in ts[4:]:
        b.add(t)
    second = unpack_chunk(decode_frames(encode_frames(b.build("a", "s", 1))), SPEC, 2)
    one, bulk = (ReplayBuffer(SPEC, 2, 50, 0.9, r_neg=-1.0) for _ in range(2))
    for t in ts:
        one.insert(t, stream="a")
    bulk.insert_chunk(**first.arrays(), stream="a")
    bulk.insert_chunk(**second.arrays(), stream="a")  # continues the open episode across chunks
    for name in ("obs_slot", "actions", "rewards", "masks", "dones", "valid", "mc_returns"):
        np.testing.assert_array_equal(getattr(bulk, name), getattr(one, name), err_msg=name)
    for k in SPEC:
        np.testing.assert_array_equal(bulk.frames[k], one.frames[k])
    assert bulk.discontinuities == one.discontinuities == 0
    with pytest.raises(ValueError, match="outside"):
        bulk.insert_chunk(**{**first.arrays(), "obs_index": first.obs_index + 50})


def test_sender_stops_on_a_learner_of_another_protocol_version(tmp_path):
    import msgpack

    from actor.sender import FatalLearnerError, TransitionSender

    s = TransitionSender("127.0.0.1", 1, "a", "fp", tmp_path)  # never started: no socket needed
    s._handle(msgpack.packb({"type": "welcome", "v": 99}))
    assert "protocol version" in s.fatal
    with pytest.raises(FatalLearnerError, match="protocol version"):
        s.put({})


def test_the_resend_timer_follows_rfc_6298():
    """RFC 6298 section 2 by hand: the first sample R gives SRTT = R, RTTVAR = R/2; later ones
    RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, SRTT = 7/8 SRTT + 1/8 R; RTO = SRTT + 4 RTTVAR, within
    the bounds; an expiry doubles it (5.5)."""
    from actor.resend_timer import ResendTimer

    t = ResendTimer(minimum=0.5, maximum=10.0)
    assert t.timeout == 0.5 and t.srtt is None
    t.sample(1.0)
    assert (t.srtt, t.rttvar, t.timeout) == (1.0, 0.5, 3.0)
    t.sample(2.0)
    assert t.rttvar == pytest.approx(0.625) and t.srtt == pytest.approx(1.125) and t.timeout == pytest.approx(3.625)
    t.expired()
    assert t.timeout == pytest.approx(7.25)
    t.expired()
    assert t.timeout == 10.0  # the maximum
    t.sample(1.125)  # a sample ends the back-off
    assert t.timeout == pytest.approx(1.125 + 4 * 0.75 * 0.625)
    quick = ResendTimer(minimum=0.5, maximum=10.0)
    quick.sample(0.01)
    assert quick.timeout == 0.5  # never below the configured minimum
    with pytest.raises(ValueError):
        ResendTimer(minimum=2.0, maximum=1.0)


def test_only_a_chunk_sent_once_times_the_round_trip(tmp_path):
    """Karn's algorithm: an ack of a resent chunk may answer either send, so it is no sample."""
    sp = Spool(tmp_path)
    sp.add("s1", 0, 2, [b"a"])
    sp.add("s1", 1, 2, [b"b"])
    assert sp.sent_once_at("s1", 0) is None  # not sent yet
    sp.mark_sent(("s1", 0), 1.0)
    sp.mark_sent(("s1", 1), 1.0)
    sp.mark_sent(("s1", 1), 3.0)
    assert sp.sent_once_at("s1", 0) == 1.0 and sp.sent_once_at("s1", 1) is None
    sp.ack("s1", 0)
    assert sp.sent_once_at("s1", 0) is None  # acknowledged: nothing to time
    sp.unack_all()  # a new learner: every chunk is sent afresh, and its first send times again
    sp.mark_sent(("s1", 1), 5.0)
    assert sp.sent_once_at("s1", 1) == 5.0
