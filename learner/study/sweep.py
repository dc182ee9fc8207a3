"""A study's cells (task x method x seed): those already finished are kept, the rest are run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from learner.study.report import write_results
from learner.study.runner import RunConfig, run_method
from learner.study.sources import data_folder, online_config_for, prepare, pretrain_config, pretrain_folder
from learner.study.suites import SUITES, TASKS, Suite, with_budget
from shared.learning.methods import method
from shared.metrics import write_json_atomic
from shared.storage.checkpoint import AgentCheckpoint
from shared.storage.replay_buffer import ReplayBuffer


def study_cells(
    suite: Suite, tasks: list[str], methods: list[str] | None, seeds: int | None
) -> list[tuple[str, str, int]]:
    return [(t, m, s) for t in tasks for m in suite.methods_for(t, methods) for s in range(suite.seeds_for(m, seeds))]


def finished_run(path: Path, run: RunConfig) -> dict[str, Any] | None:
    """A run's summary if it finished with this exact run config (a resumed study skips it)."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("run") == dataclasses.asdict(run) else None


def prior_run(prior: dict[str, Any], task: str, name: str, seed: int, run: RunConfig) -> dict[str, Any] | None:
    """A run's summary from an earlier study's results, if it was made with this exact run config."""
    summary = prior.get("tasks", {}).get(task, {}).get(name, {}).get(str(seed))
    return summary if isinstance(summary, dict) and summary.get("run") == dataclasses.asdict(run) else None


def run_study(
    suite_name: str,
    out: Path,
    methods: list[str] | None = None,
    seeds: int | None = None,
    progress: bool = True,
    pretrained_dir: Path | None = None,
    offline_data: Path | None = None,
    overrides: tuple[str, ...] = (),
    tasks: list[str] | None = None,
    cache: Path | None = None,
    budget: dict[str, int] | None = None,
    report_only: bool = False,
    prior: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every task x method x seed of a suite (``methods``, ``tasks``, ``seeds``: instead of the
    suite's). ``overrides`` (agent settings) apply after the suite's, to pre-training and online
    alike. ``budget``: the suite's ``env_steps``/``warmup_steps`` (K) changed. Finished runs are
    kept: an interrupted study resumes with the first unfinished run. ``report_only``: write the
    results of the runs already finished (a study in progress) and run nothing. ``prior``: an
    earlier study's ``results.json`` (e.g. committed at the end of a session whose folder is gone):
    its runs made with exactly this run config are kept as if finished here."""
    suite = with_budget(SUITES[suite_name], budget)
    tasks = list(tasks or suite.tasks)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"suite": suite_name, "overrides": list(overrides), "tasks": {}}
    cells = study_cells(suite, tasks, methods, seeds)
    bar = tqdm(cells, desc="study", unit="run", disable=not progress, dynamic_ncols=True)
    prepared: dict[tuple[str, str, int], tuple[AgentCheckpoint, ReplayBuffer, dict[str, Any]]] = {}
    for task, name, seed in bar:
        bar.set_postfix(task=task, method=name, seed=seed)
        algo = method(name).pretrain_algo
        data_seed = 0 if pretrained_dir is not None else suite.data_seed(seed)
        pre_cfg = pretrain_config(suite, overrides, algo, data_seed, task)
        source = (
            f"{pretrained_dir.absolute()}"
            if pretrained_dir is not None
            else f"{data_folder(suite, task, data_seed)}/{pretrain_folder(pre_cfg)}"
        )
        run = RunConfig(
            name,
            suite.env_steps,
            suite.warmup_steps,
            suite.eval_every,
            suite.eval_episodes,
            seed,
            env_id=TASKS[task].env_id,
            task=TASKS[task].task,
            random_eval_episodes=suite.random_eval_episodes,
            source=source,
        )
        run_dir = out / "runs" / task / name / f"seed_{seed}"
        summary = finished_run(run_dir / "summary.json", run)
        if summary is None and prior is not None:
            summary = prior_run(prior, task, name, seed, run)
            if summary is not None:  # kept in the folder too, so a later resume there finds it
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(run_dir / "summary.json", summary)
        if summary is None and report_only:
            continue
        if summary is None:
            if (task, algo, data_seed) not in prepared:
                prepared[(task, algo, data_seed)] = prepare(
                    suite, out, data_seed, progress, pretrained_dir, offline_data, overrides, task, algo, cache
                )
            pretrained, offline, probe = prepared[(task, algo, data_seed)]
            cfg = online_config_for(suite, task, overrides)
            if method(name).online_algo == "pretrained" and suite.continued_utd is not None:
                cfg = replace(cfg, agent=replace(cfg.agent, utd=suite.continued_utd))
            summary = run_method(run, cfg, pretrained, offline, run_dir, probe)
        results["tasks"].setdefault(task, {}).setdefault(name, {})[str(seed)] = summary
    write_json_atomic(out / "results.json", results)
    write_results(results, out, suite_name)
    return results
