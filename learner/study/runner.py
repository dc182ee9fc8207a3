"""One study run: a method on a task from its pre-trained checkpoint, one process, exact UTD.

The distributed runtime is right for robots but not for controlled comparisons (the actor and
learner interleave differently every run). Here one process steps the env and updates the agent
in a fixed order, so a run is determined by its seed: every method gets the same pre-trained
checkpoint, the same offline data, the same env-step budget (warmup included, as the paper's
x-axes count) and the same evaluation poses.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from robot_env import contract
from robot_env.contract import task_env
from robot_env.make import make_env
from robot_env.rollout import evaluate
from shared import defaults
from shared.config import OnlineConfig
from shared.data.dataset import Transition
from shared.learning.agents import act, make_update, policy_fn
from shared.learning.diagnostics import chattering, diagnose, q_minus_return
from shared.learning.methods import method, mixed_batch, online_agent
from shared.learning.schedule import owed_updates
from shared.metrics import write_json_atomic
from shared.storage.checkpoint import AgentCheckpoint
from shared.storage.replay_buffer import ReplayBuffer

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
    # Both of early_size rows (PROBE_SIZE but in suites that evaluate sooner), so that one
    # compilation of the diagnostics serves both.
    early: list[Transition] = []  # the first online transitions: the online probe, by the first evaluation
    early_size = min(PROBE_SIZE, run.eval_every)
    offline_probe = probe if probe is not None else offline.sample(PROBE_SIZE, np.random.default_rng(0))
    offline_probe = jax.tree.map(lambda x: x[:early_size], offline_probe)
    online_probe: dict[str, Any] | None = None
    horizon = task_env(env).task.episode_length
    guided = guided_window = 0  # env steps the pre-trained policy chose as JSRL's guide
    episodes_window = successes_window = 0  # training episodes (stochastic actions) ended since the last evaluation

    def guide_prefix(step: int) -> int:
        return int(rng.integers(0, horizon + 1)) if rng.random() < m.guide_probability(step, run.env_steps) else 0

    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    guide_left = guide_prefix(0)
    info: dict[str, Any] = {}
    updates = 0  # update calls made (each of UTD critic steps)
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
            s = contract.step(env, action)
            transition = s.transition(obs)
            buffer.insert(transition)
            if len(early) < early_size:
                early.append(transition)
            if s.done:
                episodes_window += 1
                successes_window += int(s.info.succeeded)
                obs = env.reset(seed=int(rng.integers(2**31)))[0]
                guide_left = guide_prefix(step)
            else:
                obs = s.obs
            # the runtime's schedule (shared/learning/schedule.py): nothing in the warmup, then one update of
            # UTD critic steps owed per env step, paid here at once (exact UTD)
            for _ in range(owed_updates(step, updates * cfg.utd, env_warmup, cfg.utd)):
                batch = mixed_batch(
                    buffer, offline, fraction, cfg.batch_size, rng, leading=(cfg.utd,), layout=m.batch_layout
                )
                agent, info = update(agent, batch)
                updates += 1
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
