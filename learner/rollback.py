"""Roll a running learner back to an earlier agent snapshot, or list the snapshots.

Usage (GPU box): ``launch/rollback.sh --run runs/wsrl --list`` shows the snapshots (critic
step, env steps, weights version, success score); ``launch/rollback.sh --run runs/wsrl --to
STEP`` (or ``--to best``) asks the learner running in that folder to reload it with its optimiser
state and publish it; the online data gathered since stays. The learner reads the request
within about a second; this command waits for the rollback event in ``events.jsonl`` and prints
it. A learner that is not running applies the request when it is next started with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from learner.snapshots import REQUEST_FILE, SNAPSHOTS_DIR, read_events, request_rollback


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the learner's --out folder")
    p.add_argument("--to", help="a snapshot's critic step, or 'best' (the best-scoring)")
    p.add_argument("--list", action="store_true", help="list the snapshots and exit")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the learner to roll back")
    args = p.parse_args(argv)
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
