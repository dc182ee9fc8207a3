import threading

import numpy as np
import pytest

from shared.data.dataset import DatasetError, load_arrays, save_arrays
from shared.storage.replay_buffer import ReplayBuffer

SPEC = {"state": ((2,), "float32"), "img": ((4, 4, 3), "uint8")}


def obs(v):
    return {"state": np.full(2, v, np.float32), "img": np.full((4, 4, 3), int(v) % 256, np.uint8)}


def episode(buf, start, length, success, stream=0):
    """Insert an episode whose observations are start, start+1, ...; reward 0 on success else -1."""
    for t in range(length):
        last = t == length - 1
        buf.insert(
            {
                "observations": obs(start + t),
                "actions": np.full(1, 0.1 * t, np.float32),
                "rewards": 0.0 if (success and last) else -1.0,
                "next_observations": obs(start + t + 1),
                "masks": 0.0 if (success and last) else 1.0,
                "dones": last,
            },
            stream=stream,
        )


def make(capacity=100, gamma=0.5):
    return ReplayBuffer(SPEC, 1, capacity, gamma, r_neg=-1.0)


def test_frames_are_stored_once_and_transitions_reassemble():
    buf = make()
    episode(buf, 0, 3, success=True)
    # 3 transitions + 1 reset observation slot, not 6 frames
    assert buf._written == 4 and len(buf) == 3
    b = buf.sample(64, np.random.default_rng(0))
    np.testing.assert_array_equal(b["next_observations"]["state"][:, 0], b["observations"]["state"][:, 0] + 1)
    np.testing.assert_array_equal(b["next_observations"]["img"][:, 0, 0, 0], b["observations"]["img"][:, 0, 0, 0] + 1)
    np.testing.assert_allclose(b["actions"][:, 0], 0.1 * b["observations"]["state"][:, 0], rtol=1e-5)


def test_mc_returns_filled_when_episode_ends():
    buf = make(gamma=0.5)
    episode(buf, 0, 3, success=True)
    episode(buf, 10, 2, success=False)
    valid = np.flatnonzero(buf.valid)
    # success episode: rewards -1, -1, 0 -> [-1.5, -1, 0]; failure: -1 / (1 - 0.5) = -2
    np.testing.assert_allclose(buf.mc_returns[valid], [-1.5, -1.0, 0.0, -2.0, -2.0])


def test_open_episode_has_vacuous_bound_until_done():
    buf = make()
    buf.insert(
        {
            "observations": obs(0),
            "actions": [0.0],
            "rewards": -1.0,
            "next_observations": obs(1),
            "masks": 1.0,
            "dones": False,
        }
    )
    assert np.isneginf(buf.mc_returns[np.flatnonzero(buf.valid)]).all()


def test_interleaved_streams_keep_their_episodes():
    buf = make()
    for t in range(3):
        for s, base in ((0, 0), (1, 100)):
            last = t == 2
            buf.insert(
                {
                    "observations": obs(base + t),
                    "actions": [0.0],
                    "rewards": -1.0,
                    "next_observations": obs(base + t + 1),
                    "masks": 1.0,
                    "dones": last,
                },
                stream=s,
            )
    assert len(buf) == 6 and buf.discontinuities == 0
    b = buf.sample(200, np.random.default_rng(1))
    np.testing.assert_array_equal(b["next_observations"]["state"], b["observations"]["state"] + 1)


def test_discontinuous_observation_starts_a_new_episode():
    buf = make()
    buf.insert(
        {
            "observations": obs(0),
            "actions": [0.0],
            "rewards": -1.0,
            "next_observations": obs(1),
            "masks": 1.0,
            "dones": False,
        }
    )
    buf.insert(
        {
            "observations": obs(50),
            "actions": [0.0],
            "rewards": -1.0,
            "next_observations": obs(51),
            "masks": 1.0,
            "dones": True,
        }
    )
    assert buf.discontinuities == 1
    b = buf.sample(50, np.random.default_rng(0))
    np.testing.assert_array_equal(b["next_observations"]["state"], b["observations"]["state"] + 1)


def test_ring_overwrite_never_pairs_stale_frames():
    buf = make(capacity=7)
    for e in range(20):
        episode(buf, 1000 * e, 4, success=e % 2 == 0)
        if len(buf):
            b = buf.sample(100, np.random.default_rng(e))
            np.testing.assert_array_equal(b["next_observations"]["state"], b["observations"]["state"] + 1)
    assert len(buf) <= 7


def test_bad_inputs_are_rejected():
    buf = make()
    good = {
        "observations": obs(0),
        "actions": [0.0],
        "rewards": -1.0,
        "next_observations": obs(1),
        "masks": 1.0,
        "dones": False,
    }
    with pytest.raises(ValueError, match="actions"):
        buf.insert({**good, "actions": [np.nan]})
    with pytest.raises(ValueError, match="reward"):
        buf.insert({**good, "rewards": np.inf})
    with pytest.raises(ValueError, match="img"):
        buf.insert({**good, "observations": {"state": obs(0)["state"], "img": np.zeros((4, 4, 3), np.float32)}})
    with pytest.raises(ValueError, match="no transitions"):
        buf.sample(1, np.random.default_rng(0))


def test_sample_with_utd_leading_axis():
    buf = make()
    episode(buf, 0, 10, success=True)
    b = buf.sample(8, np.random.default_rng(0), leading=(4,))
    assert b["observations"]["img"].shape == (4, 8, 4, 4, 3)
    assert b["actions"].shape == (4, 8, 1) and b["rewards"].shape == (4, 8)


def test_save_load_round_trip_keeps_open_episodes(tmp_path):
    buf = make(capacity=9)
    for e in range(3):
        episode(buf, 100 * e, 3, success=True)
    buf.insert(
        {
            "observations": obs(500),
            "actions": [0.0],
            "rewards": -1.0,
            "next_observations": obs(501),
            "masks": 1.0,
            "dones": False,
        }
    )
    assert buf._written > buf.capacity  # the ring has wrapped
    done_before = int((buf.valid & buf.dones).sum())
    path = buf.save(tmp_path / "buf.npz", info={"env": "test"})
    loaded = ReplayBuffer.load(path)
    for name in ("obs_slot", "actions", "rewards", "masks", "dones", "valid", "mc_returns"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(buf, name))
    # the open episode continues after loading, without a new reset slot
    loaded.insert(
        {
            "observations": obs(501),
            "actions": [0.0],
            "rewards": 0.0,
            "next_observations": obs(502),
            "masks": 0.0,
            "dones": True,
        }
    )
    assert loaded.discontinuities == 0
    assert int((loaded.valid & loaded.dones).sum()) == done_before + 1
    assert np.isfinite(loaded.mc_returns[loaded.valid]).all()


def test_load_with_other_gamma_recomputes_returns(tmp_path):
    buf = make(gamma=0.5)
    episode(buf, 0, 3, success=True)
    path = buf.save(tmp_path / "d.npz")
    loaded = ReplayBuffer.load(path, gamma=0.9)
    np.testing.assert_allclose(loaded.mc_returns[loaded.valid], [-1.9, -1.0, 0.0], rtol=1e-6)


def test_concurrent_insert_and_sample():
    buf = make(capacity=500)
    errors = []

    def writer(stream):
        try:
            for e in range(20):
                episode(buf, 10_000 * stream + 100 * e, 5, success=True, stream=stream)
        except Exception as ex:  # pragma: no cover - reported below
            errors.append(ex)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    rng = np.random.default_rng(0)
    while any(t.is_alive() for t in threads):
        if len(buf):
            b = buf.sample(32, rng)
            np.testing.assert_array_equal(b["next_observations"]["state"], b["observations"]["state"] + 1)
    for t in threads:
        t.join()
    assert not errors and len(buf) == 300 and buf.discontinuities == 0


# ---------------------------------------------------------------------------- dataset schema


def _dataset(tmp_path):
    buf = make()
    episode(buf, 0, 3, success=True)
    return load_arrays(buf.save(tmp_path / "d.npz"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a, m: a.pop("rewards"), "missing array 'rewards'"),
        (lambda a, m: a.pop("obs/img"), "missing array 'obs/img'"),
        (lambda a, m: a.__setitem__("actions", a["actions"].astype(np.float64)), "'actions' is float64"),
        (lambda a, m: a.__setitem__("obs/img", a["obs/img"][:, :2]), "'obs/img' has shape"),
        (lambda a, m: a.__setitem__("masks", a["masks"][:2]), "'masks' has 2 rows"),
        (lambda a, m: m.pop("obs_spec"), "meta is missing 'obs_spec'"),
        (lambda a, m: m.__setitem__("format", "serl-pkl"), "format is 'serl-pkl'"),
        (lambda a, m: a.__setitem__("obs_slot", a["obs_slot"] + 99), "'obs_slot' points outside"),
        (lambda a, m: a["actions"].__setitem__(1, 3.0), "within \\[-1, 1\\]"),
    ],
)
def test_wrong_dataset_gives_clear_error(tmp_path, mutate, message):
    arrays, meta = _dataset(tmp_path)
    mutate(arrays, meta)
    path = save_arrays(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(DatasetError, match=message):
        ReplayBuffer.load(path)


def test_not_a_dataset_file(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"this is not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        ReplayBuffer.load(p)
    with pytest.raises(DatasetError, match="no such dataset file"):
        ReplayBuffer.load(tmp_path / "missing.npz")
