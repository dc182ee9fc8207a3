"""Record labelled wrist-camera frames for the reward classifier.

Usage (robot PC): ``launch/record_labels.sh --out data/labels --env Franka-v0 --robot-url http://ROBOT:5000``
(``--help`` lists every flag). In simulation, unattended:
``launch/record_labels.sh --out data/labels_sim --labels ground_truth --policy scripted``.

Labels:
- ``keyboard`` (a person at the robot PC): ``s`` marks the frames from now on as success, ``f`` as
  failure; every episode starts at failure. Hold the peg in the hole, press ``s``, move it about
  inside, press ``f`` before you pull it out. Esc ends the episode, Space pauses.
- ``ground_truth`` (simulation only): the simulation's own success check labels each frame.

Who moves the arm (``--policy``):
- ``hold``: the arm's target follows its measured pose, so in the impedance controller's compliant
  mode a person guides it by hand (the safety box still clips every target);
- ``checkpoint``: a trained policy (``--checkpoint DIR``; stochastic unless ``--deterministic``);
- ``scripted`` (simulation): the scripted inserter at a random skill per episode.

Success does not end the episode while recording, so both classes get frames around the moment
of insertion. With ground truth, ``--lift-prob`` lifts the peg out now and then after a success
(then the policy goes back in), for frames of the peg leaving the hole.

Each episode is written to ``OUT/episodes/`` when it ends (``shared/data/labelled_images.py``);
recording into an existing folder adds episodes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from robot_env.contract import StepInfo, keeps_time, step, task_env
from robot_env.make import EnvChoice, make_env
from robot_env.rollout import Policy, reset_policy
from robot_env.scripted import ScriptedInserter, Skill
from shared import defaults
from shared.command_line import option, parse_command
from shared.config import write_config_file
from shared.data.labelled_images import LabelledImageWriter
from shared.rate import RateKeeper

log = logging.getLogger("wsrl.record")
LIFT = np.array([0.0, 0.0, -1.0, 0.0, 0.0, 0.0], np.float32)  # up along the tool axis (its z points down)


class KeyboardLabeller:
    """Sticky labels from key events: ``label_success`` / ``label_failure`` set the label of the
    frames that follow; each episode starts at failure."""

    def __init__(self) -> None:
        self.success = False

    def reset(self) -> None:
        self.success = False

    def apply(self, events: list[str]) -> bool:
        """Apply this step's events; True when the label changed."""
        before = self.success
        for ev in events:
            if ev == "label_success":
                self.success = True
            elif ev == "label_failure":
                self.success = False
        return self.success != before


@dataclass
class RecordStats:
    episodes: int = 0
    frames: int = 0
    success: int = 0

    @property
    def failure(self) -> int:
        return self.frames - self.success


class RandomSkillInserter:
    """The scripted inserter with a skill drawn uniformly from ``[lo, hi]`` each episode."""

    def __init__(self, task: Any, lo: float, hi: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = lo, hi
        self.inner = ScriptedInserter(task, Skill.level(hi), seed=seed)

    def reset(self) -> None:
        self.inner.skill = Skill.level(float(self.rng.uniform(self.lo, self.hi)))
        self.inner.reset()

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.inner(obs)


def record(
    env: gym.Env,
    policy: Policy,
    writer: LabelledImageWriter,
    episodes: int,
    labels: str,
    events: Callable[[], list[str]] | None = None,
    hz: float = 0.0,
    lift_prob: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> RecordStats:
    """Record ``episodes`` episodes into ``writer``; an interrupted episode is written as far as it got."""
    if labels not in ("keyboard", "ground_truth"):
        raise ValueError(f"labels must be 'keyboard' or 'ground_truth', got {labels!r}")
    if labels == "keyboard" and events is None:
        raise ValueError("keyboard labels need key events")
    keys = writer.image_keys
    labeller = KeyboardLabeller()
    rng = np.random.default_rng(seed)
    hz = 0.0 if keeps_time(env) else hz
    rate = RateKeeper(hz)
    stats = RecordStats()
    bar = tqdm(total=episodes, unit="episode", desc="recording", disable=not progress)
    try:
        for _ in range(episodes):
            obs, info = env.reset(seed=int(rng.integers(2**31)))
            reset_policy(policy)
            labeller.reset()
            frames: list[dict[str, np.ndarray]] = []
            ys: list[int] = []
            env_ys: list[int] = []
            states: list[np.ndarray] = []

            def keep(
                o: Mapping[str, np.ndarray], y: bool, env_y: Any, frames=frames, ys=ys, env_ys=env_ys, states=states
            ) -> None:
                frames.append({k: o[k] for k in keys})
                ys.append(int(y))
                env_ys.append(-1 if env_y is None else int(bool(env_y)))
                states.append(o["state"])

            env_y = StepInfo.of(info).success
            keep(obs, bool(env_y) if labels == "ground_truth" else labeller.success, env_y)
            lifting, paused = 0, False
            try:
                while True:
                    evs = events() if events is not None else []
                    if evs.count("pause") % 2:
                        paused = not paused
                        print("paused" if paused else "recording", file=sys.stderr, flush=True)
                        rate = RateKeeper(hz)  # a pause is not an overrun
                    if labels == "keyboard" and labeller.apply(evs):
                        print(f"label: {'SUCCESS' if labeller.success else 'failure'}", file=sys.stderr, flush=True)
                    if "end_episode" in evs:
                        break
                    if paused:
                        time.sleep(0.05)
                        continue
                    rate.wait()
                    action = LIFT if lifting else np.asarray(policy(obs), np.float32)
                    lifting = max(lifting - 1, 0)
                    s = step(env, action)
                    if s.info.robot_error:  # the env handed back its last frame again: nothing new
                        break
                    obs, env_y = s.obs, s.info.success
                    y = bool(env_y) if labels == "ground_truth" else labeller.success
                    keep(obs, y, env_y)
                    if labels == "ground_truth" and env_y and not lifting and rng.random() < lift_prob:
                        lifting = int(rng.integers(2, 5))
                    bar.set_postfix(
                        frames=stats.frames + len(ys),
                        success=stats.success + ys.count(1),
                        label="SUCCESS" if y else "failure",
                        refresh=False,
                    )
                    if s.done:
                        break
            finally:  # an interrupted episode keeps what it recorded
                writer.write_episode(frames, ys, env_ys, states)
                stats.episodes += 1
                stats.frames += len(ys)
                stats.success += ys.count(1)
                bar.update(1)
                bar.set_postfix(frames=stats.frames, success=stats.success, failure=stats.failure)
    finally:
        bar.close()
    return stats


@dataclass(frozen=True)
class RecordLabelsConfig(EnvChoice):
    """What ``wsrl-record-labels`` records (its ``record_labels:`` section)."""

    out: str | None = option(None, "dataset folder (created, or added to; required)")
    episodes: int = option(20, "episodes to record")
    labels: str = option("keyboard", "who labels the frames", choices=("keyboard", "ground_truth"))
    policy: str = option("hold", "what moves the arm", choices=("hold", "checkpoint", "scripted"))
    checkpoint: str | None = option(None, "policy checkpoint directory for --policy checkpoint")
    deterministic: bool = option(False, "the checkpoint's mean action (default: samples)")
    skill: tuple[float, float] = option(
        (0.3, 1.0), "scripted policy: skill range drawn from per episode", metavar=("MIN", "MAX")
    )
    lift_prob: float = option(0.1, "ground truth: chance per successful step of lifting the peg out for 2-4 steps")
    image_size: int = option(128, "square frame size saved (the policy's size)")
    hz: float | None = option(
        None, "control rate (default: 10 with a person, as fast as possible with ground truth; Franka-v0 keeps its own)"
    )
    seed: int = option(0, "seed of the policy and the env")


def main(argv: list[str] | None = None) -> None:
    p, args = parse_command(RecordLabelsConfig, "record_labels", argv, __doc__)
    if args.out is None:
        p.error("--out is required (or a config file's record_labels.out)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)

    from robot_env.contract import IMAGE_KEYS, STATE_DIM
    from shared.config import RewardConfig

    if args.labels == "ground_truth" and args.env != defaults.SIM_ENV_ID:
        p.error("--labels ground_truth is for the simulation; on the robot a person labels (--labels keyboard)")
    if args.policy == "checkpoint" and not args.checkpoint:
        p.error("--policy checkpoint needs --checkpoint DIR")
    if args.policy == "scripted" and args.env != defaults.SIM_ENV_ID:
        p.error("--policy scripted is for the simulation (it needs the simulated hole's geometry)")
    spec = {"state": ((STATE_DIM,), "float32"), **dict.fromkeys(IMAGE_KEYS, ((args.image_size,) * 2 + (3,), "uint8"))}
    env = make_env(
        args.env,
        args.task,
        RewardConfig(),
        spec,
        args.seed,
        args.robot_url,
        args.cameras,
        end_on_success=False,
        gripper=args.gripper,
    )
    policy: Policy
    if args.policy == "hold":
        policy = lambda obs: np.zeros(6, np.float32)
    elif args.policy == "scripted":
        policy = RandomSkillInserter(task_env(env).task, args.skill[0], args.skill[1], args.seed)
    else:
        from shared.learning.agents import policy_fn
        from shared.storage.checkpoint import load_checkpoint

        assert args.checkpoint is not None  # checked above, with the reason
        ckpt = load_checkpoint(args.checkpoint)
        keys_needed = list(ckpt.obs_spec)
        for k in keys_needed:
            if ckpt.obs_spec[k][0] != spec[k][0]:
                p.error(f"the checkpoint's '{k}' is {list(ckpt.obs_spec[k][0])}; record at its size (--image-size)")
        act = policy_fn(ckpt.agent, deterministic=args.deterministic, seed=args.seed)
        policy = lambda obs: act({k: obs[k] for k in keys_needed})
    keyboard = None
    if args.labels == "keyboard":
        from actor.keyboard import Keyboard

        keyboard = Keyboard()  # a KeyboardError says why it cannot (no display, no pynput)
    hz = args.hz if args.hz is not None else (10.0 if args.labels == "keyboard" else 0.0)
    writer = LabelledImageWriter(
        args.out,
        IMAGE_KEYS,
        args.image_size,
        args.task,
        args.labels,
        extra={"env": args.env, "policy": args.policy, "checkpoint": args.checkpoint},
    )
    write_config_file(Path(args.out) / "config.yaml", {"record_labels": args})  # the last recording's settings
    print(
        f"recording {args.episodes} episodes of {args.env} into {args.out} (labels: {args.labels}, policy: "
        f"{args.policy})"
        + ("; keys: s success from now, f failure from now, Esc end episode, Space pause" if keyboard else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        stats = record(
            env,
            policy,
            writer,
            args.episodes,
            args.labels,
            keyboard.events if keyboard else None,
            hz,
            args.lift_prob if args.labels == "ground_truth" else 0.0,
            args.seed,
        )
    except KeyboardInterrupt:
        print("interrupted; the episodes recorded so far are saved", file=sys.stderr)
        return
    finally:
        env.close()
        if keyboard is not None:
            keyboard.close()
    print(
        json.dumps(
            {
                "episodes": stats.episodes,
                "frames": stats.frames,
                "success": stats.success,
                "failure": stats.failure,
                "out": str(args.out),
            }
        )
    )


if __name__ == "__main__":
    main()
