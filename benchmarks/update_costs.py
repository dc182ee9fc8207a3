"""The cost of one update of each method family, so a study's cost can be predicted before it runs.

Every method of ``shared.learning.methods`` runs one of these updates per env step after its warmup (the
study runner's exact UTD); pre-training runs the Cal-QL step. Measured as the study runs it:
host sampling from a replay buffer (and the offline half where a method keeps the data) plus
one compiled call, on the simulated peg's 19-D state and 7-D action.

Usage: .venv/bin/python benchmarks/update_costs.py [--preset paper_sim] [--critics 10] [--seconds 5]
Pin to one core with ``taskset -c 0`` for the per-core figure.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from dataclasses import replace

import jax

from learner.study.costs import time_update, update_kind
from robot_env.contract import ACTION_DIM, STATE_DIM
from shared.config import add_override_argument, apply_overrides
from shared.data.dataset import ObsSpec
from shared.learning.methods import METHODS, online_config
from shared.presets import PRESETS
from shared.xla_cpu import tune_process


def main() -> None:
    tune_process()  # as the learner's entry points do
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper_sim")
    p.add_argument("--critics", type=int, default=None, help="ensemble size (default: the preset's)")
    add_override_argument(p, "agent setting, e.g. --set agent.cql.penalty_critics=2 (repeatable)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed duration of each measurement")
    p.add_argument("--kinds", nargs="+", help="only these update kinds (e.g. pretrain:calql sac)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args()
    make_pre, make_online = PRESETS[args.preset]
    overrides = list(args.overrides) + ([f"agent.num_critics={args.critics}"] if args.critics else [])
    pre = apply_overrides(make_pre(), overrides).agent
    online = apply_overrides(make_online(), overrides).agent
    spec: ObsSpec = {"state": ((STATE_DIM,), "float32")}

    # One measurement per update kind; each method maps to one.
    kinds: dict[str, tuple] = {"pretrain:" + pre.algo: (pre, 0.0, ["(pre-training)"])}
    for name, m in METHODS.items():
        pre_algo = replace(pre, algo=m.pretrain_algo)
        entry = kinds.setdefault(
            update_kind(m, online, pre_algo), (online_config(m, online, pre_algo), m.offline_fraction, [])
        )
        entry[2].append(name)

    print(f"backend={jax.default_backend()} cores={os.cpu_count()} preset={args.preset} critics={online.num_critics}")
    print(
        f"online: batch {online.batch_size} x UTD {online.utd}, hidden {online.critic_net.hidden_dims}; "
        f"pre-training: {pre.algo}, {pre.num_backup_actions} backup action(s), "
        f"{pre.cql.num_actions} sampled actions per source, penalty on "
        f"{pre.cql.penalty_critics or pre.num_critics} critic(s)"
    )
    rows = []
    for kind, (cfg, fraction, methods) in kinds.items():
        if args.kinds and kind not in args.kinds:
            continue
        cost = time_update(cfg, spec, ACTION_DIM, fraction, seconds=args.seconds, kind=kind)
        rows.append({**cost.row(), "methods": methods})
        if not args.json:
            ms = cost.row()["ms_per_call"]
            print(
                f"{kind:16s} {ms['median']:8.1f} ms/call (min {ms['min']:.1f}, max {ms['max']:.1f}; "
                f"{cost.calls} calls)  {cost.critic_updates_per_s:7.1f} critic updates/s  "
                f"first call {cost.first_call_s:.1f} s  <- {', '.join(methods)}",
                flush=True,
            )
    if args.json:
        print(json.dumps({"preset": args.preset, "critics": online.num_critics, "kinds": rows}))


if __name__ == "__main__":
    main()
