"""The actor's control loop: fixed rate, warmup with the frozen policy, then the latest weights.

Per step: wait for the deadline (monotonic clock), choose the policy (the frozen pre-trained
one until the learner holds K env steps from all actors, counted globally; afterwards the newest
received weights, swapped between steps), sample an action, step the env, hand the transition
to the sender (a queue append). Nothing here waits on the network.

The loop keeps going through robot faults: a step the env reports as failed
(its ``StepInfo.robot_error``) is not sent to the learner and is counted; a reset that fails (the
robot server or a camera is down, or a reset found the peg jammed) is retried with a bounded
backoff, logging each try, until it works or the actor is stopped. After ``help_after_s`` without
a working robot the actor asks for help: a plain log line (repeated every ``help_after_s``) and
``status.json`` say what failed and what a person should check; it keeps waiting and goes on by
itself once the robot answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import jax
import numpy as np

from actor.sender import FatalLearnerError, TransitionSender
from actor.weights import WeightsReceiver
from robot_env.contract import RobotEnvError, Step, keeps_time, step
from shared import defaults
from shared.learning.agents import act_with_params
from shared.live_view import LiveView
from shared.metrics import write_json_atomic
from shared.rate import RateKeeper

log = logging.getLogger("wsrl.actor")


@dataclass(frozen=True)
class LoopConfig:
    hz: float = 10.0  # 0: as fast as possible (simulation)
    max_steps: int | None = None  # env steps this process takes before it stops
    warmup_steps: int = defaults.WARMUP_STEPS  # used until the learner says its K
    # Simulation only: wait while the learner's updates are this many env steps behind its UTD
    # schedule (so a fast simulator cannot outrun the learner). None on a real robot.
    max_learner_lag: float | None = None
    seed: int = 0
    reset_backoff: tuple[float, float] = (0.1, 1.0)  # first and longest wait between reset tries, s
    help_after_s: float = 30.0  # without a working robot this long, the actor asks a person for help
    view_image_every: int = 1  # with a live view: the camera frames of every n-th step (docs/benchmarks.md: cost)


@dataclass
class _Episode:
    ret: float = 0.0
    length: int = 0
    success: bool = False
    env_success: bool | None = None  # the env's own check, when a reward classifier gives ``success``
    intervened_steps: int = 0
    versions: set = field(default_factory=set)
    warmup_steps: int = 0
    jitter: list = field(default_factory=list)
    inference: list = field(default_factory=list)
    step: list = field(default_factory=list)
    obs: list = field(default_factory=list)
    classifier: list = field(default_factory=list)
    robot_errors: int = 0  # steps the env reported as failed (not sent to the learner)
    reflexes: int = 0
    overruns: float | None = None  # the env's own count of this episode's overrun periods, if it keeps time
    last_action: np.ndarray | None = None
    action_change: float = 0.0  # summed |a_t - a_(t-1)|: the learner's CHATTERING alarm (learner/health.py)
    view: list = field(default_factory=list)  # s per step spent on the live view


class ControlLoop:
    def __init__(
        self,
        env: gym.Env,
        module: Any,
        frozen_params: Any,
        sender: TransitionSender,
        receiver: WeightsReceiver | None,
        cfg: LoopConfig,
        on_episode: Callable[[int, dict[str, float]], None] | None = None,
        events: Callable[[], list[str]] | None = None,
        status_file: Path | None = None,
        view: LiveView | None = None,
    ) -> None:
        """``events()`` (e.g. ``actor.keyboard.Keyboard.events``) is polled once per step:
        ``end_episode`` ends the current episode after this step (truncated), ``pause`` stops
        stepping until the next ``pause`` (the arm holds its last commanded pose).
        ``status_file``: where the actor says whether it runs or needs a person (JSON).
        ``view``: the operator's live view (``shared.live_view``), or None."""
        self.env, self.module, self.frozen = env, module, frozen_params
        self.events = events
        self.paused = False
        self.sender, self.receiver, self.cfg = sender, receiver, cfg
        self.on_episode = on_episode
        self.view = view
        self.stop_event = threading.Event()
        # An env that waits for its own control period (the real robot) must not be paced twice.
        self.env_keeps_time = keeps_time(env)
        if self.env_keeps_time and cfg.hz > 0:
            log.info(
                "actor: %s keeps its own control rate; the loop does not pace it", env.spec.id if env.spec else env
            )
        self.hz = 0.0 if self.env_keeps_time else cfg.hz
        self.rate = RateKeeper(self.hz)
        self.key = jax.random.PRNGKey(cfg.seed)
        self.steps = 0
        self.episodes = 0
        self.invalid_actions = 0
        self.version = 0
        self.robot_errors = 0
        self.reset_failures = 0
        self.status_file = status_file
        self.needs_help: str | None = None  # what a person should look at, while the robot is down

    def _policy(self) -> tuple[Any, int, bool]:
        warmup = self.sender.warmup_steps if self.sender.warmup_steps is not None else self.cfg.warmup_steps
        if self.sender.global_env_steps < warmup:
            return self.frozen, 0, True
        latest = self.receiver.latest() if self.receiver is not None else None
        if latest is None:
            return self.frozen, 0, False
        return latest.params, latest.version, False

    def _wait_for_learner(self) -> None:
        lag_cap = self.cfg.max_learner_lag
        if lag_cap is None:
            return
        while not self.stop_event.is_set() and not self.sender.fatal:
            if self.sender.warmup_steps is None:
                # Until the learner's welcome names its schedule the lag is unknown; running on
                # would let a fast simulated actor finish its steps before the learner starts.
                time.sleep(0.002)
                continue
            grad = self.sender.learner_grad_steps
            if self.receiver is not None and self.receiver.learner_grad_steps > grad:
                grad = self.receiver.learner_grad_steps
            if self.sender.lag_given(grad) <= lag_cap:
                return
            time.sleep(0.002)

    def _reset(self, seed: int | None = None) -> Any:
        """``env.reset()``, tried again (bounded backoff) while the robot or a camera is down;
        None when the actor was stopped meanwhile. Asks for help after ``help_after_s``."""
        wait, longest = self.cfg.reset_backoff
        tries = 0
        t0 = time.monotonic()
        asked = 0.0
        while not self.stop_event.is_set():
            try:
                obs, _ = self.env.reset(seed=seed) if tries == 0 and seed is not None else self.env.reset()
            except RobotEnvError as e:
                tries += 1
                self.reset_failures += 1
                down = time.monotonic() - t0
                log.error("actor: reset failed (try %d): %s; trying again in %.1f s", tries, e, wait)
                if down >= self.cfg.help_after_s and time.monotonic() - asked >= self.cfg.help_after_s:
                    asked = time.monotonic()
                    self._ask_for_help(down, tries, e)
                self.stop_event.wait(wait)
                wait = min(2 * wait, longest)
                continue
            if tries:
                log.info("actor: reset worked after %d failed tries; going on", tries)
            if self.needs_help is not None:
                log.warning("actor: the robot works again after %.0f s; going on", time.monotonic() - t0)
                self.needs_help = None
                self._write_status("running", None)
            return obs
        return None

    def _ask_for_help(self, down: float, tries: int, error: Exception) -> None:
        what = (
            f"no working robot for {down:.0f} s ({tries} failed resets); the last error: {error}. Check that the "
            "robot server runs and answers (launch/check_robot.sh), that the arm is not stopped (Desk, the "
            "user stop, a reflex), the cameras' cables, and free a jammed peg by hand. The actor keeps waiting "
            "and goes on by itself once a reset works."
        )
        log.error("actor: NEEDS HELP: %s", what)
        self.needs_help = what
        self._write_status("needs_help", what, down_s=round(down, 1), failed_resets=tries)
        self.sender.send_stats({"robot_down_s": float(down), "failed_resets": float(tries)})

    def _write_status(self, state: str, reason: str | None, **extra: Any) -> None:
        if self.status_file is None:
            return
        try:
            write_json_atomic(
                self.status_file, {"state": state, "reason": reason, "time": time.time(), "steps": self.steps, **extra}
            )
        except OSError as e:  # a full disk must not stop the actor
            log.warning("actor: cannot write %s: %s", self.status_file, e)

    def _wait_for_spool(self) -> None:
        """The spool's disk is full and its memory bound reached: taking more steps would lose
        them, so hold (the arm keeps its pose) until the disk has room or the learner commits."""
        logged = 0.0
        while self.sender.saturated and not self.stop_event.is_set() and not self.sender.fatal:
            now = time.monotonic()
            if now - logged >= 1.0:
                log.error("actor: the spool's disk is full and its memory bound is reached; waiting (no step is lost)")
                logged = now
            self.stop_event.wait(0.1)

    def run(self) -> dict[str, Any]:
        self._write_status("running", None)
        obs = self._reset(seed=self.cfg.seed)
        ep = _Episode()
        while not self.stop_event.is_set():
            if self.cfg.max_steps is not None and self.steps >= self.cfg.max_steps:
                break
            if self.sender.fatal:
                raise FatalLearnerError(self.sender.fatal)
            self._wait_for_learner()
            self._wait_for_spool()
            end_now = self._poll_events()
            if self.paused:
                time.sleep(0.05)
                continue
            period = self.rate.wait()
            if period is not None and self.rate.period > 0:
                ep.jitter.append(abs(period - self.rate.period))
            params, version, warm = self._policy()
            if version != self.version:
                log.info("actor: now running weights v%d", version)
                self.version = version
            t0 = time.perf_counter()
            self.key, sub = jax.random.split(self.key)
            batch = {k: np.asarray(v)[None] for k, v in obs.items()}
            action = np.asarray(act_with_params(params, self.module, batch, sub, False))[0]
            t1 = time.perf_counter()
            if not np.all(np.isfinite(action)):
                self.invalid_actions += 1
                if self.invalid_actions in (1, 10) or self.invalid_actions % 100 == 0:
                    log.error(
                        "actor: the policy produced a non-finite action %s; holding the pose (%d so far)",
                        action.tolist(),
                        self.invalid_actions,
                    )
                action = np.zeros_like(action)
            s = step(self.env, action)  # a person's action, where one took over, is s.action
            t2 = time.perf_counter()
            if end_now:
                s = replace(s, truncated=True)
            action = s.action
            if s.info.robot_error:
                # A failed step is not a transition the robot made: never sent as one.
                self.robot_errors += 1
                ep.robot_errors += 1
                ep.reflexes += int(s.info.reflex)
                if s.done:
                    self._end_episode(ep)
                    ep = _Episode()
                    obs = self._reset()
                else:
                    obs = s.obs
                continue
            self.sender.put(s.transition(obs))
            self.steps += 1
            ep.ret += s.reward
            ep.length += 1
            ep.success |= s.info.succeeded
            if s.info.env_success is not None:
                ep.env_success = bool(ep.env_success) or s.info.env_success
            ep.intervened_steps += int(s.info.intervened)
            if ep.last_action is not None:
                ep.action_change += float(np.linalg.norm(action - ep.last_action))
            ep.last_action = np.asarray(action, np.float32)
            ep.versions.add(version)
            ep.warmup_steps += int(warm)
            ep.inference.append(t1 - t0)
            ep.step.append(t2 - t1)
            if self.view is not None:
                t3 = time.perf_counter()
                self._show(obs, s, 0 if warm else version)
                ep.view.append(time.perf_counter() - t3)
            timing = self._timing()
            if timing and "observation_ms" in timing:
                ep.obs.append(float(timing["observation_ms"]) / 1e3)
            if timing and "classifier_ms" in timing:
                ep.classifier.append(float(timing["classifier_ms"]) / 1e3)
            if timing and self.env_keeps_time and "period_s" in timing:
                ep.jitter.append(abs(float(timing["period_s"]) - float(timing["target_period_s"])))
            if timing and "overruns" in timing:  # an env that keeps its own rate counts this episode's
                ep.overruns = float(timing["overruns"])
            obs = s.obs
            if s.done:
                self._end_episode(ep)
                ep = _Episode()
                obs = self._reset()
        return {
            "steps": self.steps,
            "episodes": self.episodes,
            "invalid_actions": self.invalid_actions,
            "overruns": self.rate.overruns,
            "weights_version": self.version,
            "robot_errors": self.robot_errors,
            "reset_failures": self.reset_failures,
        }

    def _show(self, obs: Any, s: Step, policy: int) -> None:
        """This step on the live view: what the policy saw, what it sent, what came back."""
        assert self.view is not None
        self.view.at("actor_step", self.steps)
        if (self.steps - 1) % max(self.cfg.view_image_every, 1) == 0:
            self.view.images("actor/camera", obs)
        fields: dict[str, Any] = {
            "action": s.action,
            "intervening": float(s.info.intervened),
            "reward": s.reward,
            "policy": float(policy),  # 0: the frozen pre-trained policy (warmup), else the weights version
        }
        if s.info.classifier_prob is not None:
            fields["classifier_prob"] = s.info.classifier_prob
        self.view.scalars("actor", fields)

    def _timing(self) -> dict[str, float] | None:
        """The last step's timings from the outermost env or wrapper that keeps them (the reward
        classifier's wrapper adds its own to the env's)."""
        try:
            return self.env.get_wrapper_attr("timing")
        except AttributeError:
            return None

    def _poll_events(self) -> bool:
        """Apply pending events; True when the operator ended the episode."""
        end = False
        for ev in self.events() if self.events is not None else ():
            if ev == "end_episode":
                log.info("actor: episode ended by the operator")
                end = True
            elif ev == "pause":
                self.paused = not self.paused
                log.info("actor: %s", "paused (the arm holds its pose)" if self.paused else "resumed")
                if not self.paused:
                    self.rate = RateKeeper(self.hz)  # a pause is not an overrun
        return end

    def _end_episode(self, ep: _Episode) -> None:
        self.episodes += 1
        stats = {
            "episode": self.episodes,
            "return": ep.ret,
            "length": ep.length,
            "success": float(ep.success),
            "intervened_steps": ep.intervened_steps,
            "weights_version": max(ep.versions, default=self.version),
            "warmup_fraction": ep.warmup_steps / max(ep.length, 1),
            "global_env_steps": self.sender.global_env_steps,
            "overruns": self.rate.overruns,
            "unacked": self.sender.unacked_transitions,
            "invalid_actions": self.invalid_actions,
            "robot_errors": ep.robot_errors,
            "reflexes": ep.reflexes,
        }
        if ep.length > 1:  # the mean change between consecutive actions (shared.learning.diagnostics.chattering)
            stats["chattering"] = ep.action_change / (ep.length - 1)
        if ep.inference:
            stats["inference_ms"] = 1e3 * float(np.mean(ep.inference))
            stats["env_step_ms"] = 1e3 * float(np.mean(ep.step))
        if ep.overruns is not None:
            stats["env_overruns"] = ep.overruns
        if ep.obs:
            stats["observation_ms"] = 1e3 * float(np.mean(ep.obs))
        if ep.env_success is not None:
            stats["env_success"] = float(ep.env_success)
        if ep.classifier:
            stats["classifier_ms"] = 1e3 * float(np.mean(ep.classifier))
            stats["classifier_p99_ms"] = 1e3 * float(np.percentile(ep.classifier, 99))
        if ep.view:
            stats["view_ms"] = 1e3 * float(np.mean(ep.view))
            stats["view_p99_ms"] = 1e3 * float(np.percentile(ep.view, 99))
        if ep.jitter:
            stats["jitter_p50_ms"] = 1e3 * float(np.percentile(ep.jitter, 50))
            stats["jitter_p99_ms"] = 1e3 * float(np.percentile(ep.jitter, 99))
        self.sender.send_stats(stats)
        if self.view is not None:
            self.view.scalars("actor/episode", stats)
        if self.on_episode is not None:
            self.on_episode(self.sender.global_env_steps, stats)
