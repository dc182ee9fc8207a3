"""A study's figures with their uncertainty: per-cell summaries with confidence intervals over
seeds, paired differences between methods, and verdicts on the paper's claims from rules fixed
before the runs.

The intervals are Student-t intervals of the mean. A study has 3 to 10 seeds; at that size a
percentile bootstrap is too narrow (with 3 values its 95 % interval is the min-max range, a
sign test at p = 0.125), while the t-interval pays for estimating the spread from few values.
No test counts as holding on fewer than ``MIN_PAIRS`` pairs, and "matches or beats" is tested
as non-inferiority: the paired difference's interval lies above -``NONINFERIORITY_MARGIN``.

Pure functions over ``results.json`` (``learner/study/sweep.py``); no training here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

CONFIDENCE = 0.95
MIN_PAIRS = 5  # fewer paired seeds than this: a test never holds (it reads "too few pairs")
NONINFERIORITY_MARGIN = 0.05  # success rate (or AUC) a method may trail by and still "match"

Metric = Literal["final", "auc"]
Direction = Literal["greater", "less", "equal", "noninferior"]
Verdict = Literal["reproduced", "partial", "not reproduced", "inconclusive"]


def auc(curve: Sequence[Mapping[str, float]]) -> float:
    """Area under the success curve divided by its length: the mean success rate over the
    evaluations (they are evenly spaced), so 1 means solved from the first evaluation on."""
    return float(np.mean([c["success_rate"] for c in curve])) if curve else 0.0


def run_metric(summary: Mapping[str, Any], metric: Metric) -> float:
    if metric == "final":
        return float(summary["final_success_rate"])
    return auc(summary["curve"])


def mean_ci(
    values: Sequence[float], confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """The mean and its Student-t interval over ``values`` (one per seed), clipped to ``bounds``
    (a success rate cannot leave [0, 1]). One value: the interval is that value (a single seed
    says nothing about spread); equal values: no width."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2.0, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, lo, hi


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of a - b over the seeds both have (runs are paired by seed: same pre-trained
    checkpoint, resets and evaluation poses), its t-interval, and the number of pairs."""
    common = sorted(set(a) & set(b), key=str)
    if not common:
        raise ValueError("the two methods share no seed")
    diffs = [a[s] - b[s] for s in common]
    mean, lo, hi = mean_ci(diffs, bounds=(-1.0, 1.0))
    return mean, lo, hi, len(common)


@dataclass(frozen=True)
class Comparison:
    """One directional comparison: ``method`` vs ``baseline`` on ``task`` by ``metric``.
    ``greater``/``less``: the claim holds when the paired difference's interval lies above /
    below 0, and is contradicted when it lies entirely on the other side. ``equal``: holds when
    the interval lies within +-``margin``, contradicted when it excludes that band.
    ``noninferior`` ("matches or beats"): holds when the interval lies above -``margin``,
    contradicted when it lies entirely below it."""

    method: str
    baseline: str
    task: str
    metric: Metric = "auc"
    direction: Direction = "greater"
    margin: float = 0.1
    baseline_task: str | None = None  # the baseline on another task (same seeds), e.g. weak pre-training

    def label(self) -> str:
        sign = {"greater": ">", "less": "<", "equal": "≈", "noninferior": "≥"}[self.direction]
        if self.baseline_task is None:
            return f"{self.method} {sign} {self.baseline} ({self.metric}, {self.task})"
        return f"{self.method} on {self.task} {sign} {self.baseline} on {self.baseline_task} ({self.metric})"


def judge(test: Comparison, lo: float, hi: float) -> Literal["holds", "contradicted", "unclear"]:
    if test.direction == "greater":
        return "holds" if lo > 0 else "contradicted" if hi < 0 else "unclear"
    if test.direction == "less":
        return "holds" if hi < 0 else "contradicted" if lo > 0 else "unclear"
    if test.direction == "noninferior":
        return "holds" if lo > -test.margin else "contradicted" if hi < -test.margin else "unclear"
    if -test.margin <= lo and hi <= test.margin:
        return "holds"
    return "contradicted" if lo > test.margin or hi < -test.margin else "unclear"


def verdict(outcomes: Sequence[str]) -> Verdict:
    """A claim of several tests: reproduced when every test holds, not reproduced when any is
    contradicted, partial when some hold and the rest are unclear, inconclusive otherwise."""
    if outcomes and all(o == "holds" for o in outcomes):
        return "reproduced"
    if any(o == "contradicted" for o in outcomes):
        return "not reproduced"
    if any(o == "holds" for o in outcomes):
        return "partial"
    return "inconclusive"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    figure: str
    tests: tuple[Comparison, ...]


def per_seed(results: Mapping[str, Any], task: str, method: str, metric: Metric) -> dict[str, float]:
    cells = results["tasks"].get(task, {}).get(method, {})
    return {seed: run_metric(summary, metric) for seed, summary in cells.items()}


def evaluate_claim(claim: Claim, results: Mapping[str, Any]) -> dict[str, Any]:
    """Each test's paired difference and outcome, and the claim's verdict; tests whose methods
    did not run are reported as missing and count as unclear."""
    rows: list[dict[str, Any]] = []
    for t in claim.tests:
        a = per_seed(results, t.task, t.method, t.metric)
        b = per_seed(results, t.baseline_task or t.task, t.baseline, t.metric)
        if not a or not b or not set(a) & set(b):
            rows.append({"test": t.label(), "outcome": "unclear", "missing": True})
            continue
        mean, lo, hi, n = paired_difference(a, b)
        outcome: str = judge(t, lo, hi)
        if outcome == "holds" and n < MIN_PAIRS:
            outcome = "too few pairs"
        rows.append({"test": t.label(), "difference": mean, "ci": [lo, hi], "pairs": n, "outcome": outcome})
    return {
        "id": claim.id,
        "claim": claim.text,
        "figure": claim.figure,
        "tests": rows,
        "verdict": verdict([r["outcome"] for r in rows]),
    }


def cell_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per task x method: final success and AUC, each mean [95% CI] over seeds."""
    rows = []
    for task, methods in results["tasks"].items():
        for method, seeds in methods.items():
            row: dict[str, Any] = {"task": task, "method": method, "seeds": len(seeds)}
            for metric in ("final", "auc"):
                row[metric] = mean_ci([run_metric(s, metric) for s in seeds.values()], bounds=(0.0, 1.0))
            rows.append(row)
    return rows


def _ci(v: Sequence[float]) -> str:
    mean, lo, hi = v
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def _signed_ci(mean: float, lo: float, hi: float) -> str:
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def results_markdown(results: Mapping[str, Any], claims: Sequence[Claim], header: str = "") -> str:
    """``results.md``: the method x task table and the claims table."""
    lines = [header.rstrip(), ""] if header else []
    lines += [
        "## Success by method and task",
        "",
        f"Mean over seeds with a {CONFIDENCE:.0%} Student-t interval (honest at 3-10 seeds, where a percentile "
        "bootstrap is too narrow), clipped to [0, 1]. "
        "Final: the last evaluation; AUC: the mean success over all evaluations (warmup included).",
        "",
        "| task | method | seeds | final success | AUC |",
        "|---|---|---|---|---|",
    ]
    for r in cell_table(results):
        lines.append(f"| {r['task']} | `{r['method']}` | {r['seeds']} | {_ci(r['final'])} | {_ci(r['auc'])} |")
    lines += [
        "",
        "## The paper's claims",
        "",
        "Each test is a paired difference over seeds (method minus baseline) with its interval. A test "
        "holds when the interval lies on the claimed side of 0 (for ≈: within ±0.1; for ≥, 'matches or "
        f"beats': above -{NONINFERIORITY_MARGIN:g}), is contradicted when it lies entirely on the other side, "
        f"and is unclear otherwise; on fewer than {MIN_PAIRS} pairs it never holds ('too few pairs'). Verdict: reproduced (every "
        "test holds), not reproduced (any is contradicted), partial (some hold, the rest unclear), "
        "inconclusive (none holds or contradicts). The rules were fixed before the runs.",
        "",
        "| claim | paper | test | difference [95% CI] | pairs | outcome | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        res = evaluate_claim(c, results)
        for i, t in enumerate(res["tests"]):
            diff = "not run" if t.get("missing") else _signed_ci(t["difference"], *t["ci"])
            head = (f"{c.id}: {c.text}", c.figure) if i == 0 else ("", "")
            lines.append(
                f"| {head[0]} | {head[1]} | {t['test']} | {diff} | {t.get('pairs', 0)} | {t['outcome']} | "
                f"{res['verdict'] if i == 0 else ''} |"
            )
    return "\n".join(lines) + "\n"
