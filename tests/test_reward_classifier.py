"""The reward classifier: labelled images, training, threshold, checkpoint, the reward wrapper."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import jax
import numpy as np
import pytest

import robot_env
from actor.evaluate import evaluate_poses
from actor.record_labels import KeyboardLabeller, RandomSkillInserter, record
from learner.train_reward_classifier import BalancedSampler, SplitError, split_episodes, train
from robot_env.classifier_reward import ClassifierReward
from robot_env.contract import IMAGE_KEYS
from robot_env.make import make_env
from shared.config import ClassifierConfig, ClassifierTrainConfig, EncoderConfig, RewardConfig
from shared.data.labelled_images import LabelledImagesError, LabelledImageWriter, load_labelled_images
from shared.learning.encoders import save_trunk_params
from shared.learning.reward_classifier import binary_metrics, choose_threshold, init_params, load_classifier
from shared.storage.checkpoint import CheckpointError
from tests.helpers import save_tiny_policy

ROOT = Path(__file__).resolve().parent.parent
SIZE = 24
STATE_SPEC = {"state": ((19,), "float32")}


# ------------------------------------------------------------------------------ by hand


def test_metrics_and_threshold_by_hand():
    probs = np.array([0.95, 0.9, 0.7, 0.6, 0.4, 0.2, 0.1])
    labels = np.array([1, 1, 0, 1, 0, 0, 1])
    m = binary_metrics(probs, labels, 0.65)  # called success: 0.95, 0.9, 0.7 -> tp 2, fp 1; fn 2, tn 2
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 2, 2)
    assert m["accuracy"] == pytest.approx(4 / 7) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(0.5) and m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert binary_metrics(probs, labels, 0.99)["precision"] == 1.0  # nothing called a success
    # precision >= 0.95: only cuts at 0.95 and 0.9 qualify; 0.9 has recall 0.5. Halfway to 0.7 -> 0.8.
    t, rule = choose_threshold(probs, labels, 0.95)
    assert t == pytest.approx(0.8) and "highest recall" in rule
    # precision >= 0.7: the cut at 0.6 (tp 3, fp 1: precision 0.75, recall 0.75); halfway to 0.4.
    assert choose_threshold(probs, labels, 0.7)[0] == pytest.approx(0.5)
    # unreachable precision: best F0.5 instead, and the rule says so
    t, rule = choose_threshold(np.array([0.9, 0.8]), np.array([0, 1]), 0.99)
    assert "F0.5" in rule and t == pytest.approx(0.8)


def test_validation_is_whole_episodes_and_batches_are_balanced():
    episode = np.repeat(np.arange(10), 10)
    labels = np.tile(np.r_[np.zeros(7), np.ones(3)], 10).astype(np.uint8)
    train_idx, val_idx = split_episodes(episode, labels, 0.2, seed=3)
    assert val_idx.size == 20 and train_idx.size == 80
    assert not set(episode[train_idx]) & set(episode[val_idx])
    sampler = BalancedSampler(labels, train_idx, seed=0)
    for _ in range(5):
        idx = sampler.sample(9)
        assert labels[idx].sum() == 4 and set(idx) <= set(train_idx)
    with pytest.raises(SplitError, match="only failure"):
        split_episodes(episode, np.zeros(100, np.uint8), 0.2, seed=0)
    with pytest.raises(SplitError, match="two recorded episodes"):
        split_episodes(np.zeros(5, np.int64), labels[:5], 0.2, seed=0)


def _frames(n, value=0):
    return [{k: np.full((8, 8, 3), value + i, np.uint8) for k in IMAGE_KEYS} for i in range(n)]


def test_labelled_images_round_trip_and_clear_errors(tmp_path):
    w = LabelledImageWriter(tmp_path, IMAGE_KEYS, 8, "peg_insertion", "keyboard")
    w.write_episode(_frames(3), [0, 1, 1], [-1, -1, -1], [np.zeros(19)] * 3)
    w = LabelledImageWriter(tmp_path, IMAGE_KEYS, 8, "peg_insertion", "ground_truth")  # continues the folder
    w.write_episode(_frames(2, 10), [0, 0], [0, 0], [np.ones(19)] * 2)
    (tmp_path / "episodes" / "episode_000009.tmp.npz").write_bytes(b"half-written")  # ignored
    data = load_labelled_images([tmp_path])
    assert data.counts() == {"frames": 5, "success": 2, "failure": 3, "episodes": 2}
    assert data.episode.tolist() == [0, 0, 0, 1, 1] and data.images["wrist_2"][3, 0, 0, 0] == 10
    assert json.loads((tmp_path / "meta.json").read_text())["label_source"] == "mixed"
    with pytest.raises(LabelledImagesError, match="image_size=8"):
        LabelledImageWriter(tmp_path, IMAGE_KEYS, 16, "peg_insertion", "keyboard")
    with pytest.raises(LabelledImagesError, match="labels must be 0 or 1"):
        w.write_episode(_frames(1), [2], [0], [np.zeros(19)])

    ep = tmp_path / "episodes" / "episode_000001.npz"
    good = dict(np.load(ep))
    for broken, match in [
        ({**good, "labels": good["labels"].astype(np.float32)}, "'labels' is float32"),
        ({k: v for k, v in good.items() if k != "images/wrist_1"}, "missing 'images/wrist_1'"),
        ({**good, "images/wrist_1": good["images/wrist_1"][:, :4]}, "'images/wrist_1' is uint8"),
        ({**good, "extra": good["labels"]}, "unexpected key 'extra'"),
    ]:
        np.savez(ep, **broken)
        with pytest.raises(LabelledImagesError, match=match) as e:
            load_labelled_images([tmp_path])
        assert "episode_000001.npz" in str(e.value)
    ep.write_bytes(ep.read_bytes()[:100])
    with pytest.raises(LabelledImagesError, match="unreadable"):
        load_labelled_images([tmp_path])
    with pytest.raises(LabelledImagesError, match="no meta.json"):
        load_labelled_images([tmp_path / "episodes"])


def test_a_persons_keys_label_the_frames_that_follow(tmp_path):
    """Sticky labels: s at step 3, f at step 6, Esc at step 9 (what a person presses, scripted)."""
    presses = {3: ["label_success"], 6: ["label_failure", "pause", "pause"], 9: ["end_episode"]}
    step = iter(range(100))
    env = make_env(
        robot_env.SIM_ENV_ID,
        "peg_insertion",
        RewardConfig(),
        {"state": ((19,), "float32"), **dict.fromkeys(IMAGE_KEYS, ((16, 16, 3), "uint8"))},
        0,
        end_on_success=False,
    )
    writer = LabelledImageWriter(tmp_path, IMAGE_KEYS, 16, "peg_insertion", "keyboard")
    stats = record(
        env,
        lambda obs: np.zeros(6, np.float32),
        writer,
        1,
        "keyboard",
        events=lambda: presses.get(next(step), []),
        progress=False,
    )
    env.close()
    data = load_labelled_images([tmp_path])
    # frame 0 is the reset; keys read before step k label frame k + 1 on
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert stats.frames == 10 and stats.success == 3
    assert (data.env_success == 0).all()  # the arm held still above the hole: the env agrees, failure
    lab = KeyboardLabeller()
    assert lab.apply(["label_success"]) and not lab.apply(["label_success"]) and lab.success


def test_recording_with_a_policy_checkpoint(tmp_path, capsys):
    """--policy checkpoint: a state policy drives, the cameras are recorded; success never ends
    the episode while recording, so every episode runs its full length."""
    from actor.record_labels import main

    save_tiny_policy(tmp_path / "policy", hidden=8)
    main(
        [
            "--out",
            str(tmp_path / "labels"),
            "--labels",
            "ground_truth",
            "--policy",
            "checkpoint",
            "--checkpoint",
            str(tmp_path / "policy"),
            "--episodes",
            "2",
            "--image-size",
            "16",
        ]
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    data = load_labelled_images([tmp_path / "labels"])
    assert printed["frames"] == len(data) == 2 * 101 and data.image_keys == IMAGE_KEYS
    assert data.labels.tolist() == data.env_success.tolist()  # ground truth is the label
    meta = json.loads((tmp_path / "labels" / "meta.json").read_text())
    assert meta["policy"] == "checkpoint" and meta["image_size"] == 16


# ------------------------------------------------------------------- recorded, trained, used


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The launch path on tiny images: record in simulation with ground-truth labels, train, load."""
    tmp = tmp_path_factory.mktemp("classifier")
    data, out = tmp / "labels", tmp / "clf"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "actor.record_labels",
            "--out",
            str(data),
            "--labels",
            "ground_truth",
            "--policy",
            "scripted",
            "--episodes",
            "24",
            "--image-size",
            str(SIZE),
            "--seed",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "learner.train_reward_classifier",
            "--data",
            str(data),
            "--out",
            str(out),
            "--encoder",
            "small_conv",
            "--base-filters",
            "8",
            "--steps",
            "300",
            "--no-progress",
            "--no-tensorboard",
            "--set",
            "eval_every=100",
            "--set",
            "model.hidden_dims=[32]",
            "--set",
            "model.encoder.bottleneck_dim=32",
            "--set",
            "model.encoder.augment_pad=2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return {"data": data, "out": out, "counts": counts, "report": json.loads((out / "report.json").read_text())}


@pytest.mark.slow
def test_the_classifiers_saved_config_is_the_one_it_trained_with(trained):
    """Flags, --set and the defaults resolve to one config, saved as the run's config.yaml (which
    --config reads back) and recorded in its report."""
    from shared.config import ClassifierTrainConfig, from_dict, read_config_file

    saved = read_config_file(trained["out"] / "config.yaml", ClassifierTrainConfig, "classifier")
    assert saved == from_dict(ClassifierTrainConfig, trained["report"]["config"])
    assert saved.steps == 300 and saved.eval_every == 100 and saved.model.hidden_dims == (32,)
    assert saved.model.encoder.kind == "small_conv" and saved.model.encoder.base_filters == 8
    assert saved.batch_size == ClassifierTrainConfig.batch_size  # not given: the dataclass's default


@pytest.mark.slow
def test_classifier_reaches_high_validation_accuracy(trained):
    c, rep = trained["counts"], trained["report"]
    assert c["episodes"] == 24 and c["success"] > 300 and c["failure"] > 300
    v = rep["validation"]
    print(
        f"\nvalidation on {rep['data']['val_frames']} frames of {rep['data']['val_episodes']} held-out episodes: "
        f"accuracy {v['accuracy']:.3f}, precision {v['precision']:.3f}, recall {v['recall']:.3f} "
        f"at threshold {rep['threshold']:.3f}"
    )
    assert v["accuracy"] >= 0.95 and v["precision"] >= 0.95 and v["recall"] >= 0.9
    assert (trained["out"] / "validation.png").stat().st_size > 10_000
    assert len(rep["curve"]) == 3 and (trained["out"] / "metrics.jsonl").exists()
    clf = load_classifier(trained["out"])  # the --out folder or its checkpoints/
    assert clf.threshold == pytest.approx(rep["threshold"]) and clf.image_size == SIZE
    assert clf.meta["validation"]["accuracy"] == v["accuracy"]


def test_wrapper_reward_agrees_with_ground_truth(trained):
    clf = load_classifier(trained["out"])
    env = make_env(robot_env.SIM_ENV_ID, "peg_insertion", RewardConfig(), STATE_SPEC, 0, classifier=clf)
    assert list(env.observation_space.spaces) == ["state"]  # a state policy sees no images
    policy = RandomSkillInserter(env.unwrapped.task, 0.5, 1.0, seed=7)
    steps = agree = ended_by_classifier = 0
    for ep in range(8):
        obs, _ = env.reset(seed=500 + ep)
        policy.reset()
        while True:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            steps += 1
            agree += info["success"] == info["env_success"]
            assert reward == RewardConfig().apply(float(info["success"]))
            assert env.get_wrapper_attr("timing")["classifier_ms"] > 0
            if terminated or truncated:
                assert terminated == info["success"]  # the classifier's success, and only it, ends the episode
                ended_by_classifier += terminated
                break
    env.close()
    print(f"\nthe wrapper's reward equals ground truth on {agree}/{steps} steps")
    assert agree / steps >= 0.97 and ended_by_classifier >= 4


def test_evaluation_records_the_classifiers_verdict(trained, tmp_path):
    from actor.evaluate import write_report

    clf = load_classifier(trained["out"])
    env = make_env(robot_env.SIM_ENV_ID, "peg_insertion", RewardConfig(), STATE_SPEC, 0, classifier=clf)
    policy = RandomSkillInserter(env.unwrapped.task, 1.0, 1.0, seed=0)
    results = evaluate_poses(env, policy, [0, 3], "classifier")
    with pytest.raises(ValueError, match="ClassifierReward"):  # refused before any episode runs
        evaluate_poses(gym.make(robot_env.SIM_ENV_ID), policy, [0], "classifier")
    env.close()
    # The expert inserts from both poses: the classifier ends both episodes, and ground truth agrees.
    assert [r.judge for r in results] == ["classifier"] * 2
    assert [(r.success, r.classifier_success, r.env_success) for r in results] == [(True, True, True)] * 2
    assert all(0 < r.time_to_success_s == r.steps * 0.1 for r in results)
    report = write_report(tmp_path, results, {"checkpoint": "scripted", "judge": "classifier"})
    assert report["classifier_successes"] == 2 and report["classifier_agrees_with_env_check"] == 2
    assert "| 0 | yes |  | " in (tmp_path / "report.md").read_text()


def test_wrapper_refuses_envs_it_cannot_judge(trained):
    clf = load_classifier(trained["out"])
    env = gym.make(robot_env.SIM_ENV_ID, obs_mode="images", image_size=SIZE)  # ends episodes on its own check
    with pytest.raises(ValueError, match="end_on_success=False"):
        ClassifierReward(env, clf)
    env.close()
    env = gym.make(robot_env.SIM_ENV_ID, obs_mode="images", image_size=16, end_on_success=False)
    with pytest.raises(ValueError, match=r"'wrist_1' images of shape \(24, 24, 3\)"):
        ClassifierReward(env, clf)
    env.close()
    image_policy = {"state": ((19,), "float32"), **dict.fromkeys(IMAGE_KEYS, ((32, 32, 3), "uint8"))}
    with pytest.raises(ValueError, match="trained on 24 px"):
        make_env(robot_env.SIM_ENV_ID, "peg_insertion", RewardConfig(), image_policy, 0, classifier=clf)


def test_corrupt_or_foreign_checkpoints_are_refused(trained, tmp_path):
    import shutil

    with pytest.raises(CheckpointError, match="no reward-classifier checkpoint"):
        load_classifier(tmp_path / "nothing")
    bad = tmp_path / "bad"
    shutil.copytree(trained["out"] / "checkpoints", bad)
    step = next(p for p in bad.iterdir() if p.name.isdigit())
    meta = step / "meta" / "metadata"
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps({**doc, "format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a reward-classifier checkpoint"):
        load_classifier(bad)
    shutil.rmtree(step / "params")
    with pytest.raises(CheckpointError, match="unreadable reward-classifier checkpoint"):
        load_classifier(bad)


@pytest.mark.slow
def test_pretrained_resnet_trunk_is_loaded_and_stays_frozen(trained, tmp_path):
    """ResNet-10 (4 filters) with trunk weights from a file: training leaves them as loaded."""
    data = load_labelled_images([trained["data"]])
    enc = EncoderConfig(
        kind="resnet10",
        image_keys=IMAGE_KEYS,
        use_state=False,
        base_filters=4,
        bottleneck_dim=16,
        num_spatial_features=2,
        augment_pad=2,
    )
    model = ClassifierConfig(encoder=enc, hidden_dims=(16,))
    fresh = init_params(model, SIZE, jax.random.PRNGKey(42))
    trunk = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.01, fresh["encoder"]["trunk_wrist_1"])
    save_trunk_params(tmp_path / "trunk.npz", trunk)
    model = replace(model, encoder=replace(enc, pretrained_path=str(tmp_path / "trunk.npz"), freeze_trunk=True))
    cfg = ClassifierTrainConfig(model=model, steps=4, batch_size=8, eval_every=4)
    report = train(data, cfg, tmp_path / "out", progress=False, tensorboard=False)
    clf = load_classifier(report["checkpoint"])
    for key in IMAGE_KEYS:
        got = clf.params["encoder"][f"trunk_{key}"]
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), got, trunk)
    with pytest.raises(ValueError, match="trunk.npz"):  # a file for another network names itself
        init_params(replace(model, encoder=replace(model.encoder, base_filters=8)), SIZE, jax.random.PRNGKey(0))


@pytest.mark.slow
def test_actor_and_learner_train_on_the_classifiers_reward(trained, tmp_path):
    """The main command, shrunk, with the reward from the classifier: the actor (a real process)
    applies it in its loop, the learner trains on it, and the actor logs its inference time."""
    from shared.metrics import read_jsonl

    tiny = [
        "agent.critic_net.hidden_dims=[32,32]",
        "agent.actor_net.hidden_dims=[32,32]",
        "agent.num_critics=2",
        "agent.batch_size=32",
    ]
    save_tiny_policy(tmp_path / "pretrained", hidden=32)
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "learner.sim_pipeline",
        "--out",
        str(out),
        "--pretrained",
        str(tmp_path / "pretrained"),
        "--warmup-steps",
        "60",
        "--online-steps",
        "60",
        "--episodes",
        "1",
        "--no-progress",
        "--reward-classifier",
        str(trained["out"]),
    ]
    for o in tiny:
        cmd += ["--set", o]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["reward"].startswith("classifier ") and s["curve"][-1]["grad_steps"] == 4 * 60
    episodes = [row for row in read_jsonl(out / "actor" / "metrics.jsonl") if "classifier_ms" in row]
    assert episodes and all(0 < row["classifier_ms"] < 1000 for row in episodes)
    assert all(row["env_success"] in (0.0, 1.0) for row in episodes)  # ground truth logged beside it


@pytest.mark.slow
def test_the_sim_job_makes_its_classifier_with_the_robot_users_commands_and_keeps_it(tmp_path):
    """run_sim.sh --obs images trains on a classifier's reward by default: it records labelled
    episodes and trains a classifier with the same two commands a robot user runs, once; a second
    job finds it in the cache."""
    from learner.sim_assets import make_classifier

    stages: dict[str, float] = {}
    out = make_classifier(tmp_path / "cache", SIZE, 3, False, stages, episodes=6, steps=20)
    clf = load_classifier(out)
    assert clf.image_size == SIZE and list(clf.image_keys) == list(IMAGE_KEYS) and 0 < clf.threshold < 1
    data = load_labelled_images([tmp_path / "cache" / "labels"])
    assert data.counts()["episodes"] == 6 and data.counts()["success"] > 0  # the scripted inserter succeeds
    assert not (tmp_path / "cache" / "labels.partial").exists() and stages["reward_classifier_s"] > 0
    report = out / "report.json"
    mtime = report.stat().st_mtime_ns
    assert make_classifier(tmp_path / "cache", SIZE, 3, False, {}, episodes=6, steps=20) == out
    assert report.stat().st_mtime_ns == mtime  # kept, not made again
