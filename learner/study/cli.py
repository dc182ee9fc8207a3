"""The study's command line: ``wsrl-study`` / ``launch/study.sh`` (docs/study.md).

Usage: ``launch/study.sh --suite smoke|sim_demo|core|table1 --out DIR [--tasks ...] [--methods ...]
[--seeds N] [--dry-run] [--report-only]``. A run writes ``DIR/runs/<task>/<method>/seed_<s>/metrics.jsonl``
and ``summary.json``; the study writes ``DIR/results.json``, ``DIR/results.md`` (tables with
t-intervals, the claims) and figures ``DIR/results_<task>*.png``.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from learner.study.report import write_results
from learner.study.sources import online_config_for, pretrain_config
from learner.study.suites import SUITES, TASKS, with_budget
from learner.study.sweep import run_study, study_cells
from shared.command_line import option, parse_command
from shared.config import write_config_file
from shared.learning.methods import METHODS, method
from shared.xla_cpu import tune_process


def dry_run(
    suite_name: str,
    methods: list[str] | None,
    tasks: list[str] | None,
    seeds: int | None,
    overrides: tuple[str, ...] = (),
    seconds: float = 2.0,
    budget: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Time each update kind the suite needs and predict every cell's cost, without running it."""
    from learner.study.costs import time_update, update_kind
    from shared.learning.methods import online_config

    suite = with_budget(SUITES[suite_name], budget)
    tasks = list(tasks or suite.tasks)
    costs: dict[str, float] = {}  # seconds per update, by task (its sizes and settings) and update kind
    pretrain_s = 0.0
    spaces = {task: TASKS[task].spaces() for task in tasks}  # one env made per task, not per cell
    for task in tasks:
        spec, action_dim = spaces[task]
        for algo in sorted({method(m).pretrain_algo for m in suite.methods_for(task, methods)}):
            cfg = pretrain_config(suite, overrides, algo, task=task).agent
            costs[f"{task}:pretrain:{algo}"] = time_update(cfg, spec, action_dim, seconds=seconds).median_s
            data_seeds = min(suite.data_seeds, max(suite.seeds_for(m, seeds) for m in suite.methods_for(task, methods)))
            steps = TASKS[task].pretrain_steps(suite.pretrain_steps)
            pretrain_s += costs[f"{task}:pretrain:{algo}"] * steps * data_seeds
    cell_costs: list[dict[str, Any]] = []
    for task, name, seed in study_cells(suite, tasks, methods, seeds):
        spec, action_dim = spaces[task]
        m = method(name)
        pre_algo = pretrain_config(suite, overrides, m.pretrain_algo, task=task).agent
        cell_online = online_config_for(suite, task, overrides).agent
        if m.online_algo == "pretrained" and suite.continued_utd is not None:
            cell_online = replace(cell_online, utd=suite.continued_utd)
        cfg = online_config(m, cell_online, pre_algo)
        kind = f"{update_kind(m, cell_online, pre_algo)}@utd{cfg.utd}"
        if f"{task}:{kind}" not in costs:
            costs[f"{task}:{kind}"] = time_update(cfg, spec, action_dim, m.offline_fraction, seconds).median_s
        updates = max(suite.env_steps - m.no_update_steps(suite.warmup_steps, cfg.utd, cfg.batch_size), 0)
        evals = -(-suite.env_steps // suite.eval_every)
        # env steps and evaluation episodes at about 2 ms per step (policy call + physics), 60 steps an episode
        other = 0.002 * (suite.env_steps + evals * (suite.eval_episodes + suite.random_eval_episodes) * 60)
        cell_costs.append(
            {
                "task": task,
                "method": name,
                "seed": seed,
                "kind": kind,
                "updates": updates,
                "predicted_s": round(updates * costs[f"{task}:{kind}"] + other, 1),
            }
        )
    total = sum(float(c["predicted_s"]) for c in cell_costs) + pretrain_s
    return {
        "suite": suite_name,
        "update_s": {k: round(v, 4) for k, v in costs.items()},
        "cells": cell_costs,
        "pretrain_s": round(pretrain_s, 1),
        "total_s": round(total, 1),
    }


@dataclass(frozen=True)
class StudyConfig:
    """What ``wsrl-study`` runs (its ``study:`` section). Its ``--set`` overrides the agent of every
    run (pre-training and online alike), after the suite's settings."""

    suite: str = option("smoke", "the suite to run", choices=sorted(SUITES))
    out: str | None = option(None, "study folder: data, pre-training, runs, results (not needed with --dry-run)")
    tasks: tuple[str, ...] = option((), f"instead of the suite's, from {sorted(TASKS)}")
    methods: tuple[str, ...] = option((), f"instead of the suite's, from {sorted(METHODS)}")
    seeds: int | None = option(None, "seeds per method (headline methods get at least the suite's number)")
    env_steps: int | None = option(None, "every run's env-step budget, warmup included (default: the suite's)")
    warmup_steps: int | None = option(None, "K (default: the suite's)")
    cache: str | None = option(None, "where data and pre-trained checkpoints are kept by content (default OUT/cache)")
    pretrained: str | None = option(None, "a pre-trained checkpoint directory made elsewhere (with --offline)")
    offline: str | None = option(None, "the offline dataset (.npz) that checkpoint was trained on")
    overrides: tuple[str, ...] = option(
        (),
        "agent setting after the suite's, for pre-training and online alike (repeatable)",
        flag="--set",
        metavar="agent.PATH=VALUE",
        append=True,
    )
    dry_run: bool = option(False, "time each update kind and predict every run's cost")
    report_only: bool = option(False, "write results.md from the runs already finished")
    results: str | None = option(
        None,
        "with --report-only: a study's results.json (e.g. a committed bundle in docs/study_results/) "
        "to write results.md and the figures from, into --out, instead of the runs",
    )
    prior: str | None = option(
        None,
        "an earlier study's results.json (e.g. committed in docs/study_results/): its runs made with the same "
        "run config are kept, not run again (a study spread over machines or sessions)",
    )
    progress: bool = option(True, "progress bars")


def main(argv: list[str] | None = None) -> None:
    tune_process()  # before JAX starts its backend
    p, args = parse_command(
        StudyConfig, "study", argv, __doc__, overrides=False
    )  # --set is the agent's (StudyConfig.overrides)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    for name in args.methods or []:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; methods: {sorted(METHODS)}")
    for name in args.tasks or []:
        if name not in TASKS:
            p.error(f"unknown task {name!r}; tasks: {sorted(TASKS)}")
    budget = {k: v for k, v in (("env_steps", args.env_steps), ("warmup_steps", args.warmup_steps)) if v is not None}
    if args.dry_run:
        plan = dry_run(
            args.suite,
            list(args.methods) or None,
            list(args.tasks) or None,
            args.seeds,
            tuple(args.overrides),
            budget=budget,
        )
        for c in plan["cells"]:
            print(
                f"{c['task']:14s} {c['method']:22s} seed {c['seed']}  {c['kind']:10s} {c['updates']:6d} updates  ~{c['predicted_s'] / 60:6.1f} min"
            )
        print(
            f"pre-training ~{plan['pretrain_s'] / 60:.1f} min; total ~{plan['total_s'] / 60:.1f} min for {len(plan['cells'])} runs"
        )
        print(json.dumps({"update_s": plan["update_s"], "total_s": plan["total_s"]}), flush=True)
        return
    if not args.out:
        p.error("--out is required (except with --dry-run)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_config_file(Path(args.out) / "config.yaml", {"study": args})  # ``--config OUT/config.yaml`` resumes it
    if (args.pretrained is None) != (args.offline is None):
        p.error("--pretrained and --offline go together (the checkpoint and the data it was trained on)")
    if args.results:
        if not args.report_only:
            p.error("--results goes with --report-only")
        try:
            bundle = json.loads(Path(args.results).read_text())
            suite_name = str(bundle["suite"])
        except (OSError, ValueError, KeyError) as e:
            p.error(f"{args.results}: not a study's results.json ({e})")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_results(bundle, Path(args.out), suite_name)
        print(json.dumps({"results": str(Path(args.out) / "results.md")}), flush=True)
        return
    prior = None
    if args.prior:
        try:
            prior = json.loads(Path(args.prior).read_text())
        except (OSError, ValueError) as e:
            p.error(f"--prior {args.prior}: not a study's results.json ({e})")
        if prior.get("suite") != args.suite:
            p.error(f"--prior {args.prior} is a {prior.get('suite')!r} study, not {args.suite!r}")
    results = run_study(
        args.suite,
        Path(args.out),
        list(args.methods) or None,
        args.seeds,
        args.progress,
        Path(args.pretrained) if args.pretrained else None,
        Path(args.offline) if args.offline else None,
        tuple(args.overrides),
        list(args.tasks) or None,
        Path(args.cache) if args.cache else None,
        budget,
        args.report_only,
        prior,
    )
    finals = {
        f"{t}/{m}": [s["final_success_rate"] for s in seeds.values()]
        for t, ms in results["tasks"].items()
        for m, seeds in ms.items()
    }
    print(json.dumps({"results": str(Path(args.out) / "results.md"), "final_success_rate": finals}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
