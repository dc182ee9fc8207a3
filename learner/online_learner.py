"""The online learner (``Learner``): hands a pre-trained checkpoint off to SAC, serves actors
through ``learner.ingest``, updates on online data at the configured UTD once ``warmup_steps``
transitions are in, publishes the policy, checkpoints agent, buffer and ledger together, and
watches its own health. The command that runs it is ``learner/online.py``.

Over 400 lines on purpose: one class whose parts (start or resume, the update loop, publishing,
checkpoints, rollback) share the agent, the buffer and the counters, and must agree on them at
every checkpoint; the ingest thread, the health monitor, snapshots and checkpoint storage are
already modules of their own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from learner.alarms import Alarm
from learner.checkpoint import LearnerCheckpoints
from learner.features import TrunkFeatures
from learner.health import LearnerHealth, params_copy, spiked
from learner.ingest import IngestServer
from learner.ledger import Ledger
from learner.snapshots import take_request, write_event
from shared.config import (
    OnlineConfig,
    check_reward_settings,
    to_json,
    without_state_stats,
    write_config_file,
)
from shared.data.dataset import ObsSpec, ValueLimits, wire_spec
from shared.learning.agents import Agent, make_update
from shared.learning.encoders import caches_features
from shared.learning.handoff import handoff
from shared.learning.schedule import owed_updates
from shared.live_view import open_view, view_recording_id
from shared.metrics import MetricsLogger, to_scalars, write_json_atomic
from shared.storage.checkpoint import CheckpointError, load_checkpoint
from shared.wire.policy_weights import FULL_EVERY, weights_message
from shared.wire.protocol import encode
from shared.wire.transport import LearnerSockets, fingerprint, policy_contract

log = logging.getLogger("wsrl.learner")

REPUBLISH_EVERY_S = 1.0  # late subscribers and the simulation's pacing get the current version
RUN_FILE = "run.json"  # the run's identity, written at start-up


class Learner:
    def __init__(
        self,
        cfg: OnlineConfig,
        out_dir: str | Path,
        sockets: LearnerSockets,
        pretrained: str | Path | None = None,
        resume: bool = False,
        task: str | None = None,
        max_env_steps: int | None = None,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        release_actors: tuple[str, ...] = (),
        restart: bool = False,
        view: str = "off",
    ) -> None:
        """``release_actors``: actor ids whose binding to a CURVE key is dropped at start (an id
        bound to the wrong robot PC's key, or a PC whose keys were replaced). ``restart``: with
        ``resume``, start the run again from the pre-trained agent even though its checkpoints
        were all quarantined (otherwise that is refused: it would drop all training and data).
        ``view``: the live view's target (``shared.live_view``)."""
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoints = LearnerCheckpoints(self.out, keep=cfg.keep_checkpoints)
        self.ckpt_dir = self.checkpoints.ckpt_dir
        self.sockets = sockets
        self.max_env_steps = max_env_steps
        self.stop_event = threading.Event()
        self.version = 0
        run_file = self.out / RUN_FILE
        started = json.loads(run_file.read_text()) if run_file.exists() else None
        if (self.checkpoints.exist() or started) and not resume:
            raise FileExistsError(f"{self.out} holds a learner run already; pass --resume or another --out")
        if resume and not self.checkpoints.exist():
            lost = sorted(p.name for p in (self.out / "quarantine").glob("checkpoints-*")) if started else []
            if lost and not restart:
                raise CheckpointError(
                    f"resume: every checkpoint of run {started['run'] if started else '?'} in {self.out} was "
                    f"quarantined as unusable ({', '.join(lost)}; the reasons are in {self.out / 'quarantine'}). "
                    "Starting over would drop all its training and every checkpointed transition: keep the "
                    "quarantine for inspection, and pass --restart to start the run again from the pre-trained "
                    "agent (the actors resend what they still journal)"
                )
            if started:
                # Killed before its first checkpoint: start again from the pre-trained agent, but as
                # the same run, so the actors resend everything they journaled for it.
                pretrained = pretrained or started.get("pretrained")
                log.warning(
                    "resume: %s has no checkpoint yet; starting run %s again from %s (the actors resend "
                    "what they journaled)",
                    self.out,
                    started["run"],
                    pretrained,
                )
            else:
                log.warning("resume: %s holds nothing to resume; starting a new run", self.out)
        if resume and self.checkpoints.exist():
            state = self.checkpoints.restore(cfg.buffer_capacity)
            if replace(state.config, agent=without_state_stats(state.config.agent)) != replace(
                cfg, agent=without_state_stats(cfg.agent)
            ):
                log.warning("resuming with the checkpoint's config, not the one given")
            cfg, agent, buffer, ledger = state.config, state.agent, state.buffer, state.ledger
            features = self._features(cfg, agent, wire_spec(buffer.obs_spec))
            if features and not set(features.spec) <= set(buffer.obs_spec):
                raise CheckpointError(
                    f"resume: the run caches trunk features but its checkpointed buffer has none "
                    f"({sorted(buffer.obs_spec)})"
                )
            for actor in release_actors:
                if ledger.release(actor):
                    log.warning(
                        "released actor id %r from its CURVE key: the next actor that passes HELLO binds it", actor
                    )
                else:
                    log.warning("--release-actor %r: that id is not bound to a key here", actor)
            pretrained = started.get("pretrained") if started else None
            task = state.meta.task if state.meta.task is not None else task
            self.version = state.meta.weights_version
            run_id = state.meta.run
            log.info(
                "resumed: %d env steps, %d critic steps, weights v%d, %d transitions in the buffer",
                state.env_steps,
                int(agent.grad_steps),
                self.version,
                len(buffer),
            )
            if buffer.damaged_transitions:
                log.error(
                    "resume: %d transitions were LOST with damaged or missing frame segments in %s "
                    "(the rest of the buffer is intact; see the replay log lines above)",
                    buffer.damaged_transitions,
                    self.checkpoints.frames_dir,
                )
        else:
            if pretrained is None:
                raise ValueError("a pre-trained checkpoint is needed (WSRL starts from one)")
            pre = load_checkpoint(pretrained)
            check_reward_settings(cfg.reward, pre.reward, f"the pre-trained checkpoint {pretrained}")
            agent = handoff(pre.agent, cfg.agent, pre.obs_example(), cfg.seed)
            cfg = replace(cfg, agent=agent.config)
            features = self._features(cfg, agent, pre.obs_spec)
            buffer = self.checkpoints.new_buffer(
                features.buffer_spec(pre.obs_spec) if features else pre.obs_spec,
                agent.action_dim,
                cfg.buffer_capacity,
                cfg.agent.gamma,
                cfg.reward.negative,
                cfg.replay_frames_on_disk,
            )
            ledger = Ledger()
            run_id = str(started["run"]) if started else uuid.uuid4().hex[:16]
            # The run's identity is on disk before any transition arrives (not only in checkpoints).
            write_json_atomic(
                run_file, {"run": run_id, "pretrained": str(Path(pretrained).absolute()), "created": time.time()}
            )
            log.info("handed off pre-trained agent from %s (%d gradient steps)", pretrained, pre.meta.grad_steps)
        wire = wire_spec(buffer.obs_spec)
        self.cfg, self.agent, self.buffer, self.task = cfg, agent, buffer, task
        # What an update reads: the cached features in place of the frames they come from.
        self.sample_keys = features.sample_keys(buffer.obs_spec) if features else None
        self.contract = policy_contract(agent.config, wire, agent.action_dim, cfg.reward, task)
        self.fingerprint = fingerprint(self.contract)
        # What ran (the hand-off's agent config included): ``--config OUT/config.yaml`` runs it again.
        write_config_file(self.out / "config.yaml", {"learner": cfg})
        self.run_id = run_id
        limits = ValueLimits(
            reward=cfg.max_abs_reward if cfg.max_abs_reward is not None else cfg.reward.bound,
            observation=cfg.max_abs_observation,
        )
        self.ingest = IngestServer(
            sockets.data,
            buffer,
            ledger,
            self.fingerprint,
            self._counters,
            self.contract,
            limits=limits,
            wire=wire,
            derive=features,
        )
        self.metrics = MetricsLogger(
            self.out,
            tensorboard=tensorboard,
            wandb_project=wandb_project,
            wandb_config=json.loads(to_json(cfg)),
            view=open_view(view, self.out, "learner", view_recording_id(self.fingerprint)),
        )
        self.grad_steps = int(agent.grad_steps)
        resumed = resume and self.checkpoints.exist()
        self.health = LearnerHealth(cfg, self.out, self.metrics, agent, wire, self.sample_keys, resumed, pretrained)
        self._next_diag = self.grad_steps
        self._prewarmed = False
        self._rollback_armed = True
        self._published_at = 0.0
        self._frozen_digest: str | None = None  # of the frozen image trunks, once published
        self._last_ckpt = (ledger.transitions(), self.grad_steps)
        self._rates: dict[str, float] = {"ingest_per_s": 0.0, "updates_per_s": 0.0}

    @staticmethod
    def _features(cfg: OnlineConfig, agent: Agent, wire: ObsSpec) -> TrunkFeatures | None:
        """The trunk-feature cache, where the encoder's trunk is frozen and caching is on."""
        if not (cfg.cache_trunk_features and caches_features(cfg.agent.encoder)):
            return None
        return TrunkFeatures(cfg.agent.encoder, agent.critic.params["encoder"], wire)

    # ----------------------------------------------------------------------------- health

    def _alarms(self, changed: list[tuple[str, Alarm | None]]) -> None:
        for alarm in self.health.record(changed, self.ingest.env_steps, self.grad_steps):
            if self.cfg.health.rollback and self._rollback_armed:
                self.rollback(self.health.rollback_target(alarm), reason=alarm.name)

    def rollback(self, step: int | None, reason: str) -> int | None:
        """Reload snapshot ``step`` (None: the best-scoring) with its optimiser state and publish
        its policy; the buffer and the counters go on. Returns the snapshot's step, or None if
        there is no such snapshot (an event, nothing changed)."""
        target = self.health.rollback_target(None) if step is None else step
        try:
            agent = self.health.snapshots.load(target)
        except (KeyError, CheckpointError) as e:
            log.error("rollback (%s) to snapshot %s refused: %s", reason, target, e)
            write_event(self.out, {"event": "rollback_refused", "to": target, "reason": reason, "error": str(e)})
            self.metrics.event(f"rollback ({reason}) to snapshot {target} refused: {e}", "ERROR")
            return None
        # the learner's counters go on: owed updates and checkpoint ids never go back
        self.agent = agent.replace(grad_steps=self.agent.grad_steps, env_steps=self.agent.env_steps)
        self._rollback_armed = False  # again only after a full success window of the restored policy
        self.publish()
        self.health.rolled_back(
            {
                "to": target,
                "reason": reason,
                "env_steps": self.ingest.env_steps,
                "grad_steps": self.grad_steps,
                "weights_version": self.version,
                "snapshot": self.health.snapshots.index.get(target),
            }
        )
        log.warning("ROLLBACK (%s) to snapshot %d: published as weights v%d", reason, target, self.version)
        return target

    def _on_episode(self, stats: dict[str, Any]) -> None:
        self._alarms(self.health.monitor.on_episode(stats))
        if not self._rollback_armed and len(self.health.monitor.live) >= self.cfg.health.success_window:
            self._rollback_armed = True

    # --------------------------------------------------------------------------- counters

    def _counters(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "grad_steps": self.grad_steps,
            "warmup_steps": self.cfg.warmup_steps,
            "utd": self.cfg.agent.utd,
            "weights_version": self.version,
        }

    def owed_updates(self, env_steps: int) -> int:
        owed = owed_updates(env_steps, self.grad_steps, self.cfg.warmup_steps, self.cfg.agent.utd)
        if self.cfg.free_running and env_steps >= self.cfg.warmup_steps and env_steps > 0:
            return 1
        return owed

    # ------------------------------------------------------------------------ publishing

    def publish(self, republish: bool = False) -> None:
        if not republish:
            self.version += 1
        enc = self.cfg.agent.encoder
        frozen = enc.kind == "resnet10" and enc.freeze_trunk
        msg = weights_message(
            self.agent.actor.params,
            self.version,
            self.fingerprint,
            frozen_trunk=frozen,
            # the frozen trunk in this process's first message and every FULL_EVERY-th, for actors without it
            include_frozen=self._frozen_digest is None or (self.version - 1) % FULL_EVERY == 0,
            frozen_digest=self._frozen_digest,
            grad_steps=self.grad_steps,
            env_steps=self.ingest.env_steps,
        )
        self._frozen_digest = msg.get("frozen_digest")  # the trunk never changes: hashed once
        try:
            self.sockets.weights.send(encode(msg), copy=False)
        except Exception as e:  # never let a publish failure stop learning
            log.warning("publishing weights v%d failed: %s", self.version, e)
        self._published_at = time.monotonic()

    # ------------------------------------------------------------------------ checkpoints

    def checkpoint(self, final: bool = False) -> None:
        """Save one checkpoint. ``final``: the last of a clean stop, written whole with nothing
        after it; it is committed at once, so that actors finishing with it keep no journal."""
        if (self.ingest.env_steps, self.grad_steps) == self._last_ckpt and self.checkpoints.exist():
            if final:
                self.ingest.set_committed(self.checkpoints.last_ledger)
            return
        # A large buffer takes seconds to save: say so rather than let status.json look frozen.
        self._status("checkpointing", self._rates)
        step, committed, durable = self.checkpoints.save(
            self.agent,
            self.cfg,
            self.buffer,
            self.ingest.ledger,
            self.ingest.lock,
            self.grad_steps,
            self.run_id,
            self.task,
            self.version,
            full=final,
        )
        # Forgettable by the actors is what survives any one damaged file: the newest checkpoint
        # sharing no file with this one (--resume falls back to it; the actors still journal
        # everything after it and resend it). The first checkpoint makes nothing durable yet.
        self.ingest.set_committed(committed if final else durable)
        self._last_ckpt = (committed.transitions(), self.grad_steps)
        if self.grad_steps > 0:  # a snapshot to roll back to, scored by the episodes before it
            self.health.snapshot(self.agent, self.grad_steps, self.ingest.env_steps, self.version)
        log.info(
            "checkpoint %d: %d env steps, %d critic steps, weights v%d",
            step,
            committed.transitions(),
            self.grad_steps,
            self.version,
        )
        self.metrics.event(
            f"checkpoint {step}: {committed.transitions()} env steps, {self.grad_steps} critic steps, "
            f"weights v{self.version}"
        )

    # ----------------------------------------------------------------------------- loop

    def _status(self, phase: str, rates: dict[str, float], done: bool = False) -> None:
        write_json_atomic(
            self.out / "status.json",
            {
                "phase": phase,
                "env_steps": self.ingest.env_steps,
                "grad_steps": self.grad_steps,
                "weights_version": self.version,
                "buffer": len(self.buffer),
                "warmup_steps": self.cfg.warmup_steps,
                "max_env_steps": self.max_env_steps,
                "done": done,
                "ingest": dict(self.ingest.counters),  # rejected, lost_chunks, refused: what did not get in
                "replay_damaged_transitions": self.buffer.damaged_transitions,  # lost on resume
                **self.health.status(),
                "time": time.time(),
                **rates,
            },
        )

    def _drain_stats(self) -> None:
        while not self.ingest.stats.empty():
            _actor, _, stats = self.ingest.stats.get()
            self.metrics.log(int(stats.get("global_env_steps", self.ingest.env_steps)), stats, prefix="actor/")
            if "episode" in stats:
                self._on_episode(stats)

    def _compile(self, update: Any) -> None:
        """A learner resumed past its warmup compiles its update before it takes data: otherwise
        the first update's compile (tens of seconds for a 10-critic ensemble) runs while the
        actors' resent backlog arrives, and no checkpoint commits it meanwhile (a second kill
        then finds nothing new). The actors journal while they wait. The result is discarded."""
        t0 = time.monotonic()
        batch = self.buffer.sample(
            self.cfg.agent.batch_size,
            np.random.default_rng(0),
            leading=(self.cfg.agent.utd,),
            intervened_fraction=self.cfg.intervention_ratio,
            keys=self.sample_keys,
        )
        scratch = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, self.agent)  # may be donated
        jax.block_until_ready(update(scratch, batch))
        log.info("compiled the update in %.1f s before taking data", time.monotonic() - t0)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        utd = cfg.agent.utd
        update = make_update(cfg.agent)
        rng = np.random.default_rng(cfg.seed + self.grad_steps + self.ingest.env_steps)
        if self.ingest.env_steps >= cfg.warmup_steps and len(self.buffer) > 0:
            self._compile(update)
        self.ingest.start()
        log.info(
            "learner ready: fingerprint %s, warmup %d env steps, UTD %d, buffer %s",
            self.fingerprint,
            cfg.warmup_steps,
            utd,
            self.buffer.stats(),
        )
        if self.version:
            self.publish(republish=True)
        t_log, env_log, grad_log = time.monotonic(), self.ingest.env_steps, self.grad_steps
        t_status = 0.0
        rates = {"ingest_per_s": 0.0, "updates_per_s": 0.0}
        info: dict[str, Any] = {}
        try:
            while not self.stop_event.is_set():
                env_steps = self.ingest.env_steps
                owed = self.owed_updates(env_steps)
                if (
                    self.max_env_steps is not None
                    and env_steps >= self.max_env_steps
                    and (owed <= 0 or cfg.free_running)
                ):
                    break
                now = time.monotonic()
                if owed > 0:
                    batch = self.buffer.sample(
                        cfg.agent.batch_size,
                        rng,
                        leading=(utd,),
                        intervened_fraction=cfg.intervention_ratio,
                        keys=self.sample_keys,
                    )
                    sab = cfg.sabotage
                    sabotaged = sab.kind != "none" and sab.start <= self.grad_steps < sab.stop  # test-only
                    if sabotaged and sab.kind == "flip_rewards":
                        batch["rewards"] = cfg.reward.apply(1.0) + cfg.reward.apply(0.0) - batch["rewards"]
                    before = params_copy(self.agent) if sabotaged and sab.kind == "lr_spike" else None
                    if cfg.health.every and self.grad_steps >= self._next_diag:
                        # the first one, before any update: the hand-off's values
                        self._alarms(self.health.diagnose(self.agent, self.buffer, self.ingest.env_steps))
                        self._next_diag = self.grad_steps + cfg.health.every
                    self.agent, info = update(self.agent, batch)
                    if before is not None:
                        self.agent = spiked(before, self.agent, sab.lr_factor)
                    self.grad_steps += utd
                    calls = self.grad_steps // utd
                    if calls % cfg.publish_every == 0:
                        self.publish()
                else:
                    if not self._prewarmed and cfg.health.every and len(self.buffer) >= cfg.health.probe_size:
                        # while the warmup leaves the learner idle: compiled, and the hand-off's values
                        self._prewarmed = True
                        self._alarms(self.health.diagnose(self.agent, self.buffer, self.ingest.env_steps))
                    self.ingest.wait_for_data(0.05)
                if self.version and now - self._published_at > REPUBLISH_EVERY_S:
                    self.publish(republish=True)
                self._drain_stats()
                calls = self.grad_steps // utd
                if (owed > 0 and calls % cfg.log_every == 0) or now - t_log > 10.0:
                    dt = max(now - t_log, 1e-9)
                    rates = {
                        "ingest_per_s": (self.ingest.env_steps - env_log) / dt,
                        "updates_per_s": (self.grad_steps - grad_log) / dt,
                    }
                    self._rates = rates
                    scalars = to_scalars(info) if info else {}
                    self._alarms(self.health.monitor.on_update(scalars))
                    scalars.update(
                        rates,
                        grad_steps=self.grad_steps,
                        weights_version=self.version,
                        buffer=len(self.buffer),
                        **{f"ingest_{k}": v for k, v in self.ingest.counters.items()},
                    )
                    self.metrics.log(self.ingest.env_steps, scalars, prefix="learner/")
                    t_log, env_log, grad_log = now, self.ingest.env_steps, self.grad_steps
                if now - t_status > 0.5:
                    request = take_request(self.out)  # launch/rollback.sh
                    if request is not None:
                        self.rollback(request.get("to"), reason="requested")
                    self._status("warmup" if env_steps < cfg.warmup_steps else "online", rates)
                    t_status = now
                last_env, last_grad = self._last_ckpt
                if (
                    self.grad_steps - last_grad >= cfg.checkpoint_every
                    or (self.ingest.env_steps - last_env) * utd >= cfg.checkpoint_every
                ):
                    self.checkpoint()
        finally:
            try:
                self.checkpoint(final=True)
                if self.version:
                    self.publish(republish=True)
            finally:  # whatever failed above, the ingest thread stops before its socket closes
                self.ingest.stop()
                self._drain_stats()
                self._status("done", rates, done=True)
                self.checkpoints.close()
                self.health.close()
                self.metrics.close()
        summary = {
            "env_steps": self.ingest.env_steps,
            "grad_steps": self.grad_steps,
            "weights_version": self.version,
            "checkpoints": str(self.ckpt_dir),
            **self.ingest.counters,
        }
        log.info("learner stopped: %s", summary)
        return summary
