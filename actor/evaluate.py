"""Evaluation over the task's fixed initial poses: each once, the deterministic policy, a judge.

Usage: ``launch/evaluate.sh --checkpoint DIR --out OUT [--judge ground_truth|classifier|keyboard]
[--reward-classifier DIR]`` (``python -m actor.evaluate --help`` lists every flag; ``--config FILE``
reads them from an experiment file's ``evaluate:`` section, such as the ``OUT/config.yaml`` each run saves).

Judges: ``ground_truth`` (the env's own check: the simulation's ground truth, unattended),
``classifier`` (the reward classifier) or ``keyboard`` (a person presses ``s`` or ``f`` after each
episode; Esc ends an episode early). Every other verdict available (the env's check, and the
classifier's when one is given) is recorded beside the judge's. An intervention (a step whose ``StepInfo.intervened``
is set) counts as a failure. Time to success is control steps times the
control period (the real env keeps that period; the simulation counts simulated time).
Writes ``OUT/report.json`` (one record per pose), ``OUT/report.md`` and ``OUT/report.png``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from actor.keyboard import KeyboardError
from actor.teleop import InterventionChoice, TeleopError, with_interventions
from robot_env.contract import RobotEnvError, step, task_env
from robot_env.make import EnvChoice, make_env
from robot_env.rollout import Policy, reset_policy
from shared import defaults
from shared.command_line import option, parse_command
from shared.config import write_config_file
from shared.live_view import LiveView, ViewChoice, open_view

log = logging.getLogger("wsrl.evaluate")
JUDGES = ("ground_truth", "classifier", "keyboard")


@dataclass(frozen=True)
class PoseResult:
    pose_index: int
    success: bool  # the judge's verdict (False whenever intervened)
    intervened: bool
    time_to_success_s: float | None
    steps: int
    env_success: bool  # the env's own check: ground truth in simulation, the pose check on the robot
    classifier_success: bool | None  # the reward classifier's verdict (None: no classifier)
    judge: str


class KeyboardJudge:
    """Asks the person at the robot: ``s`` success, ``f`` failure (after each episode)."""

    def __init__(self, events: Callable[[], list[str]]) -> None:
        self.events = events
        self.waiting = False  # True while a verdict is asked for; keys before that do not count

    def verdict(self, pose_index: int) -> bool:
        print(f"pose {pose_index}: press s (success) or f (failure)", file=sys.stderr, flush=True)
        self.waiting = True
        try:
            while True:
                for ev in self.events():
                    if ev in ("label_success", "label_failure"):
                        return ev == "label_success"
                time.sleep(0.02)
        finally:
            self.waiting = False


def _reset_until_it_works(env: gym.Env, pose: int, wait_s: float = 2.0) -> Any:
    """The reset to a fixed pose, tried again while the robot fails (a server down, a jammed
    peg): a person is at the robot during evaluation, so say what failed and wait for them."""
    tries = 0
    while True:
        try:
            return env.reset(options={"eval_pose": pose})[0]
        except RobotEnvError as e:
            tries += 1
            log.error(
                "evaluate: the reset to pose %d failed (try %d): %s; fix it, trying again in %.0f s",
                pose,
                tries,
                e,
                wait_s,
            )
            time.sleep(wait_s)


def evaluate_poses(
    env: gym.Env,
    policy: Policy,
    poses: list[int],
    judge: str = "ground_truth",
    keyboard: KeyboardJudge | None = None,
    progress: Callable[[PoseResult], None] | None = None,
    view: LiveView | None = None,
) -> list[PoseResult]:
    """Run each pose once and judge it: ``ground_truth`` (the env's own check), ``classifier``
    (an env wrapped in ``ClassifierReward``) or ``keyboard`` (``keyboard`` asks a person).
    Every verdict available is recorded whichever judges. ``view``: the live view, which shows
    each step's frames and action and each pose's verdict."""
    if judge not in JUDGES:
        raise ValueError(f"judge must be one of {JUDGES}, got {judge!r}")
    if (judge == "keyboard") != (keyboard is not None):
        raise ValueError("the keyboard judge needs a KeyboardJudge, and only it does")
    has_clf = _has_classifier(env)
    if judge == "classifier" and not has_clf:
        raise ValueError("judge 'classifier' needs an env wrapped in ClassifierReward")
    dt = task_env(env).task.control_dt
    results = []
    total = 0
    for i in poses:
        obs = _reset_until_it_works(env, i)
        reset_policy(policy)
        if keyboard is not None:
            keyboard.events()  # keys pressed before the episode do not count
        steps, first_env, first_clf, intervened, ended = 0, None, None, False, False
        while not ended:
            action = np.asarray(policy(obs), np.float32)
            if view is not None:
                view.at("eval_step", total)
                view.images("eval/camera", obs)
            s = step(env, action)
            obs = s.obs
            steps += 1
            total += 1
            if view is not None:
                shown = {"action": s.action, "intervening": float(s.info.intervened), "pose": float(i)}
                if s.info.classifier_prob is not None:
                    shown["classifier_prob"] = s.info.classifier_prob
                view.scalars("eval", shown)
            intervened |= s.info.intervened
            if s.info.env_succeeded and first_env is None:
                first_env = steps
            if has_clf and s.info.succeeded and first_clf is None:
                first_clf = steps
            ended = s.done
            if keyboard is not None and "end_episode" in keyboard.events():
                ended = True
        first: int | None
        if keyboard is not None:  # judge == "keyboard" (checked above)
            verdict = keyboard.verdict(i)
            # a person's success: when the automatic check fired, else when they ended the episode
            first = (first_clf if has_clf else first_env) or steps
        else:
            first = first_clf if judge == "classifier" else first_env
            verdict = first is not None
        success = bool(verdict and not intervened)
        res = PoseResult(
            i,
            success,
            intervened,
            first * dt if success and first is not None else None,
            steps,
            first_env is not None,
            (first_clf is not None) if has_clf else None,
            judge,
        )
        results.append(res)
        if view is not None:
            view.scalars("eval/result", {"pose": float(i), "success": float(success), "steps": float(steps)})
            view.event(f"pose {i}: {'success' if success else 'failure'}{' (intervened)' if intervened else ''}")
        if progress is not None:
            progress(res)
    return results


def _has_classifier(env: gym.Env) -> bool:
    from robot_env.classifier_reward import ClassifierReward

    while isinstance(env, gym.Wrapper):
        if isinstance(env, ClassifierReward):
            return True
        env = env.env
    return False


def write_report(out: Path, results: list[PoseResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    times = [r.time_to_success_s for r in results if r.time_to_success_s is not None]
    report = {
        **meta,
        "episodes": len(results),
        "successes": sum(r.success for r in results),
        "success_rate": float(np.mean([r.success for r in results])) if results else 0.0,
        "intervened_episodes": sum(r.intervened for r in results),
        "mean_time_to_success_s": float(np.mean(times)) if times else None,
        "env_check_successes": sum(r.env_success for r in results),
        "classifier_successes": None,
        "classifier_agrees_with_env_check": None,
        "poses": [asdict(r) for r in results],
    }
    if any(r.classifier_success is not None for r in results):
        report["classifier_successes"] = sum(bool(r.classifier_success) for r in results)
        report["classifier_agrees_with_env_check"] = sum(r.classifier_success == r.env_success for r in results)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Evaluation: {report['successes']}/{report['episodes']} successes",
        "",
        f"checkpoint: `{meta.get('checkpoint')}`; judge: {meta.get('judge')}; "
        f"intervened episodes: {report['intervened_episodes']}; the env's own check: {report['env_check_successes']} successes"
        + (
            ""
            if report["classifier_successes"] is None
            else f"; the reward classifier: {report['classifier_successes']} successes, agreeing with the env's check "
            f"on {report['classifier_agrees_with_env_check']}/{len(results)} poses"
        ),
        "",
        "| pose | success | intervened | time to success (s) | steps | env's check | classifier |",
        "|---|---|---|---|---|---|---|",
    ]

    def word(v: bool | None) -> str:
        return "" if v is None else "success" if v else "failure"

    for r in results:
        t = "" if r.time_to_success_s is None else f"{r.time_to_success_s:.1f}"
        lines.append(
            f"| {r.pose_index} | {'yes' if r.success else 'no'} | {'yes' if r.intervened else ''} | {t} | "
            f"{r.steps} | {word(r.env_success)} | {word(r.classifier_success)} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(out / "report.png", results, report)
    return report


def _plot(path: Path, results: list[PoseResult], report: Mapping[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    for r in results:
        if r.success:
            ax.bar(r.pose_index, r.time_to_success_s or 0.0, color="tab:green")
        else:
            ax.plot(r.pose_index, 0.0, "x", color="tab:orange" if r.intervened else "tab:red", markersize=10)
    ax.set_xticks([r.pose_index for r in results])
    ax.set_xlabel("fixed initial pose")
    ax.set_ylabel("time to success (s)")
    ax.set_title(f"{report['successes']}/{report['episodes']} successes (x: failure; orange x: intervened)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class EvaluateConfig(EnvChoice, InterventionChoice, ViewChoice):
    """What ``wsrl-evaluate`` runs (its ``evaluate:`` section); a person may still take over for
    safety (``intervene``): that episode fails."""

    checkpoint: str | None = option(None, "a checkpoint directory (pre-training's or the learner's; required)")
    step: int | None = option(None, "a checkpoint step (default: the newest)")
    out: str | None = option(None, "report directory (default: evaluation/ beside the checkpoint directory)")
    judge: str = option(
        "ground_truth",
        "ground_truth: the env's own check (simulation: unattended); classifier: the reward classifier; "
        "keyboard: a person presses s or f after each episode",
        choices=JUDGES,
    )
    reward_classifier: str | None = option(
        None,
        "a reward classifier: its verdict is recorded beside the judge's, and its success ends episodes",
        metavar="DIR",
    )
    poses: tuple[int, ...] = option((), "pose indices (default: all fixed poses)")


def main(argv: list[str] | None = None) -> None:
    p, args = parse_command(EvaluateConfig, "evaluate", argv, __doc__)
    if args.checkpoint is None:
        p.error("--checkpoint is required (or a config file's evaluate.checkpoint)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)

    from shared.learning.agents import policy_fn
    from shared.storage.checkpoint import load_checkpoint

    ckpt = Path(args.checkpoint).absolute()
    loaded = load_checkpoint(ckpt, args.step)
    if args.judge == "classifier" and not args.reward_classifier:
        p.error("--judge classifier needs --reward-classifier")
    classifier = None
    if args.reward_classifier:
        from shared.learning.reward_classifier import load_classifier

        classifier = load_classifier(args.reward_classifier)
    env = make_env(
        args.env,
        args.task,
        loaded.reward,
        loaded.obs_spec,
        0,
        args.robot_url,
        args.cameras,
        classifier,
        gripper=args.gripper,
    )
    try:
        env = with_interventions(env, args)
    except (TeleopError, KeyboardError) as e:
        p.error(str(e))
    keyboard, judge = None, None
    if args.judge == "keyboard":
        from actor.keyboard import Keyboard

        keyboard = Keyboard()
        judge = KeyboardJudge(keyboard.events)
    elif args.judge == "ground_truth" and args.env != defaults.SIM_ENV_ID:
        log.warning("judge 'ground_truth' on %s is the env's own success check, not a person", args.env)
    poses = list(args.poses) or list(range(len(task_env(env).task.eval_poses)))
    out = Path(args.out) if args.out else ckpt.parent / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_config_file(
        out / "config.yaml", {"evaluate": replace(args, checkpoint=str(ckpt))}
    )  # ``--config OUT/config.yaml`` evaluates again
    print(
        f"evaluate: {ckpt} (step {loaded.meta.grad_steps}), {len(poses)} poses, judge {args.judge}; report in {out}",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.time()
    view = open_view(args.view, out, "evaluate", f"wsrl-evaluate-{ckpt.parent.name}-{loaded.meta.grad_steps}")
    try:
        results = evaluate_poses(
            env,
            policy_fn(loaded.agent),
            poses,
            args.judge,
            judge,
            progress=lambda r: print(
                f"  pose {r.pose_index:2d}: {'success' if r.success else 'failure'}"
                + (f" in {r.time_to_success_s:.1f} s" if r.time_to_success_s else "")
                + (" (intervened)" if r.intervened else ""),
                file=sys.stderr,
                flush=True,
            ),
            view=view,
        )
    finally:
        if view is not None:
            view.close()
        env.close()
        if keyboard is not None:
            keyboard.close()
    report = write_report(
        out,
        results,
        {
            "checkpoint": str(ckpt),
            "step": loaded.meta.grad_steps,
            "judge": args.judge,
            "reward_classifier": args.reward_classifier,
            "env": args.env,
            "task": args.task,
            "wall_time_s": round(time.time() - t0, 1),
        },
    )
    print(json.dumps({k: report[k] for k in ("successes", "episodes", "success_rate", "mean_time_to_success_s")}))


if __name__ == "__main__":
    main()
