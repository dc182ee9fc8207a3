"""A seeded study runner: the paper's methods on a simulated task, one process, exact UTD.

The distributed runtime is right for robots but not for controlled comparisons (the actor and
learner interleave differently every run). Here one process steps the env and updates the agent
in a fixed order, so a run is determined by its seed: every method gets the same pre-trained
checkpoint, the same offline data, the same env-step budget (warmup included, as the paper's
x-axes count) and the same evaluation poses.

Usage: ``launch/study.sh --suite smoke --out DIR [--methods ...] [--seeds N]``
(``python -m learner.study --help``). A run writes ``DIR/runs/<method>/seed_<s>/metrics.jsonl``
and ``summary.json``; the study writes ``DIR/results.json`` (per method and seed: the evaluation
curve) and ``DIR/results.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from robot_env.contract import task_env
from robot_env.make import make_env
from robot_env.rollout import evaluate
from shared import defaults
from shared.agents import act, make_update, policy_fn
from shared.checkpoint import AgentCheckpoint, load_checkpoint
from shared.config import OnlineConfig, apply_overrides, peg_sim_online, peg_sim_pretrain
from shared.dataset import Transition, step_transition
from shared.diagnostics import chattering, diagnose
from shared.methods import METHODS, method, mixed_batch, online_agent
from shared.metrics import write_json_atomic
from shared.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.study")

PROBE_SIZE = 256  # transitions in each diagnostic probe


@dataclass(frozen=True)
class RunConfig:
    """One run: a method, a seed, a budget."""

    method: str
    env_steps: int  # every method's budget, warmup included
    warmup_steps: int  # K, unless the method says otherwise
    eval_every: int  # env steps between evaluations
    eval_episodes: int = 20  # from the task's fixed poses, in order
    seed: int = 0
    env_id: str = defaults.SIM_ENV_ID
    task: str = defaults.TASK


def run_method(
    run: RunConfig,
    online_cfg: OnlineConfig,
    pretrained: AgentCheckpoint,
    offline: ReplayBuffer,
    out: Path,
    probe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one method for ``run.env_steps`` env steps; returns (and writes) its summary.
    ``probe``: offline transitions held out from pre-training, for the diagnostics (default: a
    fixed sample of the offline data)."""
    m = method(run.method)
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    agent = online_agent(m, pretrained, online_cfg.agent, run.seed)
    cfg = agent.config
    update = make_update(cfg, donate=False)
    env = make_env(run.env_id, run.task, pretrained.reward, pretrained.obs_spec, run.seed)
    eval_env = make_env(run.env_id, run.task, pretrained.reward, pretrained.obs_spec, run.seed)
    buffer = ReplayBuffer(
        pretrained.obs_spec, agent.action_dim, max(run.env_steps, 1) + 1024, cfg.gamma, pretrained.reward.negative
    )
    rng = np.random.default_rng(run.seed)
    key = jax.random.PRNGKey(run.seed)
    k = m.k(run.warmup_steps)
    if m.warmup == "dataset":
        _seed_from_offline(buffer, offline, k, rng)
    env_warmup = k if m.warmup in ("policy", "random") else 0
    frozen = pretrained.agent
    fraction = m.offline_fraction
    log_path = out / "metrics.jsonl"
    log_path.unlink(missing_ok=True)
    curve: list[dict[str, float]] = []
    # Fixed probes: held-out offline transitions, and the first online ones once there are enough.
    offline_probe = probe if probe is not None else offline.sample(PROBE_SIZE, np.random.default_rng(0))
    early: list[Transition] = []  # the first online transitions: the online probe, by the first evaluation
    early_size = min(PROBE_SIZE, run.eval_every)
    online_probe: dict[str, Any] | None = None
    horizon = task_env(env).task.episode_length
    guided = guided_window = 0  # env steps the pre-trained policy chose as JSRL's guide

    def guide_prefix(step: int) -> int:
        return int(rng.integers(0, horizon + 1)) if rng.random() < m.guide_probability(step, run.env_steps) else 0

    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    guide_left = guide_prefix(0)
    info: dict[str, Any] = {}
    with log_path.open("a") as logf:
        for step in range(1, run.env_steps + 1):
            key, sub = jax.random.split(key)
            batch_obs = {name: np.asarray(v)[None] for name, v in obs.items()}
            if step <= env_warmup and m.warmup == "random":
                action = rng.uniform(-1.0, 1.0, agent.action_dim).astype(np.float32)
            elif step <= env_warmup or guide_left > 0:  # the frozen pre-trained policy, sampled
                action = act(frozen, batch_obs, sub)[0]
                if guide_left > 0:
                    guide_left -= 1
                    guided += 1
                    guided_window += 1
            else:
                action = act(agent, batch_obs, sub)[0]
            next_obs, reward, terminated, truncated, _ = env.step(action)
            transition = step_transition(obs, action, reward, next_obs, terminated, truncated)
            buffer.insert(transition)
            if len(early) < early_size:
                early.append(transition)
            if terminated or truncated:
                obs = env.reset(seed=int(rng.integers(2**31)))[0]
                guide_left = guide_prefix(step)
            else:
                obs = next_obs
            if step > env_warmup:  # one update of UTD critic steps per env step: exact UTD
                batch = mixed_batch(buffer, offline, fraction, cfg.batch_size, rng, leading=(cfg.utd,))
                agent, info = update(agent, batch)
            if step % run.eval_every == 0 or step == run.env_steps:
                taken: list[Transition] = []
                res = evaluate(eval_env, policy_fn(agent, seed=run.seed), run.eval_episodes, record=taken.append)
                res["guided_fraction"] = guided_window / run.eval_every
                guided_window = 0
                res["chattering"] = chattering([t["actions"] for t in taken], [bool(t["dones"]) for t in taken])
                probes = {"offline_probe": offline_probe}
                if len(early) == early_size:
                    online_probe = online_probe or _as_batch(early)
                    probes["online_probe"] = online_probe
                key, k_diag = jax.random.split(key)
                res.update({f"diag/{k_}": v for k_, v in diagnose(frozen, agent, probes, k_diag).items()})
                row = {
                    "env_steps": step,
                    "grad_steps": int(agent.grad_steps),
                    **res,
                    **{f"train/{k_}": float(v) for k_, v in info.items() if np.ndim(v) == 0},
                }
                curve.append(
                    {"env_steps": step, "grad_steps": int(agent.grad_steps), "success_rate": res["success_rate"]}
                )
                logf.write(json.dumps(row) + "\n")
                logf.flush()
    env.close()
    eval_env.close()
    rates = [c["success_rate"] for c in curve]
    summary = {
        "method": run.method,
        "seed": run.seed,
        "env_steps": run.env_steps,
        "warmup_steps": k,
        "curve": curve,
        "final_success_rate": rates[-1] if rates else 0.0,
        "mean_success_rate": float(np.mean(rates)) if rates else 0.0,  # area under the curve / length
        "guided_steps": guided,
        "wall_time_s": round(time.time() - t0, 1),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def _as_batch(transitions: list[Transition]) -> dict[str, Any]:
    """Transitions stacked into a batch (the layout ``ReplayBuffer.sample`` returns)."""
    return {
        "observations": {
            k: np.stack([t["observations"][k] for t in transitions]) for k in transitions[0]["observations"]
        },
        "next_observations": {
            k: np.stack([t["next_observations"][k] for t in transitions]) for k in transitions[0]["next_observations"]
        },
        "actions": np.stack([np.asarray(t["actions"], np.float32) for t in transitions]),
        "rewards": np.asarray([t["rewards"] for t in transitions], np.float32),
        "masks": np.asarray([t["masks"] for t in transitions], np.float32),
    }


def _seed_from_offline(buffer: ReplayBuffer, offline: ReplayBuffer, k: int, rng: np.random.Generator) -> None:
    """The "dataset" warmup: K transitions sampled from the offline data, no env steps."""
    if k <= 0:
        return
    b = offline.sample(k, rng)
    for i in range(k):
        buffer.insert(
            Transition(
                observations={name: v[i] for name, v in b["observations"].items()},
                actions=b["actions"][i],
                rewards=float(b["rewards"][i]),
                next_observations={name: v[i] for name, v in b["next_observations"].items()},
                masks=float(b["masks"][i]),
                dones=True,  # sampled transitions are unrelated: each its own episode
            )
        )


# ------------------------------------------------------------------------------ suites


@dataclass(frozen=True)
class Suite:
    dataset_transitions: int
    pretrain_steps: int
    env_steps: int
    warmup_steps: int
    eval_every: int
    eval_episodes: int
    overrides: tuple[str, ...]  # network sizes and the like, for pre-training and online alike
    online_overrides: tuple[str, ...] = ()


SUITES = {
    # Every method, tiny networks, a few hundred env steps: that each runs and does what it says.
    "smoke": Suite(
        dataset_transitions=2_000,
        pretrain_steps=200,
        env_steps=240,
        warmup_steps=80,
        eval_every=120,
        eval_episodes=4,
        overrides=(
            "agent.critic_net.hidden_dims=[32,32]",
            "agent.actor_net.hidden_dims=[32,32]",
            "agent.num_critics=2",
            "agent.batch_size=64",
            "agent.num_backup_actions=1",
        ),
        online_overrides=("agent.utd=2",),
    ),
    # run_sim.sh's settings (its default data, 3,000 Cal-QL steps with a single-action backup, K =
    # 5,000 then 5,000 online steps at UTD 4, 20 fixed poses): to compare this runner's WSRL with
    # the distributed runtime's on the same checkpoint (--pretrained/--offline: run_sim's cache).
    "sim_demo": Suite(
        dataset_transitions=18_000,
        pretrain_steps=3_000,
        env_steps=10_000,
        warmup_steps=5_000,
        eval_every=1_250,
        eval_episodes=20,
        overrides=("agent.num_critics=2", "agent.num_backup_actions=1"),
    ),
}


def prepare(
    suite: Suite,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    pretrained_dir: Path | None = None,
    offline_data: Path | None = None,
    overrides: tuple[str, ...] = (),
) -> tuple[AgentCheckpoint, ReplayBuffer, dict[str, Any]]:
    """The offline data, the pre-trained checkpoint every method of the study starts from, and
    the offline probe: transitions of the same controllers that pre-training never saw (made once;
    a finished study folder reuses them). ``pretrained_dir`` and ``offline_data``: a checkpoint
    and the dataset it was trained on, made elsewhere (e.g. run_sim.sh's cache), used as they are."""
    from learner.pretrain import pretrain
    from robot_env.collect import collect

    if (pretrained_dir is None) != (offline_data is None):
        raise ValueError("give the pre-trained checkpoint and the offline data it was trained on together")
    data, held_out = offline_data or out / "data" / "offline.npz", out / "data" / "probe.npz"
    if not data.exists():
        collect(data, transitions=suite.dataset_transitions, seed=seed, progress=progress)
    if not held_out.exists():
        collect(held_out, transitions=PROBE_SIZE, seed=seed + 10_000, progress=False)
    ckpt_dir = pretrained_dir or out / "pretrain" / "checkpoints"
    if not ckpt_dir.exists() and pretrained_dir is None:
        cfg = apply_overrides(peg_sim_pretrain(), [*suite.overrides, *overrides])
        cfg = replace(cfg, steps=suite.pretrain_steps, seed=seed, checkpoint_every=suite.pretrain_steps)
        pretrain(cfg, data, out / "pretrain", progress=progress, tensorboard=False)
    pretrained = load_checkpoint(ckpt_dir)
    gamma = pretrained.agent.config.gamma
    offline = ReplayBuffer.load(data, gamma=gamma)
    probe = ReplayBuffer.load(held_out, gamma=gamma).sample(PROBE_SIZE, np.random.default_rng(seed))
    return pretrained, offline, probe


def run_study(
    suite_name: str,
    out: Path,
    methods: list[str],
    seeds: int,
    progress: bool = True,
    pretrained_dir: Path | None = None,
    offline_data: Path | None = None,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Every method x seed of a suite. ``overrides`` (agent settings) apply after the suite's, to
    pre-training and online alike."""
    suite = SUITES[suite_name]
    pretrained, offline, probe = prepare(suite, out, 0, progress, pretrained_dir, offline_data, overrides)
    online_cfg = apply_overrides(peg_sim_online(), [*suite.overrides, *suite.online_overrides, *overrides])
    results: dict[str, Any] = {"suite": suite_name, "methods": {}}
    cells = [(m, s) for m in methods for s in range(seeds)]
    bar = tqdm(cells, desc="study", unit="run", disable=not progress)
    for name, seed in bar:
        bar.set_postfix(method=name, seed=seed)
        run = RunConfig(name, suite.env_steps, suite.warmup_steps, suite.eval_every, suite.eval_episodes, seed)
        summary = run_method(run, online_cfg, pretrained, offline, out / "runs" / name / f"seed_{seed}", probe)
        results["methods"].setdefault(name, {})[str(seed)] = summary
    write_json_atomic(out / "results.json", results)
    _plot(results, out / "results.png")
    return results


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, seeds in results["methods"].items():
        curves = [s["curve"] for s in seeds.values()]
        x = [c["env_steps"] for c in curves[0]]
        y = np.mean([[c["success_rate"] for c in curve] for curve in curves], axis=0)
        ax.plot(x, y, marker="o", label=name)
    ax.set_xlabel("env steps (warmup included)")
    ax.set_ylabel("success rate on the fixed poses")
    ax.set_title(f"study '{results['suite']}' (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="smoke")
    p.add_argument("--out", required=True, help="study folder: data, pre-training, runs, results")
    p.add_argument("--methods", nargs="+", default=sorted(METHODS), help=f"from {sorted(METHODS)}")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--pretrained", help="a pre-trained checkpoint directory made elsewhere (with --offline)")
    p.add_argument("--offline", help="the offline dataset (.npz) that checkpoint was trained on")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="agent.PATH=VALUE",
        help="agent setting after the suite's, for pre-training and online alike (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    for name in args.methods:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; methods: {sorted(METHODS)}")
    if (args.pretrained is None) != (args.offline is None):
        p.error("--pretrained and --offline go together (the checkpoint and the data it was trained on)")
    results = run_study(
        args.suite,
        Path(args.out),
        args.methods,
        args.seeds,
        not args.no_progress,
        Path(args.pretrained) if args.pretrained else None,
        Path(args.offline) if args.offline else None,
        tuple(args.overrides),
    )
    finals = {m: [s["final_success_rate"] for s in seeds.values()] for m, seeds in results["methods"].items()}
    print(json.dumps({"results": str(Path(args.out) / "results.json"), "final_success_rate": finals}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
