"""Record teleoperated or intervention-guided episodes into the dataset format (pre-training data
collected the paper's way: SERL with a person on a SpaceMouse).

Without ``--policy`` the person drives: the robot holds still until the device is moved. With
``--policy CHECKPOINT`` that policy acts and the person takes over when they judge it needed
(intervention-guided collection). Every transition is stored with the action the robot executed
and its ``intervened`` flag, the reward from the env (or ``--reward-classifier``), and the
Monte-Carlo returns Cal-QL needs. Episodes are recorded whole: Ctrl-C stops after the current
one and saves what was recorded.

Usage (robot PC): ``launch/collect_robot_data.sh --env Franka-v0 --robot-url http://127.0.0.1:5000
--intervene spacemouse --obs-mode images --episodes 20 --out data/robot.npz``
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from actor.keyboard import KeyboardError
from actor.teleop import InterventionChoice, TeleopError, with_interventions
from robot_env import contract
from robot_env.contract import IMAGE_KEYS, STATE_DIM, task_env
from robot_env.make import EnvChoice, make_env
from robot_env.rollout import run_episode
from shared.command_line import option, parse_command
from shared.config import RewardConfig, write_config_file
from shared.data.dataset import ObsSpec
from shared.storage.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.collect_data")


def obs_spec_for(obs_mode: str, image_size: int) -> ObsSpec:
    spec: ObsSpec = {"state": ((STATE_DIM,), "float32")}
    if obs_mode == "images":
        spec.update(dict.fromkeys(IMAGE_KEYS, ((image_size, image_size, 3), "uint8")))
    return spec


class Hold:
    """The 'policy' of teleoperated collection: no motion unless a person moves the device."""

    def __call__(self, obs: Any) -> np.ndarray:
        return np.zeros(contract.ACTION_DIM, np.float32)


class CheckpointPolicy:
    """A checkpoint's actor, sampling (the behaviour the online data would have)."""

    def __init__(self, agent: Any, seed: int) -> None:
        from shared.learning.agents.base import act_with_params

        self._act, self._agent = act_with_params, agent
        self._key = jax.random.PRNGKey(seed)

    def __call__(self, obs: Any) -> np.ndarray:
        self._key, sub = jax.random.split(self._key)
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        return np.asarray(self._act(self._agent.actor.params, self._agent.nets["actor"], batch, sub, False))[0]


def collect(
    env: Any,
    policy: Any,
    out: Path,
    obs_spec: ObsSpec,
    episodes: int,
    gamma: float,
    reward: RewardConfig,
    seed: int = 0,
    stop: Any = None,
) -> dict[str, Any]:
    """Record ``episodes`` whole episodes into ``out``; returns the summary (also saved beside it)."""
    length = task_env(env).task.episode_length
    buf = ReplayBuffer(obs_spec, contract.ACTION_DIM, episodes * (length + 1) + 1, gamma, reward.negative)
    results = []
    for i in range(episodes):
        if stop is not None and stop.is_set():
            break
        r = run_episode(env, policy, seed=seed + i, record=buf.insert)
        results.append(r)
        log.info(
            "episode %d/%d: %s in %d steps, %d intervened",
            i + 1,
            episodes,
            "success" if r.success else "failure",
            r.length,
            r.intervened,
        )
    steps = sum(r.length for r in results)
    summary = {
        "episodes": len(results),
        "transitions": buf.transitions_inserted,
        "successes": sum(r.success for r in results),
        "intervened_steps": sum(r.intervened for r in results),
        "intervened_fraction": sum(r.intervened for r in results) / max(steps, 1),
        "intervened_episodes": sum(r.intervened > 0 for r in results),
        "gamma": gamma,
    }
    if results:
        buf.save(out, info={"source": "teleop", "summary": summary})
        out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass(frozen=True)
class CollectRobotDataConfig(EnvChoice, InterventionChoice):
    """What ``wsrl-collect-robot-data`` records (its ``collect_robot_data:`` section)."""

    out: str | None = option(None, "dataset file to write (.npz; required)")
    episodes: int = option(20, "episodes to record")
    policy: str | None = option(None, "a policy acts between interventions (default: hold still)", metavar="CHECKPOINT")
    obs_mode: str = option("images", "without --policy", choices=contract.OBS_MODES)
    image_size: int = option(contract.DEFAULT_IMAGE_SIZE, "without --policy")
    gamma: float = option(0.98, "discount of the stored Monte-Carlo returns")
    reward_classifier: str | None = option(None, "reward and episode ends from this classifier", metavar="DIR")
    seed: int = option(0, "seed of the policy and the env")


def main(argv: list[str] | None = None) -> None:
    p, args = parse_command(CollectRobotDataConfig, "collect_robot_data", argv, __doc__.split("\n\n")[0])
    if args.out is None:
        p.error("--out is required (or a config file's collect_robot_data.out)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    if not args.intervene:
        p.error("--intervene is needed: the device the person uses (spacemouse, keyboard; scripted in simulation)")
    out = Path(args.out)
    if out.suffix != ".npz" or args.episodes < 1:
        p.error("--out must end in .npz and --episodes be positive")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_config_file(out.with_suffix(".config.yaml"), {"collect_robot_data": args})  # --config collects again
    reward = RewardConfig()
    policy: Any = Hold()
    spec = obs_spec_for(args.obs_mode, args.image_size)
    if args.policy:
        from shared.storage.checkpoint import load_checkpoint

        ck = load_checkpoint(args.policy)
        reward, spec, policy = ck.reward, ck.obs_spec, CheckpointPolicy(ck.agent, args.seed)
    classifier = None
    if args.reward_classifier:
        from shared.learning.reward_classifier import load_classifier

        classifier = load_classifier(args.reward_classifier)
    try:
        env = make_env(
            args.env, args.task, reward, spec, args.seed, args.robot_url, args.cameras, classifier, gripper=args.gripper
        )
        env = with_interventions(env, args)
    except (ValueError, TeleopError, KeyboardError) as e:
        p.error(str(e))
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        summary = collect(env, policy, out, spec, args.episodes, args.gamma, reward, args.seed, stop)
    finally:
        env.close()
    print(json.dumps(summary))
    if not summary["episodes"]:
        sys.exit(1)
    print(f"wrote {out} and {out.with_suffix('.summary.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
