"""The whole WSRL pipeline in simulation on one machine (``launch/run_sim.sh --out DIR``, ``wsrl-sim``).

1. A pre-trained Cal-QL checkpoint: ``--pretrained DIR``, else the cached one in
   ``checkpoints/peg_sim_calql_obs2`` (made here on first use: scripted-controller dataset + Cal-QL).
2. "Before": the pre-trained policy on the task's 20 fixed evaluation poses.
3. The learner and the actor as separate processes over localhost ZeroMQ: K warmup steps of the
   frozen policy, then online SAC at UTD 4 on online data only.
4. "After": the fine-tuned policy on the same 20 poses; each learner checkpoint of the run is
   evaluated too, for the learning curve.
Writes ``DIR/summary.json``, ``DIR/learning_curve.png`` and the logs of both processes.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from learner.processes import Processes, StallWatch
from learner.sim_assets import (
    DEFAULT_CACHE,
    DEFAULT_PRETRAIN_STEPS,
    STATE_JOB_CLASSIFIER_SIZE,
    agent_overrides,
    classifier_cache,
    evaluate_checkpoint,
    make_classifier,
    make_pretrained,
    pretrain_cache,
)
from learner.sim_report import health_of, interventions_of, plot
from shared import defaults
from shared.command_line import option, parse_command
from shared.config import apply_overrides, write_config_file
from shared.live_view import ViewChoice
from shared.metrics import read_jsonl
from shared.presets import peg_sim_online
from shared.wire.transport import free_port
from shared.xla_cpu import tune_process

log = logging.getLogger("wsrl.sim_pipeline")


def _read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _training_success(actor_dir: Path, last: int = 20) -> float | None:
    path = actor_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [r for r in read_jsonl(path) if "success" in r]
    return float(sum(r["success"] for r in rows[-last:]) / len(rows[-last:])) if rows else None


def run_online(
    out: Path,
    pretrained: Path,
    warmup: int,
    online_steps: int,
    overrides: list[str],
    seed: int,
    progress: bool,
    reward_classifier: Path | None = None,
    actor_extra: list[str] | None = None,
    learner_extra: list[str] | None = None,
    learner_sets: list[str] | None = None,
    stall_s: float = 0.0,
) -> dict[str, float]:
    """Runs the learner and actor to the end, both from one experiment file (``OUT/experiment.yaml``:
    the learner's online config and the actor's loop); returns the seconds to the end of warmup
    (start-up included) and of the online phase. ``stall_s`` > 0: when the learner's counters
    (phase, env steps, critic steps, weights version) stay unchanged that long, both processes
    write their stacks into their logs and the job stops with an error."""
    procs = Processes()
    data_port, weights_port = free_port(), free_port()
    total = warmup + online_steps
    ckpt_every = max(total * 4 // 8, 4)  # about 8 learner checkpoints over the run, in critic steps
    learner_cfg = apply_overrides(
        peg_sim_online(),
        [
            f"warmup_steps={warmup}",
            f"checkpoint_every={ckpt_every}",
            "keep_checkpoints=12",
            f"seed={seed}",
            *overrides,
            *(learner_sets or []),
        ],
    )
    # The actor's section as data (actor.run.ActorConfig reads it; the learner never imports the actor).
    actor_section = {
        "loop": {"hz": 0.0, "max_steps": total, "warmup_steps": warmup, "max_learner_lag": 16.0, "seed": seed}
    }
    experiment = out / "experiment.yaml"  # the job's own sim: section is in it already (main)
    earlier = yaml.safe_load(experiment.read_text()) if experiment.exists() else {}
    write_config_file(experiment, {**earlier, "learner": learner_cfg, "actor": actor_section})
    learner_args = [
        "learner.online",
        "--pretrained",
        str(pretrained),
        "--out",
        str(out / "learner"),
        "--config",
        str(experiment),
        "--max-env-steps",
        str(total),
        "--data-port",
        str(data_port),
        "--weights-port",
        str(weights_port),
    ]
    learner_args += learner_extra or []
    actor_args = [
        "actor.run",
        "--pretrained",
        str(pretrained),
        "--out",
        str(out / "actor"),
        "--actor-id",
        "sim",
        "--config",
        str(experiment),
        "--data-port",
        str(data_port),
        "--weights-port",
        str(weights_port),
    ]
    if reward_classifier is not None:
        actor_args += ["--reward-classifier", str(reward_classifier)]
    actor_args += actor_extra or []
    status_path = out / "learner" / "status.json"
    bar = tqdm(total=total, desc="[3/4] warmup + online", unit="step", disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    warmup_end: float | None = None
    watch = StallWatch(stall_s)
    try:
        procs.start("learner", learner_args, out / "learner.log")
        procs.start("actor", actor_args, out / "actor.log")
        while True:
            time.sleep(1.0)
            procs.check("actor")
            rc = procs.check("learner")
            st = _read_status(status_path)
            counters = tuple(st.get(k) for k in ("phase", "env_steps", "grad_steps", "weights_version"))
            idle = watch.stalled_for(counters) if rc is None else None
            if idle is not None:
                procs.dump_stacks()
                raise RuntimeError(
                    f"the online stage made no progress for {idle / 60:.1f} min (learner status: phase "
                    f"{counters[0]}, env steps {counters[1]}, critic steps {counters[2]}); both processes' "
                    f"Python stacks are at the end of {out / 'learner.log'} and {out / 'actor.log'}"
                )
            if warmup_end is None and st.get("phase") not in (None, "warmup", "checkpointing"):
                warmup_end = time.time()
            if st:
                bar.n = min(int(st.get("env_steps", 0)), total)
                succ = _training_success(out / "actor")
                bar.set_postfix(
                    phase=st.get("phase"),
                    updates=st.get("grad_steps"),
                    weights=st.get("weights_version"),
                    train_success="-" if succ is None else f"{succ:.2f}",
                )
                bar.refresh()
            if rc == 0:
                break
    finally:
        bar.close()
        procs.stop_all()
    end = time.time()
    warmup_end = warmup_end or end
    return {"startup_and_warmup_s": round(warmup_end - t0, 1), "online_s": round(end - warmup_end, 1)}


def _quiet_logs() -> None:
    """Progress bars and the stage lines are this command's output; library logs only when they warn."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    for name in ("absl", "wsrl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _stop_on(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass(frozen=True)
class SimJobConfig(ViewChoice):
    """What ``wsrl-sim`` (``launch/run_sim.sh``) runs: its ``sim:`` section. ``view`` is the learner's
    and the actor's, one recording each in their directories."""

    out: str | None = option(None, "output directory (must be new or empty; required)")
    pretrained: str | None = option(None, "a pre-trained checkpoint directory (default: make or reuse the cached one)")
    cache: str = option(str(DEFAULT_CACHE), "where the made pre-trained checkpoint is kept")
    pretrain_steps: int = option(DEFAULT_PRETRAIN_STEPS, "Cal-QL gradient steps when making one")
    warmup_steps: int = option(defaults.WARMUP_STEPS, "K")
    online_steps: int = option(5000, "env steps after warmup")
    critics: int = option(2, "critic ensemble size (pre-training and online)")
    obs: str = option("state", "what the policy sees", choices=("state", "images"))
    image_size: int = option(64, "with --obs images: camera frames of N x N px")
    encoder: str = option(
        "resnet10",
        "with --obs images: the image trunk (resnet10: the robot's layout, frozen, its features cached; "
        "small_conv: trained end to end, every row through it on every update)",
        choices=("resnet10", "small_conv"),
    )
    overrides: tuple[str, ...] = option(
        (),
        "agent setting for pre-training and fine-tuning alike (repeatable)",
        flag="--set",
        metavar="agent.PATH=VALUE",
        append=True,
    )
    episodes: int = option(20, "evaluation episodes (the fixed poses, in order)")
    reward: str | None = option(
        None,
        "what the actor's reward and episode ends come from: a reward classifier on the wrist cameras, as "
        "on the robot (made here and cached unless --reward-classifier names one), or the simulation's own "
        "success check. Default: classifier with --obs images, ground_truth with --obs state. Evaluation is "
        "always judged by ground truth",
        choices=("classifier", "ground_truth"),
    )
    reward_classifier: str | None = option(
        None, "the reward classifier to use (launch/train_reward_classifier.sh) instead of making one", metavar="DIR"
    )
    scripted_human: float | None = option(
        None,
        "a simulated person (the scripted inserter) takes over training episodes whenever the peg is "
        "farther than this from the hole, as a person with a SpaceMouse would (evaluation stays the policy's)",
        metavar="METRES",
    )
    intervention_ratio: float = option(
        0.0,
        "share of each minibatch drawn from intervened transitions (HIL-SERL's demo buffer; 0: WSRL's "
        "default, they are ordinary online data)",
    )
    learner_sets: tuple[str, ...] = option(
        (),
        "a learner-only setting (OnlineConfig), e.g. health.rollback=true (repeatable)",
        flag="--learner-set",
        metavar="PATH=VALUE",
        append=True,
    )
    seed: int = option(0, "seed of data, pre-training and the online run")
    progress: bool = option(True, "progress bars")
    stall_minutes: float = option(
        10.0,
        "stop with an error (and the learner's and actor's stacks in their logs) when the learner's "
        "counters do not move for this long in the online stage; 0: never",
    )


def main(argv: list[str] | None = None) -> None:
    tune_process()  # before JAX starts its backend
    # SIGTERM (a scheduler, `kill`) and SIGINT stop the learner and actor too (Processes.stop_all);
    # a shell's background job starts with SIGINT ignored, and Python then leaves it so: set it here.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_on)
    p, args = parse_command(
        SimJobConfig, "sim", argv, __doc__, overrides=False
    )  # --set is the agent's (SimJobConfig.overrides)
    if args.out is None:
        p.error("--out is required (or a config file's sim.out)")
    reward = args.reward or ("classifier" if args.obs == "images" or args.reward_classifier else "ground_truth")
    if reward == "ground_truth" and args.reward_classifier:
        p.error("--reward-classifier names the classifier for --reward classifier")
    _quiet_logs()
    t0 = time.time()
    out = Path(args.out).absolute()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    # One experiment file for the job and both its processes: --config OUT/experiment.yaml runs it again
    write_config_file(out / "experiment.yaml", {"sim": replace(args, out=str(out))})

    overrides = agent_overrides(args.critics, list(args.overrides), args.obs, args.encoder)
    pretrained = Path(args.pretrained).absolute() if args.pretrained else None
    stages: dict[str, float] = {}
    if pretrained is None:
        cache = Path(args.cache).absolute()
        if args.obs == "images":  # its own dataset and checkpoint, by image size and trunk
            cache = cache.with_name(f"{cache.name}_images{args.image_size}_{args.encoder}")
        defaults_of_job = agent_overrides(SimJobConfig.critics, [], args.obs, args.encoder)
        cache = pretrain_cache(cache, args.seed, args.pretrain_steps, overrides, defaults_of_job)
        pretrained = make_pretrained(
            cache,
            args.pretrain_steps,
            overrides,
            args.seed,
            args.progress,
            stages,
            args.image_size if args.obs == "images" else None,
        )
        _quiet_logs()  # the collection and pre-training entry points turn INFO logs on
    classifier = Path(args.reward_classifier).absolute() if args.reward_classifier else None
    if classifier is None and reward == "classifier":
        size = args.image_size if args.obs == "images" else STATE_JOB_CLASSIFIER_SIZE
        classifier = make_classifier(
            classifier_cache(Path(args.cache).absolute(), size), size, args.seed, args.progress, stages
        )
    print(f"[2/4] evaluating the pre-trained policy ({pretrained}) on {args.episodes} fixed poses", flush=True)
    t = time.time()
    before = evaluate_checkpoint(pretrained, None, args.episodes)
    stages["evaluate_pretrained_s"] = round(time.time() - t, 1)
    print(f"      pre-trained: {int(before['successes'])}/{args.episodes}", flush=True)

    print(
        f"[3/4] learner + actor over localhost: {args.warmup_steps} warmup steps, then {args.online_steps} online "
        f"steps at UTD 4 (logs: {out}/learner.log, {out}/actor.log)",
        flush=True,
    )
    if classifier is not None:
        print(f"      reward: the classifier in {classifier} (its success ends episodes)", flush=True)
    stages.update(
        run_online(
            out,
            pretrained,
            args.warmup_steps,
            args.online_steps,
            overrides,
            args.seed,
            args.progress,
            classifier,
            actor_extra=(
                ["--intervene", "scripted", "--intervene-distance", str(args.scripted_human)]
                if args.scripted_human
                else []
            )
            + ["--view", args.view],
            learner_extra=["--view", args.view],
            learner_sets=[f"intervention_ratio={args.intervention_ratio}", *args.learner_sets],
            stall_s=60.0 * args.stall_minutes,
        )
    )
    interventions = interventions_of(out / "actor", args.scripted_human, args.intervention_ratio)

    from shared.storage.checkpoint import list_steps, load_checkpoint

    ckpt_dir = out / "learner" / "checkpoints"
    steps = list_steps(ckpt_dir)
    print(f"[4/4] evaluating {len(steps)} learner checkpoints on {args.episodes} fixed poses", flush=True)
    curve = []
    t = time.time()
    by_updates: dict[int, dict[str, float]] = {}  # the warmup's checkpoints hold one agent: evaluated once
    for s in tqdm(steps, desc="evaluate", disable=not args.progress):
        meta = load_checkpoint(ckpt_dir, s).meta
        if meta.grad_steps not in by_updates:
            by_updates[meta.grad_steps] = evaluate_checkpoint(ckpt_dir, s, args.episodes)
        curve.append({"env_steps": meta.env_steps, "grad_steps": meta.grad_steps, **by_updates[meta.grad_steps]})
    after = curve[-1] if curve else evaluate_checkpoint(ckpt_dir, None, args.episodes)
    stages["evaluate_checkpoints_s"] = round(time.time() - t, 1)
    plot_path = plot(out, args.warmup_steps, curve, before["success_rate"], after["success_rate"], args.episodes)
    summary: dict[str, Any] = {
        "pretrained_successes": int(before["successes"]),
        "finetuned_successes": int(after["successes"]),
        "episodes": args.episodes,
        "pretrained_success_rate": before["success_rate"],
        "finetuned_success_rate": after["success_rate"],
        "warmup_steps": args.warmup_steps,
        "online_steps": args.online_steps,
        "critics": args.critics,
        "obs": args.obs if args.obs == "state" else f"images {args.image_size} px, {args.encoder}",
        "reward": f"classifier {classifier}" if classifier else "ground truth",
        "curve": curve,
        "pretrained_checkpoint": str(pretrained),
        "plot": str(plot_path),
        "wall_time_s": round(time.time() - t0, 1),
        "stage_times_s": stages,
        "interventions": interventions,
        "health": health_of(out / "learner"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nsuccess on {args.episodes} fixed poses: pre-trained {summary['pretrained_successes']}/{args.episodes} "
        f"-> fine-tuned {summary['finetuned_successes']}/{args.episodes}  "
        f"({summary['wall_time_s'] / 60:.1f} min; {out / 'summary.json'}, {plot_path})",
        flush=True,
    )
    if args.scripted_human:
        print(
            f"interventions: {interventions['intervened_steps']} of {interventions['training_steps']} training "
            f"steps ({interventions['intervened_fraction']:.1%}), in {interventions['intervened_episodes']} "
            f"of {interventions['training_episodes']} episodes",
            flush=True,
        )
    for ev in summary["health"]["events"]:
        what = ev.get("alarm") or f"rollback to snapshot {ev.get('to')} ({ev.get('reason')})"
        print(f"health: {ev['event']} {what} at env step {ev.get('env_steps')}: {ev.get('message', '')}", flush=True)
    print("stage times: " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.0f} s" for k, v in stages.items()), flush=True)


if __name__ == "__main__":
    main()
