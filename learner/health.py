"""The learner's health while the run goes: the paper's diagnostics on two fixed probes, the
alarms they and the actors' episodes raise (learner/alarms.py), and the snapshots a rollback
reloads (learner/snapshots.py).

The offline probe is a sample of the pre-training dataset, written beside the pre-trained
checkpoint's steps (``offline_probe.npz``, by ``learner/pretrain.py``); the online probe is the
first online transitions (the warmup's, by the pre-trained policy). Both are kept in the
learner's ``--out`` (``probes.npz``) so a resumed learner diagnoses the same rows, with the
alarms' baselines (``health.json``). The learner (``learner/online_learner.py``) owns the agent and the
publishing; ``LearnerHealth`` tells it what it measured, which alarms changed and which snapshot
a rollback should take.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from learner.alarms import Alarm, HealthMonitor
from learner.snapshots import Snapshots, write_event
from shared.config import OnlineConfig
from shared.data.dataset import ObsSpec, example_obs
from shared.learning.agents import Agent
from shared.learning.diagnostics import diagnose
from shared.metrics import MetricsLogger, write_json_atomic
from shared.storage.replay_buffer import ReplayBuffer

log = logging.getLogger("wsrl.health")

OFFLINE_PROBE_FILE = "offline_probe.npz"  # beside a pre-trained checkpoint's steps
PROBES_FILE = "probes.npz"  # in the learner's --out
STATE_FILE = "health.json"  # in the learner's --out: the alarms' baselines

Batch = dict[str, Any]
Transitions = list[tuple[str, Alarm | None]]


def save_batch(path: str | Path, batch: Mapping[str, Any]) -> Path:
    """A (nested) batch of arrays as one .npz, keys joined with '/'; written whole or not at all."""
    flat: dict[str, Any] = {}

    def walk(tree: Mapping[str, Any], prefix: str) -> None:
        for k, v in tree.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}/")
            else:
                flat[f"{prefix}{k}"] = np.asarray(v)

    walk(batch, "")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **flat)
    os.replace(tmp, path)
    return path


def load_batch(path: str | Path) -> Batch:
    out: Batch = {}
    with np.load(path, allow_pickle=False) as data:
        for name in data.files:
            *parents, leaf = name.split("/")
            node = out
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = data[name]
    return out


def probe_keys(probe: Batch) -> set[str]:
    return set(probe["observations"])


# ------------------------------------------------------------------------------- the learner's


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None  # JSON has no NaN


class LearnerHealth:
    """Probes, the reference (hand-off) agent, the monitor and the snapshots of one learner run."""

    def __init__(
        self,
        cfg: OnlineConfig,
        out_dir: Path,
        metrics: MetricsLogger,
        agent: Agent,
        wire: ObsSpec,
        sample_keys: list[str] | None,
        resumed: bool,
        pretrained: str | Path | None,
    ) -> None:
        self.cfg, self.out, self.metrics = cfg, out_dir, metrics
        self.monitor = HealthMonitor.for_config(cfg)
        self.snapshots = Snapshots(out_dir, cfg.health.keep_snapshots)
        self.sample_keys = sample_keys
        self.obs_example = example_obs(wire)
        self.rng = jax.random.PRNGKey(cfg.seed + 7)
        self.last_rollback: dict[str, Any] | None = None
        self.probes = self._probes(pretrained, set(sample_keys) if sample_keys is not None else set(wire))
        state_file = out_dir / STATE_FILE
        if resumed and state_file.exists():
            saved = json.loads(state_file.read_text())
            self.monitor.baseline.update(saved.get("baseline", {}))
            self.monitor.warmup_chatter.extend(saved.get("warmup_chatter", []))
        if 0 in self.snapshots.index:
            self.reference = self.snapshots.load(0)
        else:
            if resumed:
                log.warning("health: no hand-off snapshot in this run; KL is measured from the resumed agent")
            # a copy: the update donates the agent's buffers
            self.reference = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, agent)
            self.snapshots.save(agent, self.obs_example, cfg, 0, {"env_steps": 0, "weights_version": 0, "score": None})

    def _probes(self, pretrained: str | Path | None, reads: set[str]) -> dict[str, Batch]:
        probes: dict[str, Batch] = {}
        if (self.out / PROBES_FILE).exists():
            probes = load_batch(self.out / PROBES_FILE)
        elif pretrained is not None and (Path(pretrained) / OFFLINE_PROBE_FILE).exists():
            probes = {"offline_probe": load_batch(Path(pretrained) / OFFLINE_PROBE_FILE)}
        else:
            log.warning(
                "health: no %s beside the pre-trained checkpoint %s (made before probes were saved): "
                "diagnostics on the online probe only, no Q_COLLAPSE alarm",
                OFFLINE_PROBE_FILE,
                pretrained,
            )
        for name in list(probes):
            if probe_keys(probes[name]) != reads:
                log.warning(
                    "health: the %s reads %s, the updates %s (another trunk or cache setting): left out",
                    name,
                    sorted(probe_keys(probes[name])),
                    sorted(reads),
                )
                del probes[name]
        return probes

    def diagnose(self, agent: Agent, buffer: ReplayBuffer, env_steps: int) -> Transitions:
        """The diagnostics on the probes, logged under ``diag/`` (with their cost in seconds);
        returns the alarms that changed."""
        if "online_probe" not in self.probes:
            online = buffer.first(self.cfg.health.probe_size, keys=self.sample_keys)
            if online is not None:
                self.probes["online_probe"] = online
                save_batch(self.out / PROBES_FILE, self.probes)
        if not self.probes:
            return []
        t0 = time.monotonic()
        self.rng, key = jax.random.split(self.rng)
        values = diagnose(self.reference, agent, self.probes, key)
        self.metrics.log(env_steps, {**values, "seconds": time.monotonic() - t0}, prefix="diag/")
        changed = self.monitor.on_diagnosis(values, env_steps)
        write_json_atomic(
            self.out / STATE_FILE,
            {"baseline": self.monitor.baseline, "warmup_chatter": self.monitor.warmup_chatter[-1000:]},
        )
        return changed

    def record(self, changed: Transitions, env_steps: int, grad_steps: int) -> list[Alarm]:
        """Each alarm raised or cleared: an event and a log line. Returns those raised."""
        raised = []
        for kind, alarm in changed:
            if alarm is None:
                continue
            write_event(
                self.out,
                {
                    "event": f"alarm_{kind}",
                    "alarm": alarm.name,
                    "message": alarm.message,
                    "value": _finite_or_none(alarm.value),
                    "threshold": _finite_or_none(alarm.threshold),
                    "since_env_steps": alarm.since_env_steps,
                    "env_steps": env_steps,
                    "grad_steps": grad_steps,
                },
            )
            if kind == "raised":
                log.error("ALARM %s: %s", alarm.name, alarm.message)
                self.metrics.event(f"ALARM {alarm.name}: {alarm.message}", "ERROR")
                raised.append(alarm)
            else:
                log.info("alarm %s cleared", alarm.name)
                self.metrics.event(f"alarm {alarm.name} cleared")
        return raised

    def rollback_target(self, alarm: Alarm | None) -> int:
        """The best-scoring snapshot saved before the alarm's evidence began (any, for a request
        without a step); the hand-off agent when none has a score."""
        best = self.snapshots.best(None if alarm is None else alarm.since_env_steps)
        return 0 if best is None else best

    def rolled_back(self, info: dict[str, Any]) -> None:
        self.monitor.after_rollback()
        self.last_rollback = info
        write_event(self.out, {"event": "rollback", **info})
        self.metrics.event(f"ROLLBACK ({info.get('reason')}) to snapshot {info.get('to')}", "WARN")

    def snapshot(self, agent: Agent, grad_steps: int, env_steps: int, version: int) -> None:
        score = self.monitor.window_success()
        self.snapshots.save(
            agent,
            self.obs_example,
            self.cfg,
            grad_steps,
            {"env_steps": env_steps, "weights_version": version, "score": score},
        )

    def status(self) -> dict[str, Any]:
        return {
            "alarms": sorted({a.removesuffix("_DIAGNOSIS") for a in self.monitor.active}),
            "last_rollback": self.last_rollback,
            "snapshots": self.snapshots.listing(),
        }

    def close(self) -> None:
        self.snapshots.close()


# ------------------------------------------------------------------------- test-only sabotage


def params_copy(agent: Agent) -> tuple[Any, Any]:
    """The actor's and critics' parameters, copied (the update donates the agent's buffers)."""
    return jax.tree.map(lambda x: x.copy(), (agent.actor.params, agent.critic.params))


def spiked(before: tuple[Any, Any], agent: Agent, factor: float) -> Agent:
    """``agent`` with the update's parameter change since ``before`` multiplied by ``factor``: a
    learning rate spiked for one update (``SabotageConfig.kind = "lr_spike"``)."""
    actor, critic = (
        jax.tree.map(lambda b, a: b + factor * (a - b), old, new)
        for old, new in zip(before, (agent.actor.params, agent.critic.params), strict=True)
    )
    return agent.replace(actor=agent.actor.replace(params=actor), critic=agent.critic.replace(params=critic))
