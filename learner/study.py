"""A seeded study runner: the paper's methods on a simulated task, one process, exact UTD.

The distributed runtime is right for robots but not for controlled comparisons (the actor and
learner interleave differently every run). Here one process steps the env and updates the agent
in a fixed order, so a run is determined by its seed: every method gets the same pre-trained
checkpoint, the same offline data, the same env-step budget (warmup included, as the paper's
x-axes count) and the same evaluation poses.

Usage: ``launch/study.sh --suite smoke|sim_demo|core --out DIR [--tasks ...] [--methods ...]
[--seeds N] [--dry-run] [--report-only]`` (``python -m learner.study --help``; docs/study.md). A
run writes ``DIR/runs/<task>/<method>/seed_<s>/metrics.jsonl`` and ``summary.json``; the study
writes ``DIR/results.json``, ``DIR/results.md`` (tables with t-intervals, the claims)
and figures ``DIR/results_<task>*.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from tqdm import tqdm

from robot_env.contract import OBSERVATION_VERSION, task_env
from robot_env.make import make_env
from robot_env.rollout import evaluate
from shared import defaults
from shared.agents import act, make_update, policy_fn
from shared.checkpoint import AgentCheckpoint, load_checkpoint
from shared.config import (
    OnlineConfig,
    PretrainConfig,
    add_override_argument,
    apply_overrides,
    peg_sim_online,
    peg_sim_pretrain,
    to_dict,
)
from shared.dataset import ObsSpec, Transition, step_transition
from shared.diagnostics import chattering, diagnose, q_minus_return
from shared.methods import METHODS, method, mixed_batch, online_agent
from shared.metrics import write_json_atomic
from shared.replay_buffer import ReplayBuffer
from shared.xla_cpu import tune_process

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
    # Also this many seeded random poses at each evaluation (the same ones at every evaluation
    # of a seed, and for every method with that seed), so intervals are not limited by 20 trials.
    random_eval_episodes: int = 0
    # What the run starts from (the data and pre-training it was made with, by content), so a
    # resumed study reruns a run whose task file or pre-training changed.
    source: str = ""

    def random_eval_seed(self) -> int:
        return 1_000_000 + 1_000 * self.seed


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
    # no update during these env steps (the warmup, and the official min_steps_to_update)
    env_warmup = m.no_update_steps(run.warmup_steps, cfg.utd, cfg.batch_size)
    window_actor = m.window_actor()
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
    episodes_window = successes_window = 0  # training episodes (stochastic actions) ended since the last evaluation

    def guide_prefix(step: int) -> int:
        return int(rng.integers(0, horizon + 1)) if rng.random() < m.guide_probability(step, run.env_steps) else 0

    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    guide_left = guide_prefix(0)
    info: dict[str, Any] = {}
    with log_path.open("a") as logf:
        for step in range(1, run.env_steps + 1):
            key, sub = jax.random.split(key)
            batch_obs = {name: np.asarray(v)[None] for name, v in obs.items()}
            if step <= env_warmup and window_actor == "random":
                action = rng.uniform(-1.0, 1.0, agent.action_dim).astype(np.float32)
            elif (step <= env_warmup and window_actor == "pretrained") or guide_left > 0:  # frozen, sampled
                action = act(frozen, batch_obs, sub)[0]
                if guide_left > 0:
                    guide_left -= 1
                    guided += 1
                    guided_window += 1
            else:
                action = act(agent, batch_obs, sub)[0]
            next_obs, reward, terminated, truncated, step_info = env.step(action)
            transition = step_transition(obs, action, reward, next_obs, terminated, truncated)
            buffer.insert(transition)
            if len(early) < early_size:
                early.append(transition)
            if terminated or truncated:
                episodes_window += 1
                successes_window += int(bool(step_info.get("success", False)))
                obs = env.reset(seed=int(rng.integers(2**31)))[0]
                guide_left = guide_prefix(step)
            else:
                obs = next_obs
            if step > env_warmup:  # one update of UTD critic steps per env step: exact UTD
                batch = mixed_batch(
                    buffer, offline, fraction, cfg.batch_size, rng, leading=(cfg.utd,), layout=m.batch_layout
                )
                agent, info = update(agent, batch)
            if step % run.eval_every == 0 or step == run.env_steps:
                taken: list[Transition] = []
                res = evaluate(eval_env, policy_fn(agent, seed=run.seed), run.eval_episodes, record=taken.append)
                if run.random_eval_episodes:
                    res["fixed_success_rate"] = res["success_rate"]
                    rand = evaluate(
                        eval_env,
                        policy_fn(agent, seed=run.seed),
                        run.random_eval_episodes,
                        eval_poses=False,
                        seed=run.random_eval_seed(),
                        record=taken.append,
                    )
                    res["random_success_rate"] = rand["success_rate"]
                    n = run.eval_episodes + run.random_eval_episodes
                    res["successes"] += rand["successes"]
                    res["episodes"] = float(n)
                    res["success_rate"] = res["successes"] / n
                    res["episode_length"] = (
                        res["episode_length"] * run.eval_episodes + rand["episode_length"] * run.random_eval_episodes
                    ) / n
                res["guided_fraction"] = guided_window / run.eval_every
                # the training episodes' success (sampled actions; during warmup, the frozen policy's)
                res["train_success_rate"] = successes_window / episodes_window if episodes_window else float("nan")
                res["train_episodes"] = episodes_window
                guided_window = episodes_window = successes_window = 0
                res["chattering"] = chattering([t["actions"] for t in taken], [bool(t["dones"]) for t in taken])
                probes = {"offline_probe": offline_probe}
                if len(early) == early_size:
                    online_probe = online_probe or _as_batch(early)
                    probes["online_probe"] = online_probe
                key, k_diag = jax.random.split(key)
                res.update({f"diag/{k_}": v for k_, v in diagnose(frozen, agent, probes, k_diag).items()})
                # C3 as a bias: Q of the evaluation's actions against the return that followed them
                evaluated = q_minus_return(agent, _as_batch(taken), pretrained.reward.negative)
                res.update({f"diag/eval/{k_}": v for k_, v in evaluated.items()})
                row = {
                    "env_steps": step,
                    "grad_steps": int(agent.grad_steps),
                    **res,
                    **{f"train/{k_}": float(v) for k_, v in info.items() if np.ndim(v) == 0},
                }
                curve.append(
                    {
                        "env_steps": step,
                        "grad_steps": int(agent.grad_steps),
                        "success_rate": res["success_rate"],
                        **{k_: v for k_, v in row.items() if k_.startswith("diag/")},
                    }
                )
                logf.write(json.dumps(row) + "\n")
                logf.flush()
    env.close()
    eval_env.close()
    rates = [c["success_rate"] for c in curve]
    summary = {
        "run": dataclasses.asdict(run),
        "method": run.method,
        "seed": run.seed,
        "env_steps": run.env_steps,
        "warmup_steps": k,
        "no_update_steps": env_warmup,
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
        "dones": np.asarray([t["dones"] for t in transitions], bool),
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


# ------------------------------------------------------------------------------ tasks and suites


@dataclass(frozen=True)
class StudyTask:
    """A task of the study: the env and its task file, how its offline data is made, and the
    agent settings it needs (before the suite's)."""

    task: str
    skill_range: tuple[float, float] = (0.0, 1.0)  # the peg's scripted controllers (robot_env.collect)
    description: str = ""
    env_id: str = defaults.SIM_ENV_ID
    overrides: tuple[str, ...] = ()
    weak_of: str | None = None  # this task is that one with a weaker pre-training (C14, Fig. 30)
    # Pre-training steps as a multiple of the suite's: a sparse reward over a longer horizon takes
    # more steps to propagate back to the start.
    pretrain_factor: float = 1.0
    # How the offline data is made: "scripted" (the controllers at ``skill_range``) or "guided"
    # (learner/guided_data.py: a guided RLPD run's buffer, the paper's robot data), the latter in
    # ``collect_task``'s reset box with ``collector`` agent overrides.
    collect_kind: Literal["scripted", "guided"] = "scripted"
    collect_task: str | None = None
    collector: tuple[str, ...] = ()
    demos: int = 20
    intervene_distance: float = 0.02

    def pretrain_steps(self, suite_steps: int) -> int:
        return max(1, round(suite_steps * self.pretrain_factor))

    @property
    def is_maze(self) -> bool:
        return self.env_id == defaults.MAZE_ENV_ID

    def settings(self) -> dict[str, Any]:
        """Every number of the task file, and of how its data is collected (what the data depends on)."""
        if self.is_maze:
            from robot_env.point_maze import load_maze_task

            return dataclasses.asdict(load_maze_task(self.task))
        from robot_env.task_config import load_task

        settings = dataclasses.asdict(load_task(self.task))
        if self.collect_kind != "scripted":
            settings["collect"] = {
                "kind": self.collect_kind,
                "task": dataclasses.asdict(load_task(self.collect_task or self.task)),
                "collector": list(self.collector),
                "demos": self.demos,
                "intervene_distance": self.intervene_distance,
            }
        return settings

    def collect(self, out: Path, transitions: int, seed: int, progress: bool) -> None:
        """The task's offline data: the peg's scripted controllers at ``skill_range``, or the
        maze's noisy navigator driven to random goals (``robot_env.point_maze``)."""
        if self.is_maze:
            from robot_env.point_maze import collect_maze

            collect_maze(out, transitions, self.task, seed=seed, progress=progress)
            return
        if self.collect_kind == "guided":
            from learner.guided_data import collect_guided

            agent = apply_overrides(peg_sim_online(), list(self.collector)).agent
            collect_guided(
                out,
                self.collect_task or self.task,
                agent,
                transitions,
                self.demos,
                self.intervene_distance,
                seed=seed,
                progress=progress,
            )
            return
        from robot_env.collect import collect

        collect(
            out, transitions=transitions, task=self.task, skill_range=self.skill_range, seed=seed, progress=progress
        )

    def spaces(self) -> tuple[ObsSpec, int]:
        """The observation spec and action size of the task's env (for timing updates)."""
        import gymnasium as gym

        from shared.dataset import obs_spec_of

        env = gym.make(self.env_id, task=self.task)
        spec = obs_spec_of(env.reset(seed=0)[0])
        n = int(np.prod(env.action_space.shape or (0,)))
        env.close()
        return spec, n


TASKS = {
    "peg": StudyTask(defaults.TASK, description="the simulated peg insertion (run_sim.sh's task)"),
    "peg_hard": StudyTask(
        "peg_insertion_hard", description="tighter clearance, wider reset ranges in position and yaw"
    ),
    "peg_noexpert": StudyTask(
        "peg_insertion_hard",
        skill_range=(0.0, 0.5),
        description="peg_hard pre-trained on data without the expert half of the controllers",
        weak_of="peg_hard",
    ),
    # The paper's Table 1 (Franka peg insertion, Appendix J) in simulation: the offline data is a
    # guided RLPD run's buffer (20 demonstrations, the scripted person intervening) collected in a
    # larger reset box (peg_insertion_hard_wide); online runs and evaluations use peg_hard's.
    # peg_hard, not peg: on peg's 1 mm clearance and 4 mm chamfer the guided data was too easy
    # (Cal-QL at 18/20 after 1,000 steps, 20/20 from 2,000 on; docs/study.md).
    "peg_table1": StudyTask(
        "peg_insertion_hard",
        description="peg_hard, offline data from a guided RLPD run in a wider reset box (the paper's robot data)",
        collect_kind="guided",
        collect_task="peg_insertion_hard_wide",
        # the collector: a small SAC ensemble at UTD 1 (its data, not its speed, is what matters)
        collector=(
            "agent.critic_net.hidden_dims=[128,128]",
            "agent.actor_net.hidden_dims=[128,128]",
            "agent.num_critics=2",
            "agent.utd=1",
        ),
    ),
    # The antmaze analogue: sparse reward, diverse data that must be stitched; a longer horizon.
    "maze": StudyTask(
        "medium",
        env_id=defaults.MAZE_ENV_ID,
        overrides=("agent.gamma=0.99",),
        # Cal-QL at the core settings: 0/40 deterministic after 3,000 steps, 21/40 after 5,000,
        # 40/40 after 10,000 (docs/study.md)
        pretrain_factor=5 / 3,
        description="PointMaze medium, diverse data from a noisy navigator driven to random goals",
    ),
}


@dataclass(frozen=True)
class Suite:
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: int
    dataset_transitions: int
    pretrain_steps: int
    env_steps: int
    warmup_steps: int
    eval_every: int
    eval_episodes: int
    overrides: tuple[str, ...]  # network sizes and the like, for pre-training and online alike
    online_overrides: tuple[str, ...] = ()
    random_eval_episodes: int = 0
    headline: tuple[str, ...] = ()  # methods that get ``headline_seeds`` seeds
    headline_seeds: int = 0
    # The offline methods continued online (calql, cql, iql and _retain) at this UTD instead of the
    # online one: the paper's main comparisons (Fig. 7) run them with their own settings, UTD 1.
    continued_utd: int | None = None
    task_methods: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a task's methods instead of ``methods``
    # How seeds combine: online seed s runs on offline data collected with seed s % data_seeds and
    # on the pre-training of that data with the same seed, so the intervals cover the data and the
    # pre-training as well as the online run, and methods compared at seed s share all three.
    data_seeds: int = 1
    # Pre-training stops where the paper's did, by score: every ``pretrain_select_every`` steps
    # the checkpoint's deterministic policy is scored on the task's fixed poses, and pre-training
    # stops at the first whose successes fall in ``pretrain_select`` (inclusive); if none does by
    # the last step, the one closest to the range's middle is used (select.json keeps it all).
    pretrain_select: tuple[int, int] | None = None
    pretrain_select_every: int = 5_000

    def data_seed(self, seed: int) -> int:
        return seed % max(self.data_seeds, 1)

    def methods_for(self, task: str, methods: list[str] | None = None) -> list[str]:
        """The methods run on ``task``: ``methods`` if given, else the suite's for that task."""
        return list(methods or dict(self.task_methods).get(task, self.methods))

    def seeds_for(self, method: str, seeds: int | None = None) -> int:
        n = self.seeds if seeds is None else seeds
        return max(n, self.headline_seeds) if method in self.headline else n


_TINY = (
    "agent.critic_net.hidden_dims=[32,32]",
    "agent.actor_net.hidden_dims=[32,32]",
    "agent.num_critics=2",
    "agent.batch_size=64",
    "agent.num_backup_actions=1",
)

_CORE = (
    "agent.critic_net.hidden_dims=[128,128]",
    "agent.actor_net.hidden_dims=[128,128]",
    "agent.num_backup_actions=1",
    "agent.cql.penalty_critics=2",
)

SUITES = {
    # Every method, tiny networks, a few hundred env steps: that each runs and does what it says.
    "smoke": Suite(
        tasks=("peg",),
        methods=tuple(sorted(METHODS)),
        seeds=1,
        dataset_transitions=2_000,
        pretrain_steps=200,
        env_steps=240,
        warmup_steps=80,
        eval_every=120,
        eval_episodes=4,
        overrides=_TINY,
        # a small batch, so that the official min_steps_to_update (utd x batch) fits the budget
        online_overrides=("agent.utd=2", "agent.batch_size=16"),
    ),
    # run_sim.sh's settings (its default data, 3,000 Cal-QL steps with a single-action backup, K =
    # 5,000 then 5,000 online steps at UTD 4, 20 fixed poses): to compare this runner's WSRL with
    # the distributed runtime's on the same checkpoint (--pretrained/--offline: run_sim's cache).
    "sim_demo": Suite(
        tasks=("peg",),
        methods=("wsrl",),
        seeds=1,
        dataset_transitions=18_000,
        pretrain_steps=3_000,
        env_steps=10_000,
        warmup_steps=5_000,
        eval_every=1_250,
        eval_episodes=20,
        overrides=("agent.num_critics=2", "agent.num_backup_actions=1"),
    ),
    # The headline claims on peg_hard (sized to run in about 90 minutes on a 2-core CPU; see
    # docs/study.md for the calibration and the dry run): 10 critics of 128x128, UTD 4.
    "core": Suite(
        tasks=("peg_hard",),
        methods=("wsrl", "wsrl_no_warmup", "calql", "cql", "iql", "rlpd", "sac_fast"),
        seeds=3,
        headline=("wsrl", "calql", "rlpd", "sac_fast"),
        headline_seeds=5,
        dataset_transitions=18_000,
        pretrain_steps=3_000,
        env_steps=5_000,
        warmup_steps=2_000,
        eval_every=1_000,
        eval_episodes=20,
        random_eval_episodes=10,
        overrides=_CORE,
        continued_utd=1,
        data_seeds=3,  # the headline's 5 seeds run on data and pre-training seeds 0, 1, 2, 0, 1
    ),
}
# The paper's Table 1 replayed in simulation (state observations): a guided RLPD run's buffer
# of about 17k transitions from a wider reset box; Cal-QL (alpha 5) pre-trained up to 40k steps,
# stopped where its deterministic policy scores 8-14 of the 20 fixed poses (the paper's 13/20);
# then WSRL (K = 5,000) and RLPD given that buffer (waiting K as the official code does, and
# eagerly), 20,000 env steps, UTD 4, 10 critics, 20 poses every 2,000 steps; 5 seeds on 3 data
# seeds. The paper's prediction, written before any run: WSRL 20/20 about 3,000 steps after its
# warmup; RLPD 0/20 after 20,000 steps (docs/study.md).
SUITES["table1"] = Suite(
    tasks=("peg_table1",),
    methods=("wsrl", "rlpd", "rlpd_eager"),
    seeds=5,
    data_seeds=3,
    dataset_transitions=17_000,
    pretrain_steps=40_000,
    env_steps=20_000,
    warmup_steps=5_000,
    eval_every=2_000,
    eval_episodes=20,
    # core's networks (10 critics of 128x128, the penalty on 2): at the paper's 256x256 a Cal-QL
    # step costs 0.50 s here, 40k steps 5.5 h per data seed (--dry-run)
    overrides=(*_CORE, "agent.cql.alpha=5.0"),
    online_overrides=("agent.utd=4", "agent.num_critics=10"),
    pretrain_select=(8, 14),
    # 1,000: scored every 5,000 steps, the first data seed's pre-training was already at 20/20
    # by the first score (and at every later one)
    pretrain_select_every=1_000,
)
# The same protocol at a size the tests can run (tiny networks, a few hundred steps).
SUITES["table1_smoke"] = replace(
    SUITES["table1"],
    seeds=2,
    data_seeds=2,
    dataset_transitions=250,  # mid-episode: the guided run finishes the episode it is in
    pretrain_steps=60,
    env_steps=120,
    warmup_steps=40,
    eval_every=60,
    eval_episodes=4,
    overrides=(*_TINY, "agent.cql.alpha=5.0"),
    online_overrides=("agent.utd=2", "agent.batch_size=16"),
    pretrain_select=(1, 4),
    pretrain_select_every=20,
)
# core's settings with every other method on peg_hard (ablations, retention, JSRL, shorter
# warmups), the weak pre-training (peg_noexpert) and the maze; scales with --seeds.
SUITES["full"] = replace(
    SUITES["core"],
    tasks=("peg_hard", "peg_noexpert", "maze"),
    methods=tuple(sorted(METHODS)),
    task_methods=(
        ("peg_noexpert", ("wsrl", "rlpd", "sac_fast")),
        ("maze", ("wsrl", "wsrl_no_warmup", "calql", "cql", "iql", "jsrl", "rlpd", "sac_fast")),
    ),
)


def with_budget(suite: Suite, budget: dict[str, int] | None) -> Suite:
    """``suite`` with its env-step budget and K changed where ``budget`` says."""
    b = budget or {}
    unknown = set(b) - {"env_steps", "warmup_steps"}
    if unknown:
        raise ValueError(f"unknown budget keys {sorted(unknown)}")
    return replace(
        suite, env_steps=b.get("env_steps", suite.env_steps), warmup_steps=b.get("warmup_steps", suite.warmup_steps)
    )


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
    from shared.checkpoint import list_steps

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


def _cells(suite: Suite, tasks: list[str], methods: list[str] | None, seeds: int | None) -> list[tuple[str, str, int]]:
    return [(t, m, s) for t in tasks for m in suite.methods_for(t, methods) for s in range(suite.seeds_for(m, seeds))]


def _finished(path: Path, run: RunConfig) -> dict[str, Any] | None:
    """A run's summary if it finished with this exact run config (a resumed study skips it)."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("run") == dataclasses.asdict(run) else None


def run_study(
    suite_name: str,
    out: Path,
    methods: list[str] | None = None,
    seeds: int | None = None,
    progress: bool = True,
    pretrained_dir: Path | None = None,
    offline_data: Path | None = None,
    overrides: tuple[str, ...] = (),
    tasks: list[str] | None = None,
    cache: Path | None = None,
    budget: dict[str, int] | None = None,
    report_only: bool = False,
) -> dict[str, Any]:
    """Every task x method x seed of a suite (``methods``, ``tasks``, ``seeds``: instead of the
    suite's). ``overrides`` (agent settings) apply after the suite's, to pre-training and online
    alike. ``budget``: the suite's ``env_steps``/``warmup_steps`` (K) changed. Finished runs are
    kept: an interrupted study resumes with the first unfinished run. ``report_only``: write the
    results of the runs already finished (a study in progress) and run nothing."""
    suite = with_budget(SUITES[suite_name], budget)
    tasks = list(tasks or suite.tasks)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"suite": suite_name, "overrides": list(overrides), "tasks": {}}
    cells = _cells(suite, tasks, methods, seeds)
    bar = tqdm(cells, desc="study", unit="run", disable=not progress, dynamic_ncols=True)
    prepared: dict[tuple[str, str, int], tuple[AgentCheckpoint, ReplayBuffer, dict[str, Any]]] = {}
    for task, name, seed in bar:
        bar.set_postfix(task=task, method=name, seed=seed)
        algo = method(name).pretrain_algo
        data_seed = 0 if pretrained_dir is not None else suite.data_seed(seed)
        pre_cfg = pretrain_config(suite, overrides, algo, data_seed, task)
        source = (
            f"{pretrained_dir.absolute()}"
            if pretrained_dir is not None
            else f"{data_folder(suite, task, data_seed)}/{pretrain_folder(pre_cfg)}"
        )
        run = RunConfig(
            name,
            suite.env_steps,
            suite.warmup_steps,
            suite.eval_every,
            suite.eval_episodes,
            seed,
            env_id=TASKS[task].env_id,
            task=TASKS[task].task,
            random_eval_episodes=suite.random_eval_episodes,
            source=source,
        )
        run_dir = out / "runs" / task / name / f"seed_{seed}"
        summary = _finished(run_dir / "summary.json", run)
        if summary is None and report_only:
            continue
        if summary is None:
            if (task, algo, data_seed) not in prepared:
                prepared[(task, algo, data_seed)] = prepare(
                    suite, out, data_seed, progress, pretrained_dir, offline_data, overrides, task, algo, cache
                )
            pretrained, offline, probe = prepared[(task, algo, data_seed)]
            cfg = online_config_for(suite, task, overrides)
            if method(name).online_algo == "pretrained" and suite.continued_utd is not None:
                cfg = replace(cfg, agent=replace(cfg.agent, utd=suite.continued_utd))
            summary = run_method(run, cfg, pretrained, offline, run_dir, probe)
        results["tasks"].setdefault(task, {}).setdefault(name, {})[str(seed)] = summary
    write_json_atomic(out / "results.json", results)
    write_results(results, out, suite_name)
    return results


def write_results(results: dict[str, Any], out: Path, suite_name: str) -> None:
    """``results.md`` (tables with intervals, the claims) and a figure per task."""
    from learner.study_results import results_markdown

    ran = results["tasks"]
    plots = [_plot_task(results, task, out / f"results_{task}.png") for task in ran]
    for task, by_method in ran.items():
        for group, (title, members) in FIGURES.items():
            shown = [m for m in members if m in by_method]
            if len(shown) >= 2:
                plots.append(_plot_task(results, task, out / f"results_{task}_{group}.png", shown, title))
    # Fig. 30: each method on the task and on its weak-pre-training variant, side by side
    for weak, strong in ((t, TASKS[t].weak_of) for t in ran if TASKS[t].weak_of in ran):
        both = {f"{m} ({t})": ran[t][m] for m in ran[weak] if m in ran[strong] for t in (strong, weak)}
        if both:
            key = f"{weak}_vs_{strong}"
            title = "weak pre-training (paper Fig. 30)"
            plots.append(_plot_task({"tasks": {key: both}}, key, out / f"results_{key}.png", title=title))
    # The claims on every task that ran (C14 on a task that has a weak variant), the first task's untagged.
    tested = [t for t in ran if TASKS[t].weak_of is None] or list(ran)[:1] or ["peg"]
    weak_of = {spec.weak_of: name for name, spec in TASKS.items() if spec.weak_of}
    rows = [c for i, t in enumerate(tested) for c in claims(t, weak_of.get(t), "" if i == 0 else t)]
    header = (
        f"# Study `{suite_name}`\n\nMade by `launch/study.sh --suite {suite_name}` (agent overrides: "
        f"{results.get('overrides') or 'none'}). Figures: " + ", ".join(f"`{p.name}`" for p in plots) + "."
    )
    (out / "results.md").write_text(results_markdown(results, rows, header))


def claims(task: str, weak_task: str | None = "peg_noexpert", tag: str = "") -> list[Any]:
    """The paper's claims (its findings C1-C16, each written out below with the figure it rests on)
    as paired tests on ``task``, fixed before any study ran; C14 when ``weak_task`` (``task`` with a weaker pre-training) is
    given. ``tag`` marks the claims' ids (a second task). Claims on diagnostics (C2, C3, C6) are
    shown as figures, not tested."""
    from learner.study_results import NONINFERIORITY_MARGIN, Claim, Comparison

    def beats(a: str, b: str, metric: str = "auc") -> Comparison:
        return Comparison(a, b, task, metric)  # type: ignore[arg-type]

    def matches(a: str, b: str, metric: str = "auc") -> Comparison:
        """Matches or beats: non-inferiority within the margin fixed in study_results."""
        return Comparison(a, b, task, metric, "noninferior", NONINFERIORITY_MARGIN)  # type: ignore[arg-type]

    found = [
        Claim(
            "C1/C5",
            "WSRL beats the offline methods continued without retention, JSRL and SAC(fast)",
            "Figs 2, 7",
            (
                beats("wsrl", "calql"),
                beats("wsrl", "cql"),
                beats("wsrl", "iql"),
                beats("wsrl", "jsrl"),
                beats("wsrl", "sac_fast"),
            ),
        ),
        Claim("C4", "RLPD from scratch beats Cal-QL with retention", "Fig. 6", (beats("rlpd", "calql_retain"),)),
        Claim(
            "C7/C11",
            "WSRL without retention matches or beats methods that keep the data (RLPD; Table 1 at equal env steps)",
            "Fig. 9, Table 1",
            (matches("wsrl", "rlpd"), matches("wsrl", "rlpd", "final"), matches("wsrl", "calql_retain")),
        ),
        Claim("C8", "warmup is critical", "Figs 10, 19", (beats("wsrl", "wsrl_no_warmup"),)),
        Claim(
            "C9",
            "a non-pessimistic online algorithm: SAC beats Cal-QL online",
            "Fig. 12",
            (beats("wsrl", "wsrl_calql_online"),),
        ),
        Claim(
            "C10",
            "initialising the policy is crucial; the Q-function helps less",
            "Figs 12, 13",
            (beats("wsrl", "wsrl_q_only"), beats("wsrl", "wsrl_no_init")),
        ),
        Claim(
            "C12",
            "random-action warmup is no better than none; dataset warmup and retention are no better than WSRL",
            "Figs 18, 25, 26",
            (
                Comparison("wsrl_random_warmup", "wsrl_no_warmup", task, "auc", "equal"),
                beats("wsrl", "wsrl_dataset_warmup"),
                Comparison("wsrl_retain", "wsrl", task, "auc", "equal"),
            ),
        ),
    ]
    if TASKS[task].collect_kind == "guided":
        found.append(
            Claim(
                "T1",
                "with the same guided-run buffer, WSRL (no data kept) ends above RLPD (the data kept)",
                "Table 1",
                (beats("wsrl", "rlpd", "final"), beats("wsrl", "rlpd_eager", "final")),
            )
        )
    if weak_task is not None:
        found.append(
            Claim(
                "C14",
                "WSRL cannot rescue a failed pre-training",
                "Fig. 30",
                (Comparison("wsrl", "wsrl", weak_task, "final", "less", baseline_task=task),),
            )
        )
    return [replace(c, id=f"{c.id} ({tag})") for c in found] if tag else found


# Figures that mirror the paper's: the methods each compares (those that ran are drawn).
FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "no_retention": ("no retention (paper Figs 2, 7)", ("wsrl", "calql", "cql", "iql", "jsrl", "sac_fast")),
    "retention": (
        "methods that keep the data (Figs 6, 9)",
        ("wsrl", "rlpd", "wsrl_retain", "calql_retain", "cql_retain", "iql_retain"),
    ),
    "warmup": (
        "warmup on/off and kinds (Figs 10, 18, 25)",
        ("wsrl", "wsrl_no_warmup", "wsrl_random_warmup", "wsrl_dataset_warmup"),
    ),
    "k": ("the warmup's length K (Fig. 19)", ("wsrl_no_warmup", "wsrl_k500", "wsrl_k1000", "wsrl")),
    "init": (
        "initialisation and the online algorithm (Figs 12, 13)",
        ("wsrl", "wsrl_policy_only", "wsrl_q_only", "wsrl_no_init", "wsrl_calql_online"),
    ),
    "table1": ("Table 1 analogue: WSRL vs RLPD vs SAC(fast) at equal env steps", ("wsrl", "rlpd", "sac_fast")),
}


def _plot_task(
    results: dict[str, Any], task: str, path: Path, methods: list[str] | None = None, title: str = ""
) -> Path:
    """Success (mean and t-interval band over seeds) against env steps and against critic steps
    (the paper's Figs 7 and Table 1), Q minus the return that followed on the evaluation rollouts
    (C3 as a bias), Q and TD error on the held-out offline probe (Figs 4/11), and the policy's
    distance from the pre-trained one, KL(pi_pre || pi) and the entropy-free KL of the means (Fig. 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learner.study_results import mean_ci

    panels = [
        ("success_rate", "success rate", "env_steps"),
        ("success_rate", "success rate against critic steps", "grad_steps"),
        ("diag/eval/q_minus_return", "Q minus the return that followed (evaluation)", "env_steps"),
        ("diag/offline_probe/q", "Q on held-out offline data", "env_steps"),
        ("diag/offline_probe/td_error", "TD error on held-out offline data", "env_steps"),
        ("diag/online_probe/kl_policy", "KL(pi_pre || pi) on early online states", "env_steps"),
        ("diag/online_probe/kl_means", "KL of the means (unit covariance), early online states", "env_steps"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(22, 8))
    axes.flat[-1].axis("off")
    for ax, (key, panel_title, x_key) in zip(axes.flat, panels):
        for name, seeds in results["tasks"][task].items():
            if methods is not None and name not in methods:
                continue
            curves = [s["curve"] for s in seeds.values()]
            # critic steps differ between seeds only if a schedule does: the first seed's are drawn
            x = [c.get(x_key, np.nan) for c in curves[0]]
            ys = [[c.get(key, np.nan) for c in curve] for curve in curves]
            stats = [mean_ci(col) if not np.isnan(col).any() else (np.nan,) * 3 for col in np.array(ys).T]
            mean, lo, hi = (np.array(v) for v in zip(*stats))
            (line,) = ax.plot(x, mean, marker="o", ms=3, label=name)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("env steps (warmup included)" if x_key == "env_steps" else "critic steps")
        if "kl" in key:  # one method's KL can be orders of magnitude above the rest
            ax.set_yscale("symlog", linthresh=1.0)
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{task}{': ' + title if title else ''}; mean over seeds, 95% t-interval band")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def dry_run(
    suite_name: str,
    methods: list[str] | None,
    tasks: list[str] | None,
    seeds: int | None,
    overrides: tuple[str, ...] = (),
    seconds: float = 2.0,
    budget: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Time each update kind the suite needs and predict every cell's cost, without running it."""
    from learner.costs import time_update, update_kind
    from shared.methods import online_config

    suite = with_budget(SUITES[suite_name], budget)
    tasks = list(tasks or suite.tasks)
    costs: dict[str, float] = {}  # seconds per update, by task (its sizes and settings) and update kind
    pretrain_s = 0.0
    spaces = {task: TASKS[task].spaces() for task in tasks}  # one env made per task, not per cell
    for task in tasks:
        spec, action_dim = spaces[task]
        for algo in sorted({method(m).pretrain_algo for m in suite.methods_for(task, methods)}):
            cfg = pretrain_config(suite, overrides, algo, task=task).agent
            costs[f"{task}:pretrain:{algo}"] = time_update(cfg, spec, action_dim, seconds=seconds).median_s
            data_seeds = min(suite.data_seeds, max(suite.seeds_for(m, seeds) for m in suite.methods_for(task, methods)))
            steps = TASKS[task].pretrain_steps(suite.pretrain_steps)
            pretrain_s += costs[f"{task}:pretrain:{algo}"] * steps * data_seeds
    cell_costs: list[dict[str, Any]] = []
    for task, name, seed in _cells(suite, tasks, methods, seeds):
        spec, action_dim = spaces[task]
        m = method(name)
        pre_algo = pretrain_config(suite, overrides, m.pretrain_algo, task=task).agent
        cell_online = online_config_for(suite, task, overrides).agent
        if m.online_algo == "pretrained" and suite.continued_utd is not None:
            cell_online = replace(cell_online, utd=suite.continued_utd)
        cfg = online_config(m, cell_online, pre_algo)
        kind = f"{update_kind(m, cell_online, pre_algo)}@utd{cfg.utd}"
        if f"{task}:{kind}" not in costs:
            costs[f"{task}:{kind}"] = time_update(cfg, spec, action_dim, m.offline_fraction, seconds).median_s
        updates = max(suite.env_steps - m.no_update_steps(suite.warmup_steps, cfg.utd, cfg.batch_size), 0)
        evals = -(-suite.env_steps // suite.eval_every)
        # env steps and evaluation episodes at about 2 ms per step (policy call + physics), 60 steps an episode
        other = 0.002 * (suite.env_steps + evals * (suite.eval_episodes + suite.random_eval_episodes) * 60)
        cell_costs.append(
            {
                "task": task,
                "method": name,
                "seed": seed,
                "kind": kind,
                "updates": updates,
                "predicted_s": round(updates * costs[f"{task}:{kind}"] + other, 1),
            }
        )
    total = sum(float(c["predicted_s"]) for c in cell_costs) + pretrain_s
    return {
        "suite": suite_name,
        "update_s": {k: round(v, 4) for k, v in costs.items()},
        "cells": cell_costs,
        "pretrain_s": round(pretrain_s, 1),
        "total_s": round(total, 1),
    }


def main(argv: list[str] | None = None) -> None:
    tune_process()  # before JAX starts its backend
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="smoke")
    p.add_argument("--out", help="study folder: data, pre-training, runs, results (not needed with --dry-run)")
    p.add_argument("--tasks", nargs="+", help=f"instead of the suite's, from {sorted(TASKS)}")
    p.add_argument("--methods", nargs="+", help=f"instead of the suite's, from {sorted(METHODS)}")
    p.add_argument("--seeds", type=int, help="seeds per method (headline methods get at least the suite's number)")
    p.add_argument("--env-steps", type=int, help="every run's env-step budget, warmup included (default: the suite's)")
    p.add_argument("--warmup-steps", type=int, help="K (default: the suite's)")
    p.add_argument("--cache", help="where data and pre-trained checkpoints are kept by content (default OUT/cache)")
    p.add_argument("--pretrained", help="a pre-trained checkpoint directory made elsewhere (with --offline)")
    p.add_argument("--offline", help="the offline dataset (.npz) that checkpoint was trained on")
    add_override_argument(p, "agent setting after the suite's, for pre-training and online alike (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="time each update kind and predict every run's cost")
    p.add_argument("--report-only", action="store_true", help="write results.md from the runs already finished")
    p.add_argument(
        "--results",
        help="with --report-only: a study's results.json (e.g. a committed bundle in docs/study_results/) "
        "to write results.md and the figures from, into --out, instead of the runs",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    for name in args.methods or []:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; methods: {sorted(METHODS)}")
    for name in args.tasks or []:
        if name not in TASKS:
            p.error(f"unknown task {name!r}; tasks: {sorted(TASKS)}")
    budget = {k: v for k, v in (("env_steps", args.env_steps), ("warmup_steps", args.warmup_steps)) if v is not None}
    if args.dry_run:
        plan = dry_run(args.suite, args.methods, args.tasks, args.seeds, tuple(args.overrides), budget=budget)
        for c in plan["cells"]:
            print(
                f"{c['task']:14s} {c['method']:22s} seed {c['seed']}  {c['kind']:10s} {c['updates']:6d} updates  ~{c['predicted_s'] / 60:6.1f} min"
            )
        print(
            f"pre-training ~{plan['pretrain_s'] / 60:.1f} min; total ~{plan['total_s'] / 60:.1f} min for {len(plan['cells'])} runs"
        )
        print(json.dumps({"update_s": plan["update_s"], "total_s": plan["total_s"]}), flush=True)
        return
    if not args.out:
        p.error("--out is required (except with --dry-run)")
    if (args.pretrained is None) != (args.offline is None):
        p.error("--pretrained and --offline go together (the checkpoint and the data it was trained on)")
    if args.results:
        if not args.report_only:
            p.error("--results goes with --report-only")
        try:
            bundle = json.loads(Path(args.results).read_text())
            suite_name = str(bundle["suite"])
        except (OSError, ValueError, KeyError) as e:
            p.error(f"{args.results}: not a study's results.json ({e})")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_results(bundle, Path(args.out), suite_name)
        print(json.dumps({"results": str(Path(args.out) / "results.md")}), flush=True)
        return
    results = run_study(
        args.suite,
        Path(args.out),
        args.methods,
        args.seeds,
        not args.no_progress,
        Path(args.pretrained) if args.pretrained else None,
        Path(args.offline) if args.offline else None,
        tuple(args.overrides),
        args.tasks,
        Path(args.cache) if args.cache else None,
        budget,
        args.report_only,
    )
    finals = {
        f"{t}/{m}": [s["final_success_rate"] for s in seeds.values()]
        for t, ms in results["tasks"].items()
        for m, seeds in ms.items()
    }
    print(json.dumps({"results": str(Path(args.out) / "results.md"), "final_success_rate": finals}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
