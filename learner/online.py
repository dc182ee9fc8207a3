"""The WSRL learner: online fine-tuning from a pre-trained checkpoint, fed by remote actors.

Usage (GPU box): ``launch/run_learner.sh --pretrained checkpoints/calql/checkpoints --out runs/wsrl``
(``python -m learner.online --help`` lists every flag).

It loads the pre-trained agent and hands it off to SAC (``shared.checkpoint.handoff``), serves
actors through ``learner.ingest`` and does nothing else until ``warmup_steps`` transitions are
in. From then on it owes one update (``utd`` critic steps + one actor step) per ingested env
step and pays the debt as fast as it can; the buffer holds online data only. Every
``publish_every`` updates it publishes the policy parameters; every ``checkpoint_every`` critic
steps it saves agent, replay buffer, counters and the ingest ledger together, so ``--resume``
continues exactly where the last checkpoint was and actors resend what came after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from learner.ingest import IngestServer
from learner.ledger import Ledger
from shared.agents import Agent, make_update
from shared.checkpoint import CheckpointError, Checkpointer, handoff, list_steps, load_checkpoint
from shared.config import (
    PRESETS,
    OnlineConfig,
    RewardConfig,
    apply_overrides,
    from_dict,
    to_json,
    without_state_stats,
)
from shared.dataset import DatasetError, example_obs, spec_from_json
from shared.metrics import MetricsLogger, to_scalars, write_json_atomic
from shared.policy_weights import weights_message
from shared.protocol import encode
from shared.replay_buffer import ReplayBuffer
from shared.transport import LearnerSockets, fingerprint, learner_keys, policy_contract

log = logging.getLogger("wsrl.learner")

REPUBLISH_EVERY_S = 1.0  # late subscribers and the simulation's pacing get the current version


def _restore(ckpt_dir: Path, capacity: int) -> tuple[Agent, dict, dict, ReplayBuffer, Ledger]:
    """The newest learner checkpoint whose agent and buffer snapshot both read back."""
    errors = []
    for step in reversed(list_steps(ckpt_dir)):
        try:
            agent, cfg, meta = load_checkpoint(ckpt_dir, step)
            buffer_file = ckpt_dir.parent / "replay" / meta["extra"]["buffer"]
            buffer = ReplayBuffer.load(buffer_file, capacity=capacity)
            ledger = Ledger(buffer.info["ledger"])
            return agent, cfg, meta, buffer, ledger
        except (CheckpointError, DatasetError, KeyError, OSError, ValueError) as e:
            errors.append(f"step {step}: {e}")
            log.warning("learner checkpoint %d is unusable (%s); trying an older one", step, e)
    raise CheckpointError(f"{ckpt_dir}: no usable learner checkpoint:\n  " + "\n  ".join(errors))


class Learner:
    def __init__(self, cfg: OnlineConfig, out_dir: str | Path, sockets: LearnerSockets,
                 pretrained: str | Path | None = None, resume: bool = False, task: str | None = None,
                 max_env_steps: int | None = None, tensorboard: bool = True, wandb_project: str | None = None) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.out / "checkpoints"
        self.replay_dir = self.out / "replay"
        self.sockets = sockets
        self.max_env_steps = max_env_steps
        self.stop_event = threading.Event()
        self.version = 0
        if list_steps(self.ckpt_dir) and not resume:
            raise FileExistsError(f"{self.ckpt_dir} already holds checkpoints; pass --resume or another --out")
        if resume and list_steps(self.ckpt_dir):
            agent, saved_cfg, meta, buffer, ledger = _restore(self.ckpt_dir, cfg.buffer_capacity)
            saved = from_dict(OnlineConfig, saved_cfg["config"])
            if replace(saved, agent=without_state_stats(saved.agent)) != replace(cfg, agent=without_state_stats(cfg.agent)):
                log.warning("resuming with the checkpoint's config, not the one given")
            cfg = saved
            task = meta["extra"].get("task", task)
            self.version = int(meta["extra"].get("weights_version", 0))
            run_id = meta["extra"]["run"]
            obs_spec = spec_from_json(meta["obs_spec"])
            log.info("resumed: %d env steps, %d critic steps, weights v%d, %d transitions in the buffer",
                     ledger.transitions(), int(agent.grad_steps), self.version, len(buffer))
        else:
            if pretrained is None:
                raise ValueError("a pre-trained checkpoint is needed (WSRL starts from one)")
            pre, pre_cfg, meta = load_checkpoint(pretrained)
            obs_spec = spec_from_json(meta["obs_spec"])
            pre_reward = pre_cfg.get("config", {}).get("reward")
            if pre_reward is not None and from_dict(RewardConfig, pre_reward) != cfg.reward:
                log.warning("the online reward settings %s differ from pre-training's %s", cfg.reward, pre_reward)
            agent = handoff(pre, cfg.agent, example_obs(obs_spec), cfg.seed)
            cfg = replace(cfg, agent=agent.config)
            buffer = ReplayBuffer(obs_spec, agent.action_dim, cfg.buffer_capacity, cfg.agent.gamma,
                                  cfg.reward.negative)
            ledger = Ledger()
            run_id = uuid.uuid4().hex[:16]
            log.info("handed off pre-trained agent from %s (%d gradient steps)", pretrained, int(pre.grad_steps))
        self.cfg, self.agent, self.buffer, self.task = cfg, agent, buffer, task
        self.obs_example = example_obs(buffer.obs_spec)
        self.fingerprint = fingerprint(policy_contract(agent.config, buffer.obs_spec, agent.action_dim,
                                                       cfg.reward, task))
        (self.out / "config.json").write_text(to_json(cfg))
        self.run_id = run_id
        self.ingest = IngestServer(sockets.data, buffer, ledger, self.fingerprint, self._counters)
        self.checkpointer = Checkpointer(self.ckpt_dir, keep=cfg.keep_checkpoints, async_save=False)
        self.metrics = MetricsLogger(self.out, tensorboard=tensorboard, wandb_project=wandb_project,
                                     wandb_config=json.loads(to_json(cfg)))
        self.grad_steps = int(agent.grad_steps)
        self._published_at = 0.0
        self._last_ckpt = (ledger.transitions(), self.grad_steps)

    # --------------------------------------------------------------------------- counters

    def _counters(self) -> dict[str, Any]:
        return {"run": self.run_id, "grad_steps": self.grad_steps, "warmup_steps": self.cfg.warmup_steps,
                "utd": self.cfg.agent.utd, "weights_version": self.version}

    def owed_updates(self, env_steps: int) -> int:
        if env_steps < self.cfg.warmup_steps or env_steps == 0:
            return 0
        if self.cfg.free_running:
            return 1
        return (env_steps - self.cfg.warmup_steps) - self.grad_steps // self.cfg.agent.utd

    # ------------------------------------------------------------------------ publishing

    def publish(self, republish: bool = False) -> None:
        if not republish:
            self.version += 1
        msg = weights_message(self.agent.actor.params, self.version, self.fingerprint,
                              grad_steps=self.grad_steps, env_steps=self.ingest.env_steps)
        try:
            self.sockets.weights.send(encode(msg), copy=False)
        except Exception as e:  # never let a publish failure stop learning
            log.warning("publishing weights v%d failed: %s", self.version, e)
        self._published_at = time.monotonic()

    # ------------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> None:
        if (self.ingest.env_steps, self.grad_steps) == self._last_ckpt and list_steps(self.ckpt_dir):
            return
        with self.ingest.lock:  # no chunk half-inserted, buffer and ledger agree
            ledger = self.ingest.ledger.copy()
            env_steps = ledger.transitions()
            step = env_steps + self.grad_steps  # grows with either counter: a unique, ordered id
            name = f"buffer_{step:012d}.npz"
            self.buffer.save(self.replay_dir / name, info={"ledger": ledger.to_json(), "env_steps": env_steps})
        agent = self.agent.replace(env_steps=np.int32(env_steps))
        self.checkpointer.save(agent, self.obs_example, self.cfg, step=step,
                               extra={"buffer": name, "weights_version": self.version, "task": self.task,
                                      "run": self.run_id})
        self.checkpointer.manager.wait_until_finished()
        keep = {f"buffer_{s:012d}.npz" for s in list_steps(self.ckpt_dir)}
        for f in self.replay_dir.glob("buffer_*.npz"):
            if f.name not in keep:
                f.unlink()
        self.ingest.set_committed(ledger)
        self._last_ckpt = (env_steps, self.grad_steps)
        log.info("checkpoint %d: %d env steps, %d critic steps, weights v%d", step, env_steps, self.grad_steps,
                 self.version)

    # ----------------------------------------------------------------------------- loop

    def _status(self, phase: str, rates: dict[str, float], done: bool = False) -> None:
        write_json_atomic(self.out / "status.json", {
            "phase": phase, "env_steps": self.ingest.env_steps, "grad_steps": self.grad_steps,
            "weights_version": self.version, "buffer": len(self.buffer), "warmup_steps": self.cfg.warmup_steps,
            "max_env_steps": self.max_env_steps, "done": done, "time": time.time(), **rates,
        })

    def _drain_stats(self) -> None:
        while not self.ingest.stats.empty():
            actor, _, stats = self.ingest.stats.get()
            self.metrics.log(int(stats.get("global_env_steps", self.ingest.env_steps)), stats, prefix="actor/")

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        utd = cfg.agent.utd
        update = make_update(cfg.agent)
        rng = np.random.default_rng(cfg.seed + self.grad_steps + self.ingest.env_steps)
        self.ingest.start()
        log.info("learner ready: fingerprint %s, warmup %d env steps, UTD %d, buffer %s",
                 self.fingerprint, cfg.warmup_steps, utd, self.buffer.stats())
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
                if self.max_env_steps is not None and env_steps >= self.max_env_steps and (
                        owed <= 0 or cfg.free_running):
                    break
                now = time.monotonic()
                if owed > 0:
                    batch = self.buffer.sample(cfg.agent.batch_size, rng, leading=(utd,))
                    self.agent, info = update(self.agent, batch)
                    self.grad_steps += utd
                    calls = self.grad_steps // utd
                    if calls % cfg.publish_every == 0:
                        self.publish()
                else:
                    self.ingest.wait_for_data(0.05)
                if self.version and now - self._published_at > REPUBLISH_EVERY_S:
                    self.publish(republish=True)
                self._drain_stats()
                calls = self.grad_steps // utd
                if (owed > 0 and calls % cfg.log_every == 0) or now - t_log > 10.0:
                    dt = max(now - t_log, 1e-9)
                    rates = {"ingest_per_s": (self.ingest.env_steps - env_log) / dt,
                             "updates_per_s": (self.grad_steps - grad_log) / dt}
                    scalars = to_scalars(info) if info else {}
                    scalars.update(rates, grad_steps=self.grad_steps, weights_version=self.version,
                                   buffer=len(self.buffer), **{f"ingest_{k}": v for k, v in self.ingest.counters.items()})
                    self.metrics.log(self.ingest.env_steps, scalars, prefix="learner/")
                    t_log, env_log, grad_log = now, self.ingest.env_steps, self.grad_steps
                if now - t_status > 0.5:
                    self._status("warmup" if env_steps < cfg.warmup_steps else "online", rates)
                    t_status = now
                last_env, last_grad = self._last_ckpt
                if (self.grad_steps - last_grad >= cfg.checkpoint_every
                        or (self.ingest.env_steps - last_env) * utd >= cfg.checkpoint_every):
                    self.checkpoint()
        finally:
            self.checkpoint()
            if self.version:
                self.publish(republish=True)
            self.ingest.stop()
            self._drain_stats()
            self._status("done", rates, done=True)
            self.checkpointer.close()
            self.metrics.close()
        summary = {"env_steps": self.ingest.env_steps, "grad_steps": self.grad_steps,
                   "weights_version": self.version, "checkpoints": str(self.ckpt_dir), **self.ingest.counters}
        log.info("learner stopped: %s", summary)
        return summary


def build_config(preset: str, overrides: list[str], warmup_steps: int | None) -> OnlineConfig:
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset][1]()
    if warmup_steps is not None:
        cfg = replace(cfg, warmup_steps=warmup_steps)
    return apply_overrides(cfg, overrides)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", help="pre-trained checkpoint directory (learner.pretrain's OUT/checkpoints)")
    p.add_argument("--out", required=True, help="run directory: logs, checkpoints/, replay/, status.json")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--preset", default="peg_sim", help=f"online config preset: {sorted(PRESETS)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="config override, e.g. --set agent.utd=4 (repeatable)")
    p.add_argument("--warmup-steps", type=int, help="K: env steps of the frozen policy before updates")
    p.add_argument("--task", default="peg_insertion", help="task name (part of the config fingerprint)")
    p.add_argument("--bind", default="127.0.0.1", help="address to bind; anything but loopback needs --keys")
    p.add_argument("--data-port", type=int, default=5555)
    p.add_argument("--weights-port", type=int, default=5556)
    p.add_argument("--keys", help="CURVE key directory (launch/make_keys.sh); required off loopback")
    p.add_argument("--max-env-steps", type=int, help="stop after this many env steps (and their updates)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--wandb", metavar="PROJECT", help="also log to this wandb project (wandb must be installed)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    cfg = build_config(args.preset, args.overrides, args.warmup_steps)
    if args.print_config:
        print(to_json(cfg))
        return
    keys = learner_keys(args.keys) if args.keys else None
    sockets = LearnerSockets(args.bind, args.data_port, args.weights_port, keys)
    try:
        learner = Learner(cfg, args.out, sockets, pretrained=args.pretrained, resume=args.resume, task=args.task,
                          max_env_steps=args.max_env_steps, tensorboard=not args.no_tensorboard,
                          wandb_project=args.wandb)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: learner.stop_event.set())
        print(f"learner: data tcp://{args.bind}:{args.data_port}, weights tcp://{args.bind}:{args.weights_port}, "
              f"CURVE {'on' if keys else 'off'}; writing to {learner.out}", file=sys.stderr, flush=True)
        summary = learner.run()
    finally:
        sockets.close()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
