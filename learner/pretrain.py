"""Offline pre-training (Cal-QL, CQL or IQL) on a dataset file, with logs, checkpoints and resume.

Usage: ``launch/pretrain.sh --dataset data/peg.npz --out checkpoints/calql [--algo calql]``
(``python -m learner.pretrain --help`` lists every flag).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from learner.features import TrunkFeatures, add_features
from learner.health import OFFLINE_PROBE_FILE, save_batch
from shared import defaults
from shared.command_line import print_config
from shared.config import (
    Algo,
    HealthConfig,
    PretrainConfig,
    RewardConfig,
    add_override_argument,
    apply_overrides,
    read_config_file,
    without_state_stats,
    write_config_file,
)
from shared.data.dataset import example_obs, wire_spec
from shared.learning.agents import Agent, create_agent, make_update, policy_fn
from shared.learning.encoders import caches_features, with_state_stats
from shared.metrics import MetricsLogger, to_scalars
from shared.presets import PRESETS
from shared.storage.checkpoint import Checkpointer, list_steps, load_checkpoint
from shared.storage.replay_buffer import ReplayBuffer
from shared.xla_cpu import tune_process

log = logging.getLogger("wsrl.pretrain")

EvalFn = Callable[[Agent], dict[str, float]]


def pretrain(
    cfg: PretrainConfig,
    dataset: str | Path | ReplayBuffer,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    eval_fn: EvalFn | None = None,
    eval_every: int = 0,
    tensorboard: bool = True,
) -> Agent:
    """Train ``cfg.agent`` offline for ``cfg.steps`` gradient steps; returns the final agent.

    Checkpoints go to ``out_dir/checkpoints`` and logs to ``out_dir`` (metrics.jsonl,
    tensorboard/). With ``resume`` the newest readable checkpoint is continued.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    acfg = cfg.agent
    if isinstance(dataset, ReplayBuffer):
        buffer = dataset
    else:
        buffer = ReplayBuffer.load(dataset, gamma=acfg.gamma, r_neg=cfg.reward.negative)
    obs_example = example_obs(wire_spec(buffer.obs_spec))  # what the policy observes
    stats = buffer.stats()
    log.info("dataset: %d transitions in %d episodes", stats["transitions"], stats["episodes"])
    if acfg.algo == "calql" and not np.isfinite(buffer.mc_returns[buffer.valid]).all():
        raise ValueError("Cal-QL needs Monte-Carlo returns, but the dataset has unfinished episodes")

    ckpt_dir = out_dir / "checkpoints"
    if list_steps(ckpt_dir) and not resume:
        raise FileExistsError(
            f"{ckpt_dir} already holds checkpoints; pass resume=True (--resume) or another output directory"
        )
    if resume and list_steps(ckpt_dir):
        restored = load_checkpoint(ckpt_dir)
        agent, saved = restored.agent, restored.phase_config(PretrainConfig)
        if without_state_stats(saved.agent) != without_state_stats(acfg):
            log.warning("resuming with the checkpoint's agent config, not the one given")
        cfg = replace(cfg, agent=saved.agent)
        log.info("resumed from %s at gradient step %d", ckpt_dir, int(agent.grad_steps))
    else:
        if acfg.encoder.normalize_state and acfg.encoder.state_mean is None:
            enc = with_state_stats(acfg.encoder, buffer.state_frames())
            acfg = replace(acfg, encoder=enc)
            cfg = replace(cfg, agent=acfg)
            log.info("state normalisation from the dataset: std %s", np.round(enc.state_std or (), 4).tolist())
        agent = create_agent(acfg, obs_example, buffer.action_dim, cfg.seed)
    # What ran (state statistics from the dataset included): ``--config OUT/config.yaml`` runs it again.
    write_config_file(out_dir / "config.yaml", {"pretrain": cfg})
    keys = None  # the observation keys sampled: all, or the trunk's features in place of the images
    if cfg.cache_trunk_features and caches_features(cfg.agent.encoder):
        cache = TrunkFeatures(cfg.agent.encoder, agent.critic.params["encoder"], wire_spec(buffer.obs_spec))
        if not set(cache.spec) <= set(buffer.obs_spec):
            t = time.time()
            add_features(buffer, cache, progress)
            log.info("trunk features of %d frames computed in %.1f s", buffer.slots_written, time.time() - t)
        keys = cache.sample_keys(buffer.obs_spec)

    # The online learner's offline probe (learner/health.py): dataset rows as the updates read them.
    probe_file = ckpt_dir / OFFLINE_PROBE_FILE
    if not probe_file.exists():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        size = min(HealthConfig().probe_size, len(buffer))
        save_batch(probe_file, buffer.sample(size, np.random.default_rng(cfg.seed + 1), keys=keys))
    update = make_update(cfg.agent)
    rng = np.random.default_rng(cfg.seed + int(agent.grad_steps))
    ckpt = Checkpointer(ckpt_dir, keep=cfg.keep_checkpoints)
    metrics = MetricsLogger(out_dir, tensorboard=tensorboard)
    utd = cfg.agent.utd
    start = int(agent.grad_steps) // utd
    total = cfg.steps // utd
    last_saved = int(agent.grad_steps)
    t0 = time.time()
    bar = tqdm(
        total=total,
        initial=start,
        desc=f"pretrain {cfg.agent.algo}",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        for i in range(start, total):
            batch = buffer.sample(cfg.agent.batch_size, rng, leading=(utd,), keys=keys)
            agent, info = update(agent, batch)
            step = (i + 1) * utd
            do_eval = eval_fn is not None and eval_every > 0 and (step % eval_every < utd or i + 1 == total)
            if do_eval or step % cfg.log_every < utd or i + 1 == total:
                scalars = to_scalars(info)
                scalars["steps_per_s"] = (step - start * utd) / max(time.time() - t0, 1e-9)
                if do_eval and eval_fn is not None:
                    results = eval_fn(agent)
                    log.info("eval at gradient step %d: %s", step, results)
                    scalars.update({f"eval/{k}": v for k, v in results.items()})
                metrics.log(step, scalars)
                bar.set_postfix({k: f"{scalars[k]:.3g}" for k in ("critic_loss", "q") if k in scalars})
            if step % cfg.checkpoint_every < utd:
                last_saved = ckpt.save(agent, obs_example, cfg)
            bar.update(1)
        if int(agent.grad_steps) != last_saved:
            ckpt.save(agent, obs_example, cfg)
    finally:
        bar.close()
        ckpt.close()
        metrics.close()
    log.info(
        "pre-training done: %d gradient steps in %.1f s; checkpoints in %s",
        int(agent.grad_steps),
        time.time() - t0,
        ckpt_dir,
    )
    return agent


def make_sim_eval(env_id: str, obs_spec: dict, episodes: int, reward: RewardConfig) -> EvalFn:
    """Evaluate the deterministic policy in a ``robot_env`` simulation, from the task's fixed
    evaluation poses; the env's observation mode follows the dataset's keys."""
    from robot_env.make import make_env
    from robot_env.rollout import evaluate

    env = make_env(env_id, defaults.TASK, reward, obs_spec, seed=0)
    return lambda agent: evaluate(env, policy_fn(agent), episodes)


def build_config(
    preset: str, algo: Algo | None, steps: int | None, overrides: list[str], config_file: str | None = None
) -> PretrainConfig:
    """The preset, then an experiment file's ``pretrain:`` section, then ``--algo`` and ``--steps``,
    then the dotted overrides."""
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset][0]()
    if config_file is not None:
        cfg = read_config_file(config_file, PretrainConfig, "pretrain", base=cfg)
    if algo:
        agent = replace(cfg.agent, algo=algo)
        if algo == "iql" and cfg.agent.algo != "iql":
            agent = replace(agent, num_critics=2, num_min_critics=2, num_backup_actions=1)
        cfg = replace(cfg, agent=agent)
    if steps:
        cfg = replace(cfg, steps=steps)
    return apply_overrides(cfg, overrides)


def main(argv: list[str] | None = None) -> None:
    tune_process()  # before JAX starts its backend
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="dataset file (.npz, see shared/data/dataset.py)")
    p.add_argument("--out", help="output directory (logs, checkpoints/)")
    p.add_argument("--preset", default="paper_sim", help=f"config preset: {sorted(PRESETS)}")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="an experiment file (YAML or JSON): its pretrain: section over the preset, e.g. a run's "
        "OUT/config.yaml to run it again",
    )
    p.add_argument("--algo", choices=["calql", "cql", "iql"], help="override the preset's algorithm")
    p.add_argument("--steps", type=int, help="gradient steps")
    add_override_argument(p, "config override, e.g. --set agent.num_critics=2 (repeatable)", "PATH=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--eval-env", help="evaluate in this simulation env (e.g. PegInsertionSim-v0) during training")
    p.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation (the task's fixed poses)")
    p.add_argument("--eval-every", type=int, default=0, help="gradient steps between evaluations (0: at the end only)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    try:
        cfg = build_config(args.preset, args.algo, args.steps, args.overrides, args.config)
    except ValueError as e:
        p.error(str(e))
    if args.print_config:  # as an experiment file's section: redirected to a file, --config reads it
        print_config("pretrain", cfg)
        return
    if not args.dataset or not args.out:
        p.error("--dataset and --out are required")
    print(f"pretrain: {cfg.agent.algo} for {cfg.steps} steps on {args.dataset}; writing to {args.out}", file=sys.stderr)
    dataset = ReplayBuffer.load(args.dataset, gamma=cfg.agent.gamma, r_neg=cfg.reward.negative)
    eval_fn, eval_every = None, 0
    if args.eval_env:
        eval_fn = make_sim_eval(args.eval_env, dataset.obs_spec, args.eval_episodes, cfg.reward)
        eval_every = args.eval_every or cfg.steps
    agent = pretrain(
        cfg,
        dataset,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        eval_fn=eval_fn,
        eval_every=eval_every,
    )
    print(json.dumps({"grad_steps": int(agent.grad_steps), "checkpoints": str(Path(args.out) / "checkpoints")}))


if __name__ == "__main__":
    main()
