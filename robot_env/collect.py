"""Collect a mixed-quality offline dataset in the simulation with scripted controllers.

Each episode draws a skill uniformly from ``[skill_min, skill_max]`` (see
``robot_env.scripted.Skill.level``) and a random reset; transitions go into a ``ReplayBuffer``
that is saved in the project's dataset format, with a summary in its metadata and beside it.

Usage: ``launch/collect_sim_data.sh --out data/peg_sim.npz`` (``--help`` lists the flags).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import robot_env
from robot_env import contract
from robot_env.contract import task_env
from robot_env.rollout import run_episode
from robot_env.scripted import ScriptedInserter, Skill
from shared import defaults
from shared.command_line import option, parse_command
from shared.config import RewardConfig, write_config_file
from shared.data.dataset import obs_spec_of
from shared.storage.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.collect")

SKILL_BINS = (0.0, 0.25, 0.5, 0.75, 1.0001)


def collect(
    out: str | Path,
    transitions: int = 18_000,
    skill_range: tuple[float, float] = (0.0, 1.0),
    obs_mode: str = "state",
    image_size: int = contract.DEFAULT_IMAGE_SIZE,
    task: str = "peg_insertion",
    gamma: float = 0.98,
    reward: RewardConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect at least ``transitions`` transitions (whole episodes) into ``out``; returns the summary."""
    lo, hi = skill_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"skill range must satisfy 0 <= min <= max <= 1, got {skill_range}")
    if transitions < 1:
        raise ValueError("transitions must be positive")
    reward = reward or RewardConfig()
    env = gym.make(robot_env.SIM_ENV_ID, obs_mode=obs_mode, image_size=image_size, task=task, reward=reward)
    base = task_env(env)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    capacity = 2 * transitions + 2 * base.task.episode_length  # every episode adds one reset frame
    buf = ReplayBuffer(obs_spec_of(obs), contract.ACTION_DIM, capacity, gamma, reward.negative)
    controller = ScriptedInserter(base.task, Skill.level(lo), seed=seed)
    episodes: list[dict[str, Any]] = []
    successes = 0
    bar = tqdm(total=transitions, unit="step", desc="collecting", disable=not progress, mininterval=1.0)
    while buf.transitions_inserted < transitions:
        skill = float(rng.uniform(lo, hi))
        controller.skill = Skill.level(skill)
        before = buf.transitions_inserted
        result = run_episode(env, controller, seed=int(rng.integers(2**31)), record=buf.insert)
        episodes.append({"skill": skill, "success": result.success, "length": result.length})
        successes += result.success
        bar.update(buf.transitions_inserted - before)
        bar.set_postfix(episodes=len(episodes), success=f"{successes / len(episodes):.2f}")
    bar.close()
    env.close()
    summary = summarize(episodes)
    summary.update(
        task=task,
        obs_mode=obs_mode,
        image_size=image_size if obs_mode == "images" else None,
        skill_range=[lo, hi],
        seed=seed,
        gamma=gamma,
        reward={"scale": reward.scale, "bias": reward.bias},
    )
    out = Path(out)
    buf.save(out, info={"source": "scripted", "summary": summary})
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    succ = np.array([e["success"] for e in episodes], bool)
    lengths = np.array([e["length"] for e in episodes])
    skills = np.array([e["skill"] for e in episodes])
    by_skill = []
    for a, b in itertools.pairwise(SKILL_BINS):
        m = (skills >= a) & (skills < b)
        if m.any():
            by_skill.append(
                {"skill": [a, min(b, 1.0)], "episodes": int(m.sum()), "success_rate": round(float(succ[m].mean()), 3)}
            )
    return {
        "episodes": len(episodes),
        "transitions": int(lengths.sum()),
        "success_rate": round(float(succ.mean()), 3),
        "mean_length": round(float(lengths.mean()), 1),
        "mean_success_length": round(float(lengths[succ].mean()), 1) if succ.any() else None,
        "by_skill": by_skill,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"episodes      {s['episodes']}",
        f"transitions   {s['transitions']}",
        f"success rate  {s['success_rate']:.1%}",
        f"mean length   {s['mean_length']} steps (successful: {s['mean_success_length']})",
        "by skill:",
    ]
    for b in s["by_skill"]:
        lines.append(
            f"  {b['skill'][0]:.2f}-{b['skill'][1]:.2f}  {b['episodes']:4d} episodes  success {b['success_rate']:.1%}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class CollectSimDataConfig:
    """What ``wsrl-collect-sim-data`` collects (its ``collect_sim_data:`` section)."""

    out: str | None = option(None, "dataset file to write (.npz; required)")
    transitions: int = option(18_000, "collect at least this many (whole episodes)")
    skill_min: float = option(0.0, "lowest scripted skill drawn per episode")
    skill_max: float = option(1.0, "highest scripted skill drawn per episode")
    obs_mode: str = option("state", "observations stored", choices=contract.OBS_MODES)
    image_size: int = option(contract.DEFAULT_IMAGE_SIZE, "square frame size with --obs-mode images")
    task: str = option(defaults.TASK, "task name or path to a task file")
    gamma: float = option(0.98, "discount of the stored Monte-Carlo returns")
    seed: int = option(0, "seed of the resets and the scripted skill")
    progress: bool = option(True, "a progress bar")


def main(argv: list[str] | None = None) -> None:
    p, args = parse_command(CollectSimDataConfig, "collect_sim_data", argv, __doc__.split("\n\n")[0])
    if args.out is None:
        p.error("--out is required (or a config file's collect_sim_data.out)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    out = Path(args.out)
    if out.suffix != ".npz":
        p.error("--out must end in .npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_config_file(out.with_suffix(".config.yaml"), {"collect_sim_data": args})  # --config collects again
    summary = collect(
        out,
        args.transitions,
        (args.skill_min, args.skill_max),
        args.obs_mode,
        args.image_size,
        args.task,
        args.gamma,
        seed=args.seed,
        progress=args.progress,
    )
    print(format_summary(summary))
    print(f"wrote {out} and {out.with_suffix('.summary.json')}")


if __name__ == "__main__":
    main()
