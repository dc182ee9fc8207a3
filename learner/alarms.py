"""The learner's alarms: turns diagnoses, update losses and the actors' episode statistics into
named alarms, each raised once when its condition starts and cleared when it ends. Thresholds are
``HealthConfig`` (shared/config.py); what each means for the operator is in docs/runtime.md.

- ``Q_COLLAPSE``: Q on the offline probe fell well below its value at the hand-off (the paper's
  downward spiral), on ``patience`` diagnoses in a row;
- ``TD_BLOWUP``: a probe's TD error many times its hand-off value;
- ``SUCCESS_DROP``: the actors' last window of episodes succeeded much less often than the window
  before it, by a two-proportion z-test; cleared once a window is back near the rate it fell from;
- ``NON_FINITE``: a loss or a diagnosis is NaN or infinite;
- ``CHATTERING``: actions jump between steps far more than in the warmup (the pre-trained policy).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from shared.config import HealthConfig, OnlineConfig, RewardConfig


@dataclass(frozen=True)
class Alarm:
    name: str  # Q_COLLAPSE, TD_BLOWUP, SUCCESS_DROP, NON_FINITE, CHATTERING
    message: str
    value: float
    threshold: float
    since_env_steps: int | None = None  # where its evidence starts: a rollback goes to before it


def success_drop_z(before: int, now: int, window: int) -> float:
    """Two-proportion z statistic of ``before`` successes against ``now`` in two windows of
    ``window`` episodes (positive: fewer now); 0 when both windows are all one outcome."""
    pooled = (before + now) / (2 * window)
    se = math.sqrt(pooled * (1 - pooled) * 2 / window)
    return (before - now) / window / se if se > 0 else 0.0


# z >= 3.5 over windows of 20: in 2,000 simulated runs of 600 episodes each, a steady policy
# raised a false SUCCESS_DROP in 6 % of runs at a 50 % success rate, 0.8 % at 80 % and none at
# 95 %, and a fall from 90 % to 20 % was caught in a median 15 episodes (docs/runtime.md).
SUCCESS_Z = 3.5


@dataclass
class HealthMonitor:
    """Turns diagnoses, update losses and episode statistics into alarms (pure bookkeeping; the
    learner decides what to do with them)."""

    cfg: HealthConfig
    value_range: float  # reward scale / (1 - gamma): how far Q can move at all
    baseline: dict[str, float] = field(default_factory=dict)  # the first diagnosis: the hand-off
    active: set[str] = field(default_factory=set)
    streaks: dict[str, int] = field(default_factory=dict)
    streak_from: dict[str, int] = field(default_factory=dict)  # env steps at each streak's first diagnosis
    # (success, chattering, env steps) of the live policy's episodes
    live: deque[tuple[float, float | None, int]] = field(default_factory=deque)
    warmup_chatter: list[float] = field(default_factory=list)
    success_ref: float | None = None  # the success rate a raised SUCCESS_DROP fell from

    @classmethod
    def for_config(cls, cfg: OnlineConfig) -> HealthMonitor:
        r: RewardConfig = cfg.reward
        return cls(cfg.health, abs(r.apply(1.0) - r.apply(0.0)) / (1.0 - cfg.agent.gamma))

    def _set(self, name: str, on: bool, alarm: Alarm | None, out: list[tuple[str, Alarm | None]]) -> None:
        """Record a transition: raised (once) or cleared."""
        if on and name not in self.active:
            self.active.add(name)
            out.append(("raised", alarm))
        elif not on and name in self.active:
            self.active.discard(name)
            out.append(("cleared", Alarm(name, f"{name} cleared", math.nan, math.nan)))

    def _patient(self, name: str, over: bool, env_steps: int) -> bool:
        self.streaks[name] = self.streaks.get(name, 0) + 1 if over else 0
        if self.streaks[name] == 1:
            self.streak_from[name] = env_steps
        return self.streaks[name] >= self.cfg.patience

    def on_diagnosis(self, values: Mapping[str, float], env_steps: int = 0) -> list[tuple[str, Alarm | None]]:
        """``values``: ``diagnose``'s output (``<probe>/<measure>``). The first call with a probe
        sets that probe's baseline (the hand-off)."""
        out: list[tuple[str, Alarm | None]] = []
        bad = sorted(k for k, v in values.items() if not k.endswith("q_minus_return") and not math.isfinite(v))
        self._set(
            "NON_FINITE_DIAGNOSIS",
            bool(bad),
            Alarm("NON_FINITE", f"non-finite diagnostics: {', '.join(bad)}", math.nan, math.nan),
            out,
        )
        for k, v in values.items():
            if math.isfinite(v):
                self.baseline.setdefault(k, v)
        q, q0 = values.get("offline_probe/q"), self.baseline.get("offline_probe/q")
        if q is not None and q0 is not None and math.isfinite(q):
            limit = q0 - self.cfg.q_drop * self.value_range
            over = self._patient("Q_COLLAPSE", q < limit, env_steps)
            msg = f"Q on the offline probe {q:.2f}, below {limit:.2f} (hand-off {q0:.2f})"
            self._set("Q_COLLAPSE", over, Alarm("Q_COLLAPSE", msg, q, limit, self.streak_from.get("Q_COLLAPSE")), out)
        worst: tuple[float, float, str] | None = None  # (ratio, value, probe)
        for k, v in values.items():
            if k.endswith("/td_error") and math.isfinite(v) and k in self.baseline:
                limit = max(self.cfg.td_factor * self.baseline[k], self.cfg.td_floor)
                if worst is None or v / limit > worst[0]:
                    worst = (v / limit, v, k)
        if worst is not None:
            ratio, v, k = worst
            limit = v / ratio
            over = self._patient("TD_BLOWUP", ratio > 1.0, env_steps)
            msg = f"TD error on {k.split('/')[0]} {v:.3g}, above {limit:.3g} (hand-off {self.baseline[k]:.3g})"
            self._set("TD_BLOWUP", over, Alarm("TD_BLOWUP", msg, v, limit, self.streak_from.get("TD_BLOWUP")), out)
        return out

    def on_update(self, scalars: Mapping[str, float]) -> list[tuple[str, Alarm | None]]:
        out: list[tuple[str, Alarm | None]] = []
        bad = sorted(k for k, v in scalars.items() if not math.isfinite(v))
        self._set(
            "NON_FINITE", bool(bad), Alarm("NON_FINITE", f"non-finite update values: {', '.join(bad)}", 0, 0), out
        )
        return out

    def on_episode(self, stats: Mapping[str, float]) -> list[tuple[str, Alarm | None]]:
        """An actor's episode statistics (``actor/loop.py``). Episodes with any warmup step set the
        chattering reference; the live policy's feed the windows."""
        out: list[tuple[str, Alarm | None]] = []
        chatter = stats.get("chattering")
        if float(stats.get("warmup_fraction", 0.0)) > 0.0:
            if chatter is not None and math.isfinite(chatter):
                self.warmup_chatter.append(float(chatter))
            return out
        w = self.cfg.success_window
        ended = int(stats.get("global_env_steps", 0))
        self.live.append((float(stats.get("success", 0.0)), chatter, ended))
        while len(self.live) > 2 * w:
            self.live.popleft()
        if len(self.live) == 2 * w:
            episodes = list(self.live)
            before = int(sum(e[0] for e in episodes[:w]))
            now = int(sum(e[0] for e in episodes[w:]))
            z = success_drop_z(before, now, w)
            drop = (before - now) / w
            msg = f"success {now}/{w} in the last {w} episodes against {before}/{w} before (z {z:.1f})"
            if "SUCCESS_DROP" in self.active and self.success_ref is not None:
                # raised: it stays until the last window is back near the rate it fell from
                # (against the window before, a policy that stays broken would look steady)
                on = now / w < self.success_ref - self.cfg.success_drop
            else:
                on = drop >= self.cfg.success_drop and z >= SUCCESS_Z
                if on:
                    self.success_ref = before / w
            since = episodes[w - 1][2]  # the end of the window before: the last good evidence
            alarm = Alarm("SUCCESS_DROP", msg, now / w, (before / w) - self.cfg.success_drop, since)
            self._set("SUCCESS_DROP", on, alarm, out)
        recent = [e[1] for e in list(self.live)[-w:] if e[1] is not None and math.isfinite(e[1])]
        if self.warmup_chatter and len(recent) >= w:
            ref = float(np.mean(self.warmup_chatter))
            mean = float(np.mean(recent))
            limit = max(self.cfg.chattering_factor * ref, self.cfg.chattering_floor)
            msg = f"mean action change {mean:.3f} per step over {w} episodes, above {limit:.3f} (warmup {ref:.3f})"
            since = list(self.live)[-w][2]
            self._set("CHATTERING", mean > limit, Alarm("CHATTERING", msg, mean, limit, since), out)
        return out

    def after_rollback(self) -> None:
        """The policy changed under the windows: start them again (the baselines stay)."""
        self.live.clear()
        self.streaks.clear()
        self.streak_from.clear()
        self.active.clear()
        self.success_ref = None

    def window_success(self) -> float | None:
        w = self.cfg.success_window
        if len(self.live) < w:
            return None
        return float(np.mean([e[0] for e in list(self.live)[-w:]]))
