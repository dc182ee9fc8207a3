"""The WSRL learner: online fine-tuning from a pre-trained checkpoint, fed by remote actors.

Usage (GPU box): ``launch/run_learner.sh --pretrained checkpoints/calql/checkpoints --out runs/wsrl``
(``python -m learner.online --help`` lists every flag).

It loads the pre-trained agent and hands it off to SAC (``shared.learning.handoff.handoff``), serves
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
from dataclasses import replace

import zmq

from learner.online_learner import Learner
from shared import defaults
from shared.command_line import print_config
from shared.config import (
    OnlineConfig,
    add_override_argument,
    apply_overrides,
    read_config_file,
)
from shared.live_view import add_view_argument
from shared.presets import PRESETS
from shared.storage.checkpoint import CheckpointError
from shared.wire.transport import LearnerSockets, TransportError, learner_keys
from shared.xla_cpu import tune_process


def build_config(
    preset: str, overrides: list[str], warmup_steps: int | None, config_file: str | None = None
) -> OnlineConfig:
    """The preset, then an experiment file's ``learner:`` section, then ``--warmup-steps``, then
    the dotted overrides."""
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset][1]()
    if config_file is not None:
        cfg = read_config_file(config_file, OnlineConfig, "learner", base=cfg)
    if warmup_steps is not None:
        cfg = replace(cfg, warmup_steps=warmup_steps)
    return apply_overrides(cfg, overrides)


def main(argv: list[str] | None = None) -> None:
    tune_process()  # before JAX starts its backend
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", help="pre-trained checkpoint directory (learner.pretrain's OUT/checkpoints)")
    p.add_argument("--out", help="run directory: logs, checkpoints/, replay/, status.json (required)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument(
        "--restart",
        action="store_true",
        help="with --resume: start again from the pre-trained agent although every checkpoint was quarantined",
    )
    p.add_argument(
        "--release-actor",
        action="append",
        default=[],
        metavar="ID",
        help="with --resume: unbind this actor id from the CURVE key it was bound to (repeatable)",
    )
    p.add_argument("--preset", default="peg_sim", help=f"online config preset: {sorted(PRESETS)}")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="an experiment file (YAML or JSON): its learner: section over the preset, e.g. a run's "
        "OUT/config.yaml to run it again",
    )
    add_override_argument(p, "config override, e.g. --set agent.utd=4 (repeatable)", "PATH=VALUE")
    p.add_argument("--warmup-steps", type=int, help="K: env steps of the frozen policy before updates")
    p.add_argument("--task", default=defaults.TASK, help="task name (part of the config fingerprint)")
    p.add_argument("--bind", default="127.0.0.1", help="address to bind; anything but loopback needs --keys")
    p.add_argument("--data-port", type=int, default=defaults.DATA_PORT)
    p.add_argument("--weights-port", type=int, default=defaults.WEIGHTS_PORT)
    p.add_argument("--keys", help="CURVE key directory (launch/make_keys.sh); required off loopback")
    p.add_argument("--max-env-steps", type=int, help="stop after this many env steps (and their updates)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--wandb", metavar="PROJECT", help="also log to this wandb project (wandb must be installed)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_view_argument(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        cfg = build_config(args.preset, args.overrides, args.warmup_steps, args.config)
    except ValueError as e:
        p.error(str(e))
    if args.print_config:  # as an experiment file's section: redirected to a file, --config reads it
        print_config("learner", cfg)
        return
    if not args.out:
        p.error("--out is required")
    if not args.bind.strip():
        p.error("--bind needs an address (127.0.0.1 for this machine, 0.0.0.0 for every interface, with --keys)")
    try:
        keys = learner_keys(args.keys) if args.keys else None
        sockets = LearnerSockets(args.bind, args.data_port, args.weights_port, keys)
    except (TransportError, zmq.ZMQError) as e:  # a refused bind or bad keys: one line, no traceback
        print(f"learner: cannot serve on {args.bind}:{args.data_port}/{args.weights_port}: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        try:
            learner = Learner(
                cfg,
                args.out,
                sockets,
                pretrained=args.pretrained,
                resume=args.resume,
                task=args.task,
                max_env_steps=args.max_env_steps,
                tensorboard=not args.no_tensorboard,
                wandb_project=args.wandb,
                release_actors=tuple(args.release_actor),
                restart=args.restart,
                view=args.view,
            )
        except (CheckpointError, FileExistsError, ValueError) as e:  # a refusal to start, not a crash
            print(f"learner: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: learner.stop_event.set())
        print(
            f"learner: data tcp://{args.bind}:{args.data_port}, weights tcp://{args.bind}:{args.weights_port}, "
            f"CURVE {'on' if keys else 'off'}; writing to {learner.out}",
            file=sys.stderr,
            flush=True,
        )
        summary = learner.run()
    finally:
        sockets.close()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
