"""launch/pretrain.sh end to end: a real process on a dataset file, logs, checkpoints, resume."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import PretrainConfig, RewardConfig, read_config_file
from shared.metrics import read_jsonl
from shared.storage.checkpoint import list_steps, load_checkpoint
from tests.tiny_tasks import collect_mixed_dataset

pytestmark = pytest.mark.slow  # pre-training runs as a process, checkpoints and resumes

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--set",
    "agent.num_critics=2",
    "--set",
    "agent.critic_net.hidden_dims=[32,32]",
    "--set",
    "agent.actor_net.hidden_dims=[32,32]",
    "--set",
    "agent.batch_size=32",
    "--set",
    "log_every=20",
    "--set",
    "checkpoint_every=40",
    "--set",
    "agent.gamma=0.95",
    "--set",
    "agent.num_backup_actions=2",
    "--set",
    "agent.cql.num_actions=2",
]


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "learner.pretrain", *args, "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("algo", ["calql", "iql"])
def test_pretrain_cli_logs_checkpoints_and_resumes(tmp_path, algo):
    buf, _ = collect_mixed_dataset(episodes=20, reward=RewardConfig(), gamma=0.99, seed=0)
    data = buf.save(tmp_path / "data.npz", info={"task": "point_reach"})
    out = tmp_path / "run"
    r = run("--dataset", str(data), "--out", str(out), "--algo", algo, "--steps", "80", *TINY)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["grad_steps"] == 80
    assert list_steps(out / "checkpoints")[-1] == 80
    records = read_jsonl(out / "metrics.jsonl")
    assert [rec["step"] for rec in records] == [20, 40, 60, 80]
    assert all("critic_loss" in rec for rec in records)
    assert any((out / "tensorboard").iterdir())

    r = run("--dataset", str(data), "--out", str(out), "--algo", algo, "--steps", "120", "--resume", *TINY)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    ck = load_checkpoint(out / "checkpoints")
    assert int(ck.agent.grad_steps) == 120 and ck.phase_config(PretrainConfig).agent.algo == algo
    assert [rec["step"] for rec in read_jsonl(out / "metrics.jsonl")][-2:] == [100, 120]


def test_pretrain_cli_rejects_a_wrong_dataset(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a dataset")
    r = run("--dataset", str(bad), "--out", str(tmp_path / "o"), "--steps", "10")
    assert r.returncode != 0 and "not a readable .npz" in r.stderr


def test_pretrain_cli_evaluates_in_the_simulation(tmp_path):
    from robot_env.collect import collect

    data = tmp_path / "peg.npz"
    collect(data, transitions=300, progress=False)
    out = tmp_path / "run"
    r = run(
        "--dataset",
        str(data),
        "--out",
        str(out),
        "--preset",
        "peg_sim",
        "--steps",
        "40",
        *TINY,
        "--eval-env",
        "PegInsertionSim-v0",
        "--eval-episodes",
        "2",
        "--eval-every",
        "20",
    )
    assert r.returncode == 0, r.stderr
    evals = [rec for rec in read_jsonl(out / "metrics.jsonl") if "eval/success_rate" in rec]
    assert [rec["step"] for rec in evals] == [20, 40]
    assert all(rec["eval/episodes"] == 2 and 0 <= rec["eval/success_rate"] <= 1 for rec in evals)
    assert "eval at gradient step 40" in r.stderr
    # the peg_sim preset normalises the state with the dataset's statistics, saved with the run
    saved = read_config_file(out / "config.yaml", PretrainConfig, "pretrain")
    enc = saved.agent.encoder
    assert enc.normalize_state and enc.state_mean is not None and enc.state_std is not None
    assert len(enc.state_mean) == len(enc.state_std) == 19
    agent = load_checkpoint(out / "checkpoints").agent
    assert agent.config == saved.agent  # the saved file is the config that ran, to the last digit


def test_pretraining_on_cached_trunk_features_is_pretraining_on_the_images(tmp_path):
    """Tiny camera frames of the simulated peg task, a tiny frozen ResNet-10: the dataset's frames
    go through the trunk once and Cal-QL trains on the features; the same run recomputing the
    trunk for every sampled row (``cache_trunk_features=false``, augmentation off) ends with the
    same parameters, to float rounding."""
    import jax
    import numpy as np

    from learner.pretrain import pretrain
    from robot_env.collect import collect
    from shared.config import AgentConfig, EncoderConfig, NetworkConfig
    from shared.storage.replay_buffer import ReplayBuffer

    data = tmp_path / "images.npz"
    collect(data, transitions=120, obs_mode="images", image_size=16, gamma=0.95, seed=0, progress=False)
    enc = EncoderConfig(
        kind="resnet10",
        image_keys=("wrist_1", "wrist_2"),
        base_filters=8,
        bottleneck_dim=16,
        num_spatial_features=2,
        augment_pad=0,
    )
    net = NetworkConfig(hidden_dims=(32, 32))
    agent = AgentConfig(
        algo="calql", gamma=0.95, encoder=enc, num_critics=2, batch_size=16, utd=1, critic_net=net, actor_net=net
    )
    runs = {}
    for cached in (True, False):
        cfg = PretrainConfig(agent=agent, steps=6, checkpoint_every=6, cache_trunk_features=cached)
        buf = ReplayBuffer.load(data, gamma=0.95)
        runs[cached] = pretrain(cfg, buf, tmp_path / f"cached_{cached}", progress=False, tensorboard=False)
        if cached:  # the features stored beside the frames, the checkpoint's spec the cameras'
            assert sorted(buf.obs_spec) == ["state", "wrist_1", "wrist_1@trunk", "wrist_2", "wrist_2@trunk"]
            ck = load_checkpoint(tmp_path / "cached_True" / "checkpoints")
            assert sorted(ck.obs_spec) == ["state", "wrist_1", "wrist_2"]
    for part in ("critic", "actor"):
        a, b = getattr(runs[True], part).params, getattr(runs[False], part).params
        jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-5), a, b)
    assert int(runs[True].grad_steps) == 6
