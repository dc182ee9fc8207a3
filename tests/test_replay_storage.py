"""Replay storage that scales: frames on disk (memory-mapped segments) and incremental cuts.

The reference for "exact" is a buffer that never went through disk or a checkpoint: the same
transitions inserted into a plain in-RAM buffer must give the same valid transitions, returns
and seeded samples as one rebuilt from a chain of deltas read back from files."""

import json
import threading

import numpy as np
import pytest

import shared.storage.frame_store as frame_store
from learner.checkpoint import LearnerCheckpoints
from learner.ledger import Ledger
from shared.config import OnlineConfig
from shared.data.dataset import DatasetError
from shared.learning.agents import create_agent
from shared.storage.replay_buffer import ReplayBuffer
from shared.storage.replay_delta import ReplayDelta
from tests.helpers import tiny_config

SPEC = {"state": ((3,), "float32"), "wrist": ((4, 4, 3), "uint8")}
CAPACITY = 37  # not a multiple of the segment length: segments and the ring do not line up


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    monkeypatch.setattr(frame_store, "SEGMENT_BYTES", 4 * 4 * 3 * 8)  # 8 frames a segment


def _traffic(seed, n):
    """n transitions from three interleaved actors: random-length episodes, some successful, one
    stream with a discontinuity (a frame that does not continue its episode)."""
    rng = np.random.default_rng(seed)
    state = dict.fromkeys(range(3))
    left = dict.fromkeys(range(3), 0)
    out = []
    for i in range(n):
        s = int(rng.integers(3))
        if state[s] is None or left[s] == 0 or (s == 2 and i == n // 2):
            state[s] = _obs(rng)
            left[s] = int(rng.integers(2, 9))
        nxt = _obs(rng)
        left[s] -= 1
        success = left[s] == 0 and rng.random() < 0.5
        t = {
            "observations": state[s],
            "actions": rng.uniform(-1, 1, 2).astype(np.float32),
            "rewards": 0.0 if success else -1.0,
            "next_observations": nxt,
            "masks": 0.0 if success else 1.0,
            "dones": left[s] == 0,
            "intervened": bool(rng.random() < 0.2),
        }
        out.append((t, f"actor{s}"))
        state[s] = nxt
    return out


def _obs(rng):
    return {
        "state": rng.normal(size=3).astype(np.float32),
        "wrist": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
    }


def _insert(buf, traffic):
    for t, stream in traffic:
        buf.insert(t, stream=stream)


def assert_same(a, b):
    np.testing.assert_array_equal(a.valid, b.valid)
    v = np.flatnonzero(a.valid)
    for name in ("obs_slot", "actions", "rewards", "masks", "dones", "mc_returns", "intervened"):
        np.testing.assert_array_equal(getattr(a, name)[v], getattr(b, name)[v], err_msg=name)
    for k in SPEC:
        np.testing.assert_array_equal(a.frame(k, v), b.frame(k, v), err_msg=k)
        np.testing.assert_array_equal(a.frame(k, a.obs_slot[v]), b.frame(k, b.obs_slot[v]), err_msg=k)
    assert (a.transitions_inserted, a.slots_written, a.discontinuities) == (
        b.transitions_inserted,
        b.slots_written,
        b.discontinuities,
    )
    sa = a.sample(16, np.random.default_rng(7), leading=(2,))
    sb = b.sample(16, np.random.default_rng(7), leading=(2,))
    for key in ("actions", "rewards", "masks", "dones", "mc_returns"):
        np.testing.assert_array_equal(sa[key], sb[key])
    for side in ("observations", "next_observations"):
        for k in SPEC:
            np.testing.assert_array_equal(sa[side][k], sb[side][k])


def test_frames_on_disk_hold_what_ram_holds(tmp_path):
    ram = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0)
    disk = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path)
    assert list(disk.frames) == ["state"] and list(disk.disk_frames) == ["wrist"]  # images only
    traffic = _traffic(0, 150)  # the ring wraps about 6 times
    _insert(ram, traffic)
    _insert(disk, traffic)
    assert_same(ram, disk)
    # Segments wholly overwritten are unmapped, not deleted (a checkpoint may still need them).
    store = disk.disk_frames["wrist"]
    assert store.length == 8 and len(list(tmp_path.glob("wrist_*.npy"))) == -(-disk.slots_written // 8)
    assert len(store._open) <= -(-CAPACITY // 8) + 2  # mapped: about the ring's segments


@pytest.mark.parametrize("frames_on_disk", [False, True])
def test_a_chain_of_cuts_rebuilds_the_buffer_exactly_and_it_goes_on_the_same(tmp_path, frames_on_disk):
    frames = tmp_path / "frames" if frames_on_disk else None
    ref = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0)
    live = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=frames)
    traffic = _traffic(1, 200)
    files = []
    pos = written = 0
    for n in (5, 30, 1, 0, 60, 12, 50):  # cuts with nothing new, and cuts after the ring wrapped
        _insert(ref, traffic[pos : pos + n])
        _insert(live, traffic[pos : pos + n])
        pos += n
        delta = live.cut(info={"at": pos})
        live.seal(delta)
        # Each delta holds the slots written since the cut before (at most the ring), no more.
        assert delta.rows == min(CAPACITY, live.slots_written - written)
        written = live.slots_written
        files.append(delta.save(tmp_path / f"delta_{len(files)}.npz"))
    rebuilt = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=frames)
    for f in files:
        rebuilt.apply(ReplayDelta.load(f))
    assert rebuilt.info == {"at": pos}
    assert_same(ref, rebuilt)
    # Resumed: the same new traffic (episodes still open at the cut continue) keeps them equal.
    _insert(ref, traffic[pos:])
    _insert(rebuilt, traffic[pos:])
    assert_same(ref, rebuilt)
    # And the rebuilt buffer's next cut continues the chain.
    nxt = rebuilt.cut()
    end = rebuilt.slots_written
    assert (nxt.start, nxt.end, nxt.state["full"]) == (max(written, end - CAPACITY), end, False)


def test_the_chain_can_drop_deltas_the_ring_has_overwritten(tmp_path):
    ref = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0)
    live = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path / "f")
    traffic = _traffic(2, 160)
    deltas = []
    for i in range(0, 160, 20):
        _insert(ref, traffic[i : i + 20])
        _insert(live, traffic[i : i + 20])
        d = live.cut()
        live.seal(d)
        deltas.append(d)
    kept = [d for d in deltas if d.end > deltas[-1].end - CAPACITY]
    assert len(kept) < len(deltas)
    rebuilt = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path / "f")
    for d in kept:
        rebuilt.apply(d)
    assert_same(ref, rebuilt)


def test_a_full_cut_reads_only_the_frames_no_earlier_cut_checksummed(tmp_path, monkeypatch):
    """A learner checkpoint starts a new chain with a full cut every few saves: with frames on
    disk it must not read the whole frame store again (20 GB at the robot's scale). It reuses
    the CRCs of earlier seals and reads only the frames of a range the ring cut in two."""
    from shared.storage.frame_store import SegmentedFrames

    read = []
    real = SegmentedFrames.checksum
    monkeypatch.setattr(SegmentedFrames, "checksum", lambda self, s, e: read.append(e - s) or real(self, s, e))
    buf = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path / "frames")
    traffic = _traffic(3, 100)
    for i in range(0, 100, 20):
        _insert(buf, traffic[i : i + 20])
        buf.seal(buf.cut())
    read.clear()
    full = buf.cut(full=True)
    buf.seal(full)
    assert full.rows == CAPACITY
    (ranges,) = [d["ranges"] for d in full.disk.values()]
    # The ring's oldest live range was cut in two by the ring: only its live part is read again.
    assert sum(read) == ranges[0][1] - ranges[0][0] < CAPACITY and len(ranges) > 1
    rebuilt = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path / "frames")
    rebuilt.apply(full)
    assert_same(buf, rebuilt)


def test_a_damaged_or_missing_frame_segment_costs_its_transitions_only_and_a_gap_is_refused(tmp_path, caplog):
    """Frame segments are shared by every checkpoint whose ring holds them: one flipped bit used
    to make every checkpoint unusable. Now the checksummed range that fails loses its frames'
    transitions (and those reading them as observations), counted and logged; the rest stays."""
    live = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path)
    _insert(live, _traffic(3, 20))
    first = live.cut()
    live.seal(first)
    later = []
    for seed in (4, 5):
        _insert(live, _traffic(seed, 10))
        later.append(live.cut())
        live.seal(later[-1])
    fresh = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path)
    fresh.apply(first)
    with pytest.raises(DatasetError, match="a gap"):
        fresh.apply(later[1])
    seg = tmp_path / "wrist_00000000.npy"
    raw = bytearray(seg.read_bytes())
    raw[-(4 * 4 * 3 * 8) + 5] ^= 0xFF  # a pixel of the first segment's frames
    seg.write_bytes(bytes(raw))
    hurt = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path)
    hurt.apply(first)
    assert len(hurt) == 0 and hurt.damaged_transitions == 20  # the range is the first cut's 20
    assert "damaged or missing; their transitions are dropped" in caplog.text
    hurt.apply(later[0])
    assert len(hurt) + hurt.damaged_transitions == 30 and len(hurt) >= 9  # counted, or kept
    # what is kept reads no damaged frame, as its own or as its observation
    assert (hurt._serial[hurt.valid] >= first.end).all()
    assert (hurt._serial[hurt.obs_slot[hurt.valid]] >= first.end).all()
    # a segment deleted: its ranges' transitions are lost the same way, and it is not recreated
    (tmp_path / "wrist_00000001.npy").unlink()
    gone = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_dir=tmp_path)
    gone.apply(first)
    assert gone.damaged_transitions == 20 and not (tmp_path / "wrist_00000001.npy").exists()
    other = ReplayBuffer(SPEC, 2, CAPACITY + 1, 0.9, -1.0, frames_dir=tmp_path)
    with pytest.raises(DatasetError, match="capacity 37"):
        other.apply(first)


def _save(ckpts, buf, n_env, grad_steps):
    cfg = OnlineConfig(agent=tiny_config(), buffer_capacity=CAPACITY, replay_frames_on_disk=True)
    agent = create_agent(cfg.agent, {k: np.zeros(s, d) for k, (s, d) in SPEC.items()}, 2)
    ledger = Ledger()
    ledger.add("robot", "s", 0, n_env)
    return ckpts.save(agent, cfg, buf, ledger, threading.Lock(), grad_steps, "run", None, 0)


def test_learner_checkpoints_are_incremental_rotate_their_files_and_restore_exactly(tmp_path):
    ckpts = LearnerCheckpoints(tmp_path, keep=4)
    live = ckpts.new_buffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_on_disk=True)
    ref = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0)
    traffic = _traffic(5, 240)
    written = 0
    for j, i in enumerate(range(0, 240, 24)):
        _insert(ref, traffic[i : i + 24])
        _insert(live, traffic[i : i + 24])
        step, _, _ = _save(ckpts, live, i + 24, i)
        delta = ReplayDelta.load(tmp_path / "replay" / f"delta_{step:012d}.npz")
        # Only what arrived: 24 transitions and their episodes' reset frames. No full cut after the
        # first: the ring overwrites a delta within two saves, so a chain never grows to keep - 1.
        assert delta.state["full"] == (j == 0) and delta.rows == live.slots_written - written <= 24 * 2
        written = live.slots_written
    ckpts.close()
    replay = tmp_path / "replay"
    # Four checkpoints kept; their chains need only the deltas the ring has not overwritten.
    chains = [json.loads(c.read_text())["deltas"] for c in sorted(replay.glob("chain_*.json"))]
    assert len(chains) == 4 and not set.intersection(*({e["name"] for e in c} for c in chains))
    assert len(list(replay.glob("delta_*.npz"))) <= CAPACITY // 24 + 1 + 4  # the oldest's ring, one per save
    segments = {f.name for f in replay.glob("frames/wrist_*.npy")}
    listed = set()
    for chain in replay.glob("chain_*.json"):
        for e in json.loads(chain.read_text())["deltas"]:
            listed.update(e["files"])
    live_segments = {
        f"wrist_{g:08d}.npy" for g in range((live.slots_written - CAPACITY) // 8, live.slots_written // 8 + 1)
    }
    assert segments == listed | live_segments  # what the kept chains or the ring need, nothing else
    # Far fewer than all ever written (37): those from the oldest row a kept chain holds on.
    oldest = min(e["start"] for c in chains for e in c)
    assert len(segments) == live.slots_written // 8 - oldest // 8 + 1 < live.slots_written // 8
    state = LearnerCheckpoints(tmp_path, keep=2).restore(CAPACITY)
    assert state.env_steps == 240
    assert_same(ref, state.buffer)
    with pytest.raises(ValueError, match="resume with that capacity"):
        LearnerCheckpoints(tmp_path, keep=2).restore(CAPACITY * 2)


def test_a_learner_killed_after_a_checkpoint_resumes_from_its_disk_frames_and_the_resent_rest(tmp_path):
    """What a kill leaves: segments holding frames written after the last checkpoint (and a
    process that never closed anything). The restored buffer equals the checkpoint's, and the
    actors' resend of what came after makes it equal to a buffer that was never killed."""
    traffic = _traffic(6, 200)
    ref = ReplayBuffer(SPEC, 2, CAPACITY, 0.9, -1.0)
    ckpts = LearnerCheckpoints(tmp_path, keep=2)
    live = ckpts.new_buffer(SPEC, 2, CAPACITY, 0.9, -1.0, frames_on_disk=True)
    for i in range(0, 120, 30):
        _insert(live, traffic[i : i + 30])
        _save(ckpts, live, i + 30, i)
    _insert(ref, traffic[:120])
    _insert(live, traffic[120:170])  # after the last checkpoint: frames on disk, no checkpoint
    del live, ckpts  # killed: nothing closed, nothing flushed by us
    state = LearnerCheckpoints(tmp_path, keep=2).restore(CAPACITY)
    assert state.env_steps == 120
    assert_same(ref, state.buffer)
    _insert(ref, traffic[120:])
    _insert(state.buffer, traffic[120:])  # the actors resend from the ledger
    assert_same(ref, state.buffer)
