"""The WSRL actor: runs the policy on the robot (or its simulation) and feeds the learner.

Usage (robot PC): ``launch/run_actor.sh --pretrained checkpoints/calql/checkpoints --learner-host GPU_BOX``
(``python -m actor.run --help`` lists every flag).

The frozen pre-trained policy (from the same checkpoint the learner started from) acts for the
first K env steps of the run, counted over all actors by the learner; then the newest weights
the learner publishes. Transitions go to the learner through a journaled spool, so neither a
learner outage nor a restart of this process loses them.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax

from actor.keyboard import KeyboardError
from actor.loop import ControlLoop, LoopConfig
from actor.sender import FatalLearnerError, SenderConfig, TransitionSender
from actor.teleop import InterventionChoice, TeleopError, with_interventions
from actor.weights import WeightsReceiver
from robot_env.contract import RobotEnvError
from robot_env.make import EnvChoice, make_env
from shared import defaults
from shared.command_line import add_options, print_config
from shared.config import add_override_argument, apply_overrides, read_config_file, write_config_file
from shared.data.dataset import example_obs
from shared.learning.agents import act_with_params
from shared.live_view import add_view_argument, open_view, view_recording_id
from shared.metrics import MetricsLogger
from shared.storage.checkpoint import CheckpointError, load_checkpoint
from shared.wire.transport import actor_keys, fingerprint, policy_contract
from shared.xla_cpu import stacks_on_signal

log = logging.getLogger("wsrl.actor")


@dataclass(frozen=True)
class ActorConfig:
    """The actor's settings: an experiment file's ``actor:`` section (``--config``), saved as the
    run's ``OUT/config.yaml``. Defaults are the dataclasses' own."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    sender: SenderConfig = field(default_factory=SenderConfig)


# The loop's flags, each the shorthand of one ``loop.`` field: given, it wins over the file.
LOOP_FLAGS = ("hz", "help_after_s", "max_steps", "warmup_steps", "max_learner_lag", "seed", "view_image_every")


def actor_config(args: argparse.Namespace) -> ActorConfig:
    """The defaults, then ``--config``'s ``actor:`` section, then the loop's flags given, then ``--set``."""
    cfg = ActorConfig()
    if args.config is not None:
        cfg = read_config_file(args.config, ActorConfig, "actor", base=cfg)
    given = {k: getattr(args, k) for k in LOOP_FLAGS if getattr(args, k) is not None}
    cfg = replace(cfg, loop=replace(cfg.loop, **given))
    return apply_overrides(cfg, args.overrides)


def main(argv: list[str] | None = None) -> None:
    stacks_on_signal()  # kill -USR2: every thread's stack into the actor's log
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", help="the pre-trained checkpoint directory the learner started from (required)")
    p.add_argument("--out", help="actor directory: logs and the transition spool (required)")
    p.add_argument("--learner-host", default="127.0.0.1")
    p.add_argument("--data-port", type=int, default=defaults.DATA_PORT)
    p.add_argument("--weights-port", type=int, default=defaults.WEIGHTS_PORT)
    p.add_argument("--keys", help="CURVE key directory holding this actor's key pair and learner.key")
    p.add_argument("--key-name", default="actor", help="which key pair in --keys (default: actor)")
    p.add_argument("--actor-id", default=socket.gethostname()[:32], help="stable name of this actor")
    add_options(p, EnvChoice, fill_defaults=True)
    p.add_argument(
        "--config",
        metavar="FILE",
        help="an experiment file (YAML or JSON): its actor: section (loop, sender), e.g. a run's OUT/config.yaml",
    )
    add_override_argument(p, "actor setting, e.g. --set sender.chunk_transitions=128 (repeatable)", "PATH=VALUE")
    p.add_argument("--print-config", action="store_true", help="print the resolved actor config and exit")
    p.add_argument(
        "--hz", type=float, help=f"control rate; 0 runs as fast as possible (simulation); default {LoopConfig.hz:g}"
    )
    p.add_argument(
        "--help-after-s",
        type=float,
        help=f"without a working robot this long, ask a person for help (log and OUT/status.json); keeps waiting "
        f"(default {LoopConfig.help_after_s:g})",
    )
    p.add_argument("--max-steps", type=int, help="stop after this many env steps")
    p.add_argument(
        "--warmup-steps", type=int, help=f"K until the learner tells its own (default {defaults.WARMUP_STEPS})"
    )
    p.add_argument(
        "--max-learner-lag",
        type=float,
        help="simulation only: pause while the learner is this many env steps behind its UTD schedule",
    )
    p.add_argument(
        "--reward-classifier",
        metavar="DIR",
        help="reward from this classifier (launch/train_reward_classifier.sh's --out) instead of the env's "
        "own success check; its success ends the episode",
    )
    p.add_argument(
        "--keyboard",
        action="store_true",
        help="read keys (pynput, needs the desktop session): Esc ends the episode, Space pauses/resumes",
    )
    add_options(p, InterventionChoice, fill_defaults=True)
    p.add_argument("--seed", type=int, help=f"default {LoopConfig.seed}")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="s to wait for acks when stopping")
    add_view_argument(p)
    p.add_argument(
        "--view-image-every",
        type=int,
        metavar="N",
        help=f"with --view: show the camera frames of every N-th step (default {LoopConfig.view_image_every})",
    )
    args = p.parse_args(argv)
    try:
        cfg = actor_config(args)
    except ValueError as e:
        p.error(str(e))
    if args.print_config:
        print_config("actor", cfg)
        return
    if not args.pretrained or not args.out:
        p.error("--pretrained and --out are required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)

    try:
        ckpt = load_checkpoint(args.pretrained)
    except (CheckpointError, OSError) as e:  # a missing or damaged checkpoint: one line, as the learner says it
        print(f"actor: cannot use the pre-trained checkpoint {args.pretrained}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    pre, obs_spec = ckpt.agent, ckpt.obs_spec
    contract = policy_contract(pre.config, obs_spec, pre.action_dim, ckpt.reward, args.task)
    fp = fingerprint(contract)
    keys = actor_keys(args.keys, args.key_name) if args.keys else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_config_file(out / "config.yaml", {"actor": cfg})  # ``--config OUT/config.yaml`` runs it again
    classifier = None
    if args.reward_classifier:
        from shared.learning.reward_classifier import load_classifier

        classifier = load_classifier(args.reward_classifier)
    env = None
    while env is None:  # the cameras (or the robot server behind them) may not be up yet: wait
        try:
            env = make_env(
                args.env,
                args.task,
                ckpt.reward,
                obs_spec,
                cfg.loop.seed,
                args.robot_url,
                args.cameras,
                classifier,
                gripper=args.gripper,
            )
        except ValueError as e:  # a configuration that cannot work: say so and stop
            p.error(str(e))
        except RobotEnvError as e:
            log.error("actor: cannot open %s yet (%s); trying again in 1 s (Ctrl-C stops)", args.env, e)
            try:
                time.sleep(1.0)
            except KeyboardInterrupt:
                sys.exit(130)
    try:
        env = with_interventions(env, args)
    except (TeleopError, KeyboardError) as e:
        p.error(str(e))
    sender = TransitionSender(
        args.learner_host, args.data_port, args.actor_id, fp, out / "spool", keys, cfg.sender, contract
    ).start()
    module = pre.nets["actor"]
    example = {k: v[None] for k, v in example_obs(obs_spec).items()}

    def prepare(params):  # compile for the new weights here, not in the 10 Hz loop
        jax.block_until_ready(act_with_params(params, module, example, jax.random.PRNGKey(0), False))

    # Committed device arrays, like the receiver's: the frozen policy's compilation then serves
    # the learner's weights too (uncommitted arrays would compile again on the first weights).
    frozen = jax.device_put(pre.actor.params)
    prepare(frozen)
    receiver = WeightsReceiver(args.learner_host, args.weights_port, frozen, fp, keys, prepare).start()
    view = open_view(args.view, out, "actor", view_recording_id(fp))
    metrics = MetricsLogger(out, tensorboard=False)
    # A restarted actor must not replay its predecessor's random stream: mix in the session.
    seed = cfg.loop.seed + int(sender.session[:7], 16)
    keyboard = None
    if args.keyboard:
        from actor.keyboard import Keyboard

        keyboard = Keyboard()  # a KeyboardError here says why (no display, no pynput)
    loop = ControlLoop(
        env,
        module,
        frozen,
        sender,
        receiver,
        replace(cfg.loop, seed=seed),
        on_episode=lambda step, stats: metrics.log(step, stats),
        events=keyboard.events if keyboard else None,
        status_file=out / "status.json",
        view=view,
    )
    give_up = threading.Event()

    def on_signal(*_: Any) -> None:
        # the first stops the loop (and waits for what is not yet safe); a second gives up waiting
        if loop.stop_event.is_set():
            give_up.set()
        loop.stop_event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    print(
        f"actor '{args.actor_id}': {args.env} ({args.task}) at {cfg.loop.hz or 'max'} Hz -> learner "
        f"{args.learner_host}:{args.data_port}/{args.weights_port}, CURVE {'on' if keys else 'off'}, reward "
        f"{'classifier ' + args.reward_classifier if classifier else 'from the env'}; "
        f"logs and spool in {out}",
        file=sys.stderr,
        flush=True,
    )
    code = 0
    try:
        summary = loop.run()
    except FatalLearnerError as e:
        log.error("%s", e)
        summary, code = {"error": str(e)}, 3
    finally:
        delivered = sender.close(args.drain_timeout, give_up=give_up)
        receiver.close()
        metrics.close()
        if view is not None:
            view.close()
        if keyboard is not None:
            keyboard.close()
        env.close()
    summary.update(delivered=delivered, **sender.status())
    print(json.dumps(summary), flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
