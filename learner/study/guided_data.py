"""Offline data made the way the paper's robot data was made: a guided RLPD run's replay buffer.

The WSRL paper's Franka result (Table 1, Appendix J) pre-trains on "the replay buffer of a SERL
run": SERL (RLPD with a demonstration buffer) seeded with 20 teleoperated demonstrations, a
person intervening with a SpaceMouse when the arm strays, resets drawn from a larger box than
the one used online. About 17k transitions of mixed quality: failed attempts, recoveries,
interventions, successes. ``collect_guided`` makes the simulated analogue:

1. ``demos`` successful episodes of the scripted inserter at full skill (the demonstrations);
2. an RLPD agent from scratch (SAC; each batch half demonstrations, half its own buffer, as
   SERL samples its demo buffer) acting in the task's env wrapped with the scripted person
   (``robot_env.scripted.ScriptedHuman``: it takes over while the peg is farther than
   ``intervene_distance`` from the hole), with the task file's resets (the wide box's);
3. the dataset: the demonstrations and every transition of that run, the interventions marked.

The agent settings are the caller's (the study passes a small, cheap network: the data's
quality, not the collector's, is what the suite needs). Runs on the state observations.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from robot_env.contract import ACTION_DIM, STATE_DIM, task_env
from robot_env.contract import step as env_step
from robot_env.intervention import InterventionWrapper
from robot_env.make import make_env
from robot_env.rollout import run_episode
from robot_env.scripted import ScriptedHuman, ScriptedInserter, Skill
from shared import defaults
from shared.config import AgentConfig, RewardConfig
from shared.data.dataset import Transition, obs_spec_of
from shared.learning.agents import act, create_agent, make_update
from shared.learning.methods import mixed_batch
from shared.storage.replay_buffer import ReplayBuffer


def collect_guided(
    out: str | Path,
    task: str,
    agent: AgentConfig,
    transitions: int = 17_000,
    demos: int = 20,
    intervene_distance: float = 0.02,
    training_starts: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the dataset (demonstrations + the guided RLPD run's first ``transitions`` env steps,
    and the rest of the episode then open) to ``out``; returns its summary.
    ``training_starts``: env steps before the first update (SERL's ``training_starts``)."""
    if transitions < 1 or demos < 1:
        raise ValueError("transitions and demos must be positive")
    reward = RewardConfig()
    env = make_env(defaults.SIM_ENV_ID, task, reward, {"state": ((STATE_DIM,), "float32")}, seed)
    base = task_env(env)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    spec = obs_spec_of(obs)
    horizon = base.task.episode_length
    demo_buf = ReplayBuffer(spec, ACTION_DIM, 2 * demos * (horizon + 1), agent.gamma, reward.negative)
    data = ReplayBuffer(
        spec, ACTION_DIM, 2 * (transitions + demos * horizon) + 4 * horizon, agent.gamma, reward.negative
    )

    # 1. demonstrations: successful episodes of the expert controller (a teleoperator's demos succeed)
    expert = ScriptedInserter(base.task, Skill.level(1.0), seed=seed)
    attempts = kept = 0
    while kept < demos:
        attempts += 1
        episode: list[Transition] = []
        result = run_episode(env, expert, seed=int(rng.integers(2**31)), record=episode.append)
        if result.success:
            kept += 1
            for t in episode:  # a person's actions: marked as interventions, as SERL's demos are
                t["intervened"] = True
                demo_buf.insert(t)
                data.insert(t)
        if attempts > 10 * demos:
            raise RuntimeError(f"the scripted expert succeeded in only {kept} of {attempts} episodes")

    # 2. the guided RLPD run
    cfg = replace(agent, algo="sac")
    learner = create_agent(cfg, {k: np.asarray(v) for k, v in obs.items()}, ACTION_DIM, seed)
    update = make_update(cfg, donate=False)
    person = ScriptedHuman(base.task, distance=intervene_distance, seed=seed)
    guided = InterventionWrapper(env, person)
    online = ReplayBuffer(spec, ACTION_DIM, 2 * (transitions + 2 * horizon), cfg.gamma, reward.negative)
    key = jax.random.PRNGKey(seed)
    obs, _ = guided.reset(seed=int(rng.integers(2**31)))
    episodes = successes = intervened = 0
    bar = tqdm(total=transitions, unit="step", desc="guided RLPD run", disable=not progress, mininterval=1.0)
    step = 0
    while True:  # whole episodes: Cal-QL needs every episode's return
        step += 1
        key, sub = jax.random.split(key)
        action = act(learner, {k: np.asarray(v)[None] for k, v in obs.items()}, sub)[0]
        s = env_step(guided, action)
        t = s.transition(obs)  # the action the arm executed, a person's where one took over
        online.insert(t)
        data.insert(t)
        intervened += s.info.intervened
        if s.done:
            episodes += 1
            successes += int(s.info.succeeded)
            if step >= transitions:
                bar.update(1)
                break
            obs, _ = guided.reset(seed=int(rng.integers(2**31)))
        else:
            obs = s.obs
        if step >= training_starts:
            batch = mixed_batch(online, demo_buf, 0.5, cfg.batch_size, rng, leading=(cfg.utd,))
            learner, _ = update(learner, batch)
        bar.update(1)
        if step % 500 == 0:
            bar.set_postfix(episodes=episodes, success=f"{successes / max(episodes, 1):.2f}")
    bar.close()
    env.close()
    summary = {
        "source": "guided_rlpd",
        "task": task,
        "demos": demos,
        "demo_attempts": attempts,
        "transitions": data.transitions_inserted,
        "rlpd_transitions": step,
        "rlpd_episodes": episodes,
        "guided_success_rate": successes / max(episodes, 1),  # the person's help included
        "intervened_fraction": intervened / step,
        "intervene_distance": intervene_distance,
        "agent": {"critics": cfg.num_critics, "hidden": list(cfg.critic_net.hidden_dims), "utd": cfg.utd},
        "seed": seed,
        "gamma": cfg.gamma,
    }
    out = Path(out)
    data.save(out, info={"source": "guided_rlpd", "summary": summary})
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
