"""What the simulated job makes once and keeps in ``checkpoints/``: the pre-trained checkpoint
(a scripted-controller dataset, then Cal-QL) and the reward classifier (labelled episodes, then a
small conv), each made with the project's own code as a user would; and the evaluation of a
checkpoint on the task's fixed poses."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from learner.processes import ROOT, run_module
from robot_env.contract import OBSERVATION_VERSION
from shared import defaults
from shared.config import apply_overrides
from shared.presets import peg_sim_pretrain

ENV_ID, TASK = defaults.SIM_ENV_ID, defaults.TASK
DEFAULT_CACHE = ROOT / "checkpoints" / f"peg_sim_calql_obs{OBSERVATION_VERSION}"  # new data when observations change


def agent_overrides(critics: int, extra: list[str], obs: str = "state", encoder: str = "small_conv") -> list[str]:
    """The CPU demo's departure from the preset: a smaller critic ensemble (10 critics run ~5x
    slower on 2 cores), and with ``obs="images"`` an image encoder on both wrist cameras (the
    robot's ResNet-10 layout with its trunk frozen, whose features the learner computes once per
    frame, learner/features.py; or a small conv trained end to end). Pre-training and
    fine-tuning get the same agent settings, so the hand-off is exact."""
    images: list[str] = []
    if obs == "images":
        images = [
            f"agent.encoder.kind={encoder}",
            'agent.encoder.image_keys=["wrist_1","wrist_2"]',
            "agent.encoder.base_filters=16" if encoder == "small_conv" else "agent.encoder.base_filters=64",
            "agent.encoder.bottleneck_dim=64" if encoder == "small_conv" else "agent.encoder.bottleneck_dim=256",
        ]
    return [f"agent.num_critics={critics}", *images, *extra]


def make_pretrained(
    cache: Path,
    steps: int,
    overrides: list[str],
    seed: int,
    progress: bool,
    stages: dict[str, float],
    image_size: int | None = None,
) -> Path:
    """Collect the scripted dataset (``image_size``: with both wrist cameras rendered at that
    size) and pre-train Cal-QL on it; returns the checkpoint directory. ``stages`` gets the
    seconds each part took (0 where the cache had it)."""
    from learner.pretrain import pretrain
    from robot_env.collect import collect

    cache.mkdir(parents=True, exist_ok=True)
    dataset = cache / "peg_sim.npz"
    t = time.time()
    if not dataset.exists():
        print(f"[1/4] collecting the simulated offline dataset -> {dataset}", flush=True)
        mode = {"obs_mode": "images", "image_size": image_size} if image_size else {}
        res = collect(dataset, seed=seed, progress=progress, **mode)  # type: ignore[arg-type]
        print(f"      {res['transitions']} transitions, success rate {res['success_rate']:.1%}", flush=True)
    stages["dataset_s"] = round(time.time() - t, 1)
    cfg = apply_overrides(peg_sim_pretrain(), overrides + ["agent.num_backup_actions=1"])
    cfg = replace(cfg, steps=steps, seed=seed, checkpoint_every=max(steps // 4, 1))
    print(f"[1/4] pre-training Cal-QL for {steps} gradient steps on {dataset} (cached in {cache})", flush=True)
    t = time.time()
    pretrain(cfg, dataset, cache / "pretrain", resume=True, progress=progress)
    stages["pretrain_s"] = round(time.time() - t, 1)
    return cache / "pretrain" / "checkpoints"


# The classifier the sim job makes for itself (docs/classifier.md measured these at 32 px: 80 episodes
# and 1,000 steps of a small conv gave accuracy 0.997 on held-out episodes in 27 s). A robot user
# trains a ResNet-10 on frames a person labelled; that costs 3 s a step on this CPU, so not here.
CLASSIFIER_EPISODES, CLASSIFIER_STEPS, CLASSIFIER_FILTERS = 80, 1000, 16
STATE_JOB_CLASSIFIER_SIZE = 32  # a state policy's job renders the cameras for the classifier alone


def make_classifier(
    cache: Path,
    image_size: int,
    seed: int,
    progress: bool,
    stages: dict[str, float],
    episodes: int = CLASSIFIER_EPISODES,
    steps: int = CLASSIFIER_STEPS,
) -> Path:
    """The reward classifier made the way a robot user makes theirs, with the same two commands:
    labelled episodes recorded (``actor.record_labels``; here the scripted inserter moves the arm
    and the simulation's success check stands in for the person's key), then a classifier trained
    on them (``learner.train_reward_classifier``). Kept in ``cache``; returns its folder."""
    out, labels = cache / "classifier", cache / "labels"
    t = time.time()
    if not (out / "report.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / "labels.partial"  # recording adds to a folder: an interrupted one starts again
        if not labels.exists():
            shutil.rmtree(partial, ignore_errors=True)
            print(
                f"[1/4] recording {episodes} labelled episodes for the reward classifier -> {labels}",
                flush=True,
            )
            run_module(
                ["actor.record_labels", "--out", str(partial), "--labels", "ground_truth", "--policy", "scripted"]
                + ["--episodes", str(episodes), "--image-size", str(image_size), "--seed", str(seed)],
                cache / "record_labels.log",
            )
            partial.rename(labels)
        print(f"[1/4] training the reward classifier ({steps} steps, small conv) -> {out}", flush=True)
        run_module(
            ["learner.train_reward_classifier", "--data", str(labels), "--out", str(out), "--encoder", "small_conv"]
            + ["--base-filters", str(CLASSIFIER_FILTERS), "--steps", str(steps), "--seed", str(seed)]
            + ([] if progress else ["--no-progress"]),
            cache / "train_classifier.log",
        )
    report = json.loads((out / "report.json").read_text())
    v = report["validation"]
    print(
        f"      reward classifier: held-out accuracy {v['accuracy']:.3f}, precision {v['precision']:.3f}, "
        f"recall {v['recall']:.3f} at threshold {report['threshold']:.3f}",
        flush=True,
    )
    stages["reward_classifier_s"] = round(time.time() - t, 1)
    return out


DEFAULT_PRETRAIN_STEPS = 3000  # run_sim.sh's --pretrain-steps


def pretrain_cache(cache: Path, seed: int, steps: int, overrides: list[str], default_overrides: list[str]) -> Path:
    """Where the job keeps the dataset and pre-trained checkpoint it makes with these settings: the
    default job's in ``cache`` itself (the path the docs name), any other seed, step count or agent
    setting in a folder of its own named by them (one ``cache`` for all once let a run with
    ``--seed 4`` take the checkpoint a ``--seed 3`` run had made)."""
    if seed == 0 and steps == DEFAULT_PRETRAIN_STEPS and overrides == default_overrides:
        return cache
    digest = hashlib.sha1(json.dumps([steps, overrides]).encode()).hexdigest()[:8]
    return cache.with_name(f"{cache.name}_seed{seed}_{digest}")


def classifier_cache(cache: Path, image_size: int) -> Path:
    """Where the job keeps its classifier beside the pre-training ``cache``: named by every setting
    that makes it, so a changed setting makes a new one rather than reusing an old one silently."""
    key = f"{image_size}px_e{CLASSIFIER_EPISODES}_s{CLASSIFIER_STEPS}_f{CLASSIFIER_FILTERS}"
    return cache.with_name(f"{cache.name}_classifier_{key}")


def evaluate_checkpoint(ckpt_dir: Path, step: int | None, episodes: int) -> dict[str, float]:
    from robot_env.make import make_env
    from robot_env.rollout import evaluate
    from shared.learning.agents import policy_fn
    from shared.storage.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_dir, step)
    env = make_env(ENV_ID, TASK, ckpt.reward, ckpt.obs_spec, seed=0)
    try:
        return evaluate(env, policy_fn(ckpt.agent), episodes)
    finally:
        env.close()
