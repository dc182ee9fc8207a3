"""What a suite's runs start from: the offline data and the pre-trained checkpoint, made once per
content key and reused (a changed task file or pre-training config makes new ones)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from learner.study.runner import PROBE_SIZE
from learner.study.suites import TASKS, StudyTask, Suite
from robot_env.contract import OBSERVATION_VERSION
from robot_env.make import make_env
from robot_env.rollout import evaluate
from shared.config import OnlineConfig, PretrainConfig, apply_overrides, to_dict
from shared.learning.agents import policy_fn
from shared.metrics import write_json_atomic
from shared.presets import peg_sim_online, peg_sim_pretrain
from shared.storage.checkpoint import AgentCheckpoint, load_checkpoint
from shared.storage.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.study")


def data_key(task: StudyTask, transitions: int, seed: int) -> str:
    """The content key of a task's offline data: the task file's settings and how it was collected."""
    blob = {
        "task": task.settings(),
        "skills": task.skill_range,
        "n": transitions,
        "seed": seed,
        "observation_version": OBSERVATION_VERSION,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def data_folder(suite: Suite, task: str, seed: int = 0) -> str:
    return f"{task}-{data_key(TASKS[task], suite.dataset_transitions, seed)}"


def pretrain_config(
    suite: Suite, overrides: tuple[str, ...], algo: str, seed: int = 0, task: str = "peg"
) -> PretrainConfig:
    cfg = apply_overrides(
        peg_sim_pretrain(), [*TASKS[task].overrides, *suite.overrides, *overrides, f"agent.algo={algo}"]
    )
    steps = TASKS[task].pretrain_steps(suite.pretrain_steps)
    if suite.pretrain_select is not None:  # every candidate checkpoint kept, to be scored
        every = min(suite.pretrain_select_every, steps)
        return replace(cfg, steps=steps, seed=seed, checkpoint_every=every, keep_checkpoints=-(-steps // every) + 1)
    return replace(cfg, steps=steps, seed=seed, checkpoint_every=steps)


def pretrain_until_in_range(
    suite: Suite, task: str, cfg: PretrainConfig, data: Path, run_dir: Path, progress: bool
) -> int:
    """Pre-train the way the paper stopped (see ``Suite.pretrain_select``): ``pretrain_select_every``
    steps at a time, each new checkpoint's deterministic policy scored on the task's fixed poses,
    until one scores in range (the earliest is used) or ``cfg.steps`` is reached (then the one
    closest to the range's middle). Resumes; the scores and the choice are kept in
    ``run_dir/select.json``. Returns the checkpoint's step."""
    from learner.pretrain import pretrain
    from shared.storage.checkpoint import list_steps

    assert suite.pretrain_select is not None
    lo, hi = suite.pretrain_select
    record = run_dir / "select.json"
    state: dict[str, Any] = {"range": [lo, hi], "of": suite.eval_episodes, "scores": {}}
    if record.exists():
        state = json.loads(record.read_text())
        if "selected" in state:
            return int(state["selected"])
    every = cfg.checkpoint_every
    for k in range(every, cfg.steps + 1, every):
        if str(k) not in state["scores"]:
            if k not in list_steps(run_dir / "checkpoints"):
                pretrain(replace(cfg, steps=k), data, run_dir, resume=True, progress=progress, tensorboard=False)
            ck = load_checkpoint(run_dir / "checkpoints", step=k)
            env = make_env(TASKS[task].env_id, TASKS[task].task, ck.reward, ck.obs_spec, 0)
            state["scores"][str(k)] = int(evaluate(env, policy_fn(ck.agent, seed=0), suite.eval_episodes)["successes"])
            env.close()
            write_json_atomic(record, state)
            log.info("pre-training step %d scores %d/%d", k, state["scores"][str(k)], suite.eval_episodes)
        if lo <= state["scores"][str(k)] <= hi:
            break
    scores = {int(k): n for k, n in state["scores"].items()}
    in_range = [k for k, n in scores.items() if lo <= n <= hi]
    selected = min(in_range) if in_range else min(scores, key=lambda k: (abs(scores[k] - (lo + hi) / 2), k))
    state.update(selected=selected, in_range=bool(in_range))
    write_json_atomic(record, state)
    return selected


def pretrain_folder(cfg: PretrainConfig) -> str:
    """The cache folder of a pre-training config. ``cache_trunk_features`` is left out of the key:
    it computes the same function either way (tests/test_pretrain_cli.py), and so the folders
    made before the option existed keep their names."""
    settings = to_dict(cfg)
    settings.pop("cache_trunk_features", None)
    key = json.dumps(settings, indent=2, sort_keys=True)  # to_json's layout
    return f"pretrain-{cfg.agent.algo}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prepare(
    suite: Suite,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    pretrained_dir: Path | None = None,
    offline_data: Path | None = None,
    overrides: tuple[str, ...] = (),
    task: str = "peg",
    algo: str = "calql",
    cache: Path | None = None,
) -> tuple[AgentCheckpoint, ReplayBuffer, dict[str, Any]]:
    """The offline data, the pre-trained checkpoint every method of the study starts from, and
    the offline probe: transitions of the same controllers that pre-training never saw. Made once
    and kept under ``cache`` (default ``out/cache``) by content: a folder per (task settings, data
    collection) and per pre-training config inside it, so studies and suites that agree share them.
    ``pretrained_dir`` and ``offline_data``: a checkpoint and the dataset it was trained on, made
    elsewhere (e.g. run_sim.sh's cache), used as they are."""
    from learner.pretrain import pretrain

    if (pretrained_dir is None) != (offline_data is None):
        raise ValueError("give the pre-trained checkpoint and the offline data it was trained on together")
    spec = TASKS[task]
    folder = (cache or out / "cache") / data_folder(suite, task, seed)
    data, held_out = offline_data or folder / "offline.npz", folder / "probe.npz"
    if not data.exists():
        spec.collect(data, suite.dataset_transitions, seed, progress)
    if not held_out.exists():
        spec.collect(held_out, PROBE_SIZE, seed + 10_000, False)
    step = None
    if pretrained_dir is None:
        cfg = pretrain_config(suite, overrides, algo, seed, task)
        run_dir = folder / pretrain_folder(cfg)
        if suite.pretrain_select is not None:
            step = pretrain_until_in_range(suite, task, cfg, data, run_dir, progress)
        elif not (run_dir / "done").exists():
            pretrain(cfg, data, run_dir, resume=True, progress=progress, tensorboard=False)
            (run_dir / "done").touch()
        pretrained_dir = run_dir / "checkpoints"
    pretrained = load_checkpoint(pretrained_dir, step=step)
    gamma = pretrained.agent.config.gamma
    offline = ReplayBuffer.load(data, gamma=gamma)
    probe = ReplayBuffer.load(held_out, gamma=gamma).sample(PROBE_SIZE, np.random.default_rng(seed))
    return pretrained, offline, probe


def online_config_for(suite: Suite, task: str, overrides: tuple[str, ...] = ()) -> OnlineConfig:
    """The online settings of a suite's runs on ``task`` (the task's, the suite's, then the caller's)."""
    return apply_overrides(
        peg_sim_online(), [*TASKS[task].overrides, *suite.overrides, *suite.online_overrides, *overrides]
    )
