"""The learner's health monitor in the simulated main job: does it catch a learner gone wrong, does
a rollback bring the success back, and does it stay quiet when nothing is wrong?

Runs ``launch/run_sim.sh`` (state, the cached pre-trained checkpoint, K = 5,000, 8,000 online
steps, a learner checkpoint and snapshot every 1,000 critic steps) in four kinds:
- ``spike_rollback``: the test-only sabotage ``lr_spike`` (each update's parameter change x30 for
  critic steps 8,000-10,000, about env steps 7,000-7,500) with ``health.rollback=true``;
- ``strong_rollback``: x100 for critic steps 8,000-12,000 (about env steps 7,000-8,000), rollback on;
- ``strong_norollback``: the same, the alarms only;
- ``clean``: no sabotage (false alarms), one run per seed.
Then prints, per run, the training episodes' success over windows of 20 (before the sabotage, its
lowest after, the last), each alarm and rollback with its env step, and the updates from the
sabotage's start to the first alarm.

Usage: .venv/bin/python benchmarks/health_monitor.py --out runs/health [--seeds 1 2 3] [--only clean ...] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIKE = ["sabotage.kind=lr_spike", "sabotage.start=8000", "sabotage.stop=10000"]  # x30 (the default factor)
STRONG = ["sabotage.kind=lr_spike", "sabotage.start=8000", "sabotage.stop=12000", "sabotage.lr_factor=100"]
COMMON = ["--online-steps", "8000", "--no-progress", "--learner-set", "checkpoint_every=1000"]


def runs(seeds: list[int]) -> dict[str, list[str]]:
    def sets(*items: str) -> list[str]:
        return [a for i in items for a in ("--learner-set", i)]

    out = {
        "spike_rollback_s0": ["--seed", "0", *sets(*SPIKE, "health.rollback=true")],
        "strong_rollback_s0": ["--seed", "0", *sets(*STRONG, "health.rollback=true")],
        "strong_norollback_s0": ["--seed", "0", *sets(*STRONG)],
    }
    out.update({f"clean_s{s}": ["--seed", str(s)] for s in seeds})
    return out


def windows(actor_dir: Path, size: int = 20) -> list[tuple[int, float]]:
    """(env steps at the window's last episode, its success rate) over consecutive windows."""
    rows = [json.loads(line) for line in (actor_dir / "metrics.jsonl").read_text().splitlines()]
    live = [r for r in rows if "success" in r and r.get("warmup_fraction", 1.0) == 0.0]
    return [
        (int(live[i + size - 1]["global_env_steps"]), sum(r["success"] for r in live[i : i + size]) / size)
        for i in range(0, len(live) - size + 1, size)
    ]


def report(out: Path) -> None:
    print(f"{'run':24} {'before':>7} {'lowest':>7} {'last':>6} {'eval':>6}  alarms and rollbacks")
    for run in sorted(p for p in out.iterdir() if (p / "summary.json").exists()):
        summary = json.loads((run / "summary.json").read_text())
        events = (
            [json.loads(line) for line in (run / "learner" / "events.jsonl").read_text().splitlines()]
            if (run / "learner" / "events.jsonl").exists()
            else []
        )
        w = windows(run / "actor")
        start = 7000  # about where critic step 8,000 falls (K = 5,000, UTD 4, a little lag)
        before = [s for e, s in w if e <= start]
        after = [s for e, s in w if e > start]
        said = [
            f"{e['event'].replace('alarm_raised', 'ALARM')} {e.get('alarm') or 'to ' + str(e.get('to'))} "
            f"@{e['env_steps']} (critic {e['grad_steps']})"
            for e in events
            if e["event"] in ("alarm_raised", "rollback")
        ]
        print(
            f"{run.name:24} {before[-1] if before else float('nan'):7.2f} {min(after) if after else float('nan'):7.2f} "
            f"{w[-1][1] if w else float('nan'):6.2f} {summary['finetuned_successes']:>3}/{summary['episodes']}  "
            + ("; ".join(said) or "none")
        )
        first = next((e for e in events if e["event"] == "alarm_raised"), None)
        if first is not None and run.name.startswith(("spike", "strong")):
            print(f"{'':24} first alarm {(first['grad_steps'] - 8000) // 4} updates after the sabotage began")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument("--only", nargs="*", default=None, help="run only the kinds named (e.g. clean); all by default")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    if not args.report_only:
        for name, extra in runs(args.seeds).items():
            if (out / name / "summary.json").exists():
                continue
            if args.only is not None and name.rsplit("_s", 1)[0] not in args.only:
                continue
            print(f"== {name}", flush=True)
            subprocess.run(
                ["bash", "launch/run_sim.sh", "--out", str(out / name), *COMMON, *extra], cwd=ROOT, check=True
            )
    report(out)


if __name__ == "__main__":
    main()
