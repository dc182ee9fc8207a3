"""Converting SERL's pickled assets (learner/serl_assets.py), on files of SERL's structure made here."""

import os
import pickle
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import freeze

from learner.serl_assets import UnsafePickleError, convert_resnet, convert_transitions, restricted_load
from shared.config import RewardConfig
from shared.learning.encoders import ResNet10Trunk, load_pretrained_trunks
from shared.storage.replay_buffer import ReplayBuffer

F = 8  # base filters of the tiny trunk


def serl_resnet_params(seed: int = 0) -> dict:
    """Random weights in SERL's ResNet-10 parameter tree (its module names, its shapes)."""
    rng = np.random.default_rng(seed)
    w = lambda *s: np.asarray(rng.normal(0, 0.3, s), np.float32)
    norm = lambda c: {"scale": 1 + w(c), "bias": w(c)}
    p: dict[str, Any] = {"conv_init": {"kernel": w(7, 7, 3, F)}, "norm_init": norm(F)}
    c_in = F
    for i in range(4):
        c = F * 2**i
        block: dict[str, dict[str, np.ndarray]] = {"Conv_0": {"kernel": w(3, 3, c_in, c)}, "MyGroupNorm_0": norm(c)}
        block |= {"Conv_1": {"kernel": w(3, 3, c, c)}, "MyGroupNorm_1": norm(c)}
        if i > 0:
            block |= {"conv_proj": {"kernel": w(1, 1, c_in, c)}, "norm_proj": norm(c)}
        p[f"ResNetBlock_{i}"] = block
        c_in = c
    return p


def serl_forward(p: dict, images: np.ndarray) -> jax.Array:
    """SERL's ResNet-10 (pre-pooling) written out from its definition with lax primitives:
    ImageNet normalisation, a 7x7/2 stem padded by 3, GroupNorm(4 groups, eps 1e-5), ReLU,
    3x3/2 max pool, four basic blocks (stride 2 from the second, a 1x1 projection when shapes change)."""
    mean, std = jnp.array([0.485, 0.456, 0.406]), jnp.array([0.229, 0.224, 0.225])
    x = (jnp.asarray(images, jnp.float32) / 255.0 - mean) / std

    def conv(x, k, stride, pad):
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, k, (stride, stride), pad, dimension_numbers=dn)

    def gn(x, n):
        b, h, w_, c = x.shape
        g = x.reshape(b, h, w_, 4, c // 4)
        mu = g.mean(axis=(1, 2, 4), keepdims=True)
        var = g.var(axis=(1, 2, 4), keepdims=True)
        return ((g - mu) / jnp.sqrt(var + 1e-5)).reshape(x.shape) * n["scale"] + n["bias"]

    x = jax.nn.relu(gn(conv(x, p["conv_init"]["kernel"], 2, [(3, 3), (3, 3)]), p["norm_init"]))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    for i in range(4):
        b, s = p[f"ResNetBlock_{i}"], 1 if i == 0 else 2
        y = jax.nn.relu(gn(conv(x, b["Conv_0"]["kernel"], s, "SAME"), b["MyGroupNorm_0"]))
        y = gn(conv(y, b["Conv_1"]["kernel"], 1, "SAME"), b["MyGroupNorm_1"])
        if "conv_proj" in b:
            x = gn(conv(x, b["conv_proj"]["kernel"], s, "SAME"), b["norm_proj"])
        x = jax.nn.relu(x + y)
    return x


def test_serls_resnet10_weights_convert_to_our_trunk_and_compute_the_same_features(tmp_path):
    params = serl_resnet_params()
    # SERL's file may hold flax FrozenDicts and jax arrays: both read as plain dicts and numpy arrays
    stored = freeze({k: jax.tree.map(jnp.asarray, v) if k == "ResNetBlock_3" else v for k, v in params.items()})
    src = tmp_path / "resnet10_params.pkl"
    src.write_bytes(pickle.dumps(stored))
    summary = convert_resnet(src, tmp_path / "trunk.npz")
    assert summary["parameters"] == sum(v.size for v in jax.tree.leaves(params))
    trunk = ResNet10Trunk(base_filters=F)
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    init = trunk.init(jax.random.PRNGKey(0), images)["params"]
    loaded = load_pretrained_trunks({"trunk_wrist_1": init}, tmp_path / "trunk.npz")["trunk_wrist_1"]
    np.testing.assert_array_equal(loaded["stage2"]["proj"]["kernel"], params["ResNetBlock_2"]["conv_proj"]["kernel"])
    ours = trunk.apply({"params": loaded}, images)
    np.testing.assert_allclose(ours, serl_forward(params, images), rtol=2e-4, atol=2e-4)
    assert ours.shape == (2, 1, 1, 8 * F)


class _Effect:
    """A pickle that would create a folder when loaded by a plain unpickler."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


class _Custom:
    pass


def test_the_unpickler_refuses_anything_but_arrays_and_containers(tmp_path):
    target = tmp_path / "made_by_the_pickle"
    cases = {
        "os.makedirs": {"kernel": _Effect(str(target))},
        "_Custom": [np.zeros(2), _Custom()],
        "an array of Python objects": {"x": np.array([{"a": 1}, None], dtype=object)},
    }
    for i, (needle, obj) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.pkl"
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(UnsafePickleError, match=needle):
            restricted_load(path)
    assert not target.exists()  # refused before anything was built
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps({"a": np.zeros(100)})[:50])
    with pytest.raises(ValueError, match="not a readable pickle"):
        restricted_load(tmp_path / "cut.pkl")


def serl_episode(rng, length, success):
    """One episode as SERL stores it: observations with a leading frame axis of 1."""
    frames = [
        {"state": rng.normal(size=(1, 19)).astype(np.float32), "wrist_1": rng.integers(0, 256, (1, 8, 8, 3), np.uint8)}
        for _ in range(length + 1)
    ]
    out = []
    for t in range(length):
        last = t == length - 1
        r = 1.0 if (last and success) else 0.0
        out.append(
            {
                "observations": frames[t],
                "actions": rng.uniform(-1, 1, 6).astype(np.float32),
                "next_observations": frames[t + 1],
                "rewards": r,
                "masks": 0.0 if r else 1.0,
                "dones": last,
            }
        )
    return out


def test_serl_transitions_convert_to_a_dataset_with_every_transition(tmp_path):
    rng = np.random.default_rng(0)
    eps = [serl_episode(rng, 5, True), serl_episode(rng, 4, False)]
    for i, ep in enumerate(eps):
        (tmp_path / f"transitions_{i}.pkl").write_bytes(pickle.dumps(ep))
    reward = RewardConfig()
    srcs = [tmp_path / "transitions_0.pkl", tmp_path / "transitions_1.pkl"]
    summary = convert_transitions(srcs, tmp_path / "serl.npz", 0.98, reward)
    assert summary["transitions"] == 9 and summary["episodes"] == 2 and summary["success_rate"] == 0.5
    buf = ReplayBuffer.load(tmp_path / "serl.npz", gamma=0.98)
    assert buf.obs_spec == {"state": ((19,), "float32"), "wrist_1": ((8, 8, 3), "uint8")} and len(buf) == 9
    flat = [t for ep in eps for t in ep]
    idx = np.flatnonzero(buf.valid)  # the stored transitions, in the order they were taken
    np.testing.assert_array_equal(buf.actions[idx], [t["actions"] for t in flat])
    np.testing.assert_array_equal(buf.rewards[idx], [reward.apply(t["rewards"]) for t in flat])
    np.testing.assert_array_equal(buf.masks[idx], [t["masks"] for t in flat])
    for k in ("state", "wrist_1"):  # the frame axis dropped; next frames shared with the following step
        np.testing.assert_array_equal(buf.frames[k][idx], [t["next_observations"][k][0] for t in flat])
        np.testing.assert_array_equal(buf.frames[k][buf.obs_slot[idx]], [t["observations"][k][0] for t in flat])
    with pytest.raises(ValueError, match="0 or 1"):
        bad = [dict(flat[0], rewards=0.5)]
        (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad))
        convert_transitions([tmp_path / "bad.pkl"], tmp_path / "bad.npz", 0.98, reward)


def test_the_command_converts_in_its_own_process_and_refuses_clearly(tmp_path):
    (tmp_path / "w.pkl").write_bytes(pickle.dumps(serl_resnet_params()))
    cmd = [sys.executable, "-m", "learner.serl_assets", "resnet"]
    ok = subprocess.run(
        [*cmd, str(tmp_path / "w.pkl"), "--out", str(tmp_path / "t.npz")], capture_output=True, text=True
    )
    assert ok.returncode == 0 and f'"arrays": {len(jax.tree.leaves(serl_resnet_params()))}' in ok.stdout
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Effect(str(tmp_path / "x"))))
    bad = subprocess.run(
        [*cmd, str(tmp_path / "evil.pkl"), "--out", str(tmp_path / "e.npz")], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "only numpy arrays and plain containers" in bad.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "e.npz").exists()
