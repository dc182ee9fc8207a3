"""Roll a running learner back to an earlier agent snapshot, or list the snapshots.

Usage (GPU box): ``launch/rollback.sh --run runs/wsrl --list`` shows the snapshots (critic
step, env steps, weights version, success score); ``launch/rollback.sh --run runs/wsrl --to
STEP`` (or ``--to best``) asks the learner running in that folder to reload it with its optimiser
state and publish it; the online data gathered since stays. The learner reads the request
within about a second; this command waits for the rollback event in ``events.jsonl`` and prints
it. A learner that is not running applies the request when it is next started with ``--resume``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from learner.snapshots import REQUEST_FILE, SNAPSHOTS_DIR, read_events, request_rollback
from shared.command_line import option, parse_command


@dataclass(frozen=True)
class RollbackConfig:
    """What ``wsrl-rollback`` asks for (its ``rollback:`` section)."""

    run: str | None = option(None, "the learner's --out folder (required)")
    to: str | None = option(None, "a snapshot's critic step, or 'best' (the best-scoring)")
    list: bool = option(False, "list the snapshots and exit")
    wait: float = option(30.0, "seconds to wait for the learner to roll back")


def main(argv: list[str] | None = None) -> None:
    p, args = parse_command(RollbackConfig, "rollback", argv, __doc__)
    if args.run is None:
        p.error("--run is required (or a config file's rollback.run)")
    run = Path(args.run)
    index_file = run / SNAPSHOTS_DIR / "index.json"
    if not index_file.exists():
        raise SystemExit(f"{run} holds no snapshots ({index_file} is missing): is it a learner's --out?")
    index = {int(k): v for k, v in json.loads(index_file.read_text()).items()}
    if args.list or args.to is None:
        print(f"{'step':>10} {'env steps':>10} {'weights':>8} {'score':>6}")
        for at, v in sorted(index.items()):
            score = "-" if v.get("score") is None else f"{v['score']:.2f}"
            print(f"{at:>10} {v.get('env_steps', 0):>10} {'v' + str(v.get('weights_version', 0)):>8} {score:>6}")
        return
    step: int | None = None  # None: the best-scoring
    if args.to != "best":
        try:
            step = int(args.to)
        except ValueError:
            raise SystemExit(f"--to takes a critic step or 'best', not {args.to!r}") from None
        if step not in index:
            raise SystemExit(f"no snapshot {step} in {run}; have {sorted(index)}")
    before = len(read_events(run))
    asked = time.time()
    request_rollback(run, step)
    deadline = asked + args.wait
    while time.time() < deadline:
        for ev in read_events(run)[before:]:
            if ev.get("event") in ("rollback", "rollback_refused"):
                print(json.dumps(ev))
                if ev["event"] == "rollback_refused":
                    sys.exit(1)
                return
        time.sleep(0.2)
    pending = (run / REQUEST_FILE).exists()
    status = run / "status.json"
    state = json.loads(status.read_text()).get("phase") if status.exists() else "unknown"
    raise SystemExit(
        f"the learner in {run} did not roll back within {args.wait:.0f} s (its status: {state}); "
        + ("the request stays and is applied when it next runs (--resume)" if pending else "")
    )


if __name__ == "__main__":
    main()
