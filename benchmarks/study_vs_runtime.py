"""Does the study runner's WSRL agree with the distributed runtime's (``run_sim.sh``)?

Both start from the same pre-trained checkpoint and evaluate on the same 20 fixed poses; the
runtime interleaves a learner and an actor process over ZeroMQ, the study runner steps the env
and updates in one process with exact UTD. Prints both evaluation curves side by side and
writes an overlay plot.

    bash launch/run_sim.sh --out runs/sim_demo
    bash launch/study.sh --suite sim_demo --methods wsrl --seeds 3 --out runs/study_demo \\
        --pretrained checkpoints/peg_sim_calql_obs2/pretrain/checkpoints --offline checkpoints/peg_sim_calql_obs2/peg_sim.npz
    .venv/bin/python benchmarks/study_vs_runtime.py runs/sim_demo runs/study_demo

(With ``--critics N`` on run_sim.sh, give the study ``--set agent.num_critics=N``.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sim_out", help="a run_sim.sh output folder (summary.json)")
    p.add_argument("study_out", help="a study folder that ran wsrl (its runs' summary.json files)")
    args = p.parse_args()
    sim = json.loads((Path(args.sim_out) / "summary.json").read_text())
    seeds = {
        p.parent.name: json.loads(p.read_text())
        for p in sorted(Path(args.study_out).glob("runs/**/wsrl/seed_*/summary.json"))
    }
    if not seeds:
        raise SystemExit(f"no wsrl run under {args.study_out}/runs")
    episodes = sim["episodes"]

    print(f"run_sim.sh ({sim['critics']} critics, K={sim['warmup_steps']}, {sim['online_steps']} online steps):")
    print(f"  pre-trained {sim['pretrained_successes']}/{episodes}")
    for c in sim["curve"]:
        print(f"  env step {c['env_steps']:6d}  grad steps {c['grad_steps']:6d}  {int(c['successes']):2d}/{episodes}")
    print(f"study runner, wsrl, {len(seeds)} seed(s):")
    steps = [c["env_steps"] for c in next(iter(seeds.values()))["curve"]]
    for i, step in enumerate(steps):
        rates = [s["curve"][i]["success_rate"] for s in seeds.values()]
        grads = next(iter(seeds.values()))["curve"][i]["grad_steps"]
        per_seed = " ".join(f"{round(r * episodes):2d}" for r in rates)
        print(f"  env step {step:6d}  grad steps {grads:6d}  per seed {per_seed}  mean {np.mean(rates):.2f}")

    warm = sim["warmup_steps"]
    study_final = [s["final_success_rate"] for s in seeds.values()]
    study_warm = [c["success_rate"] for s in seeds.values() for c in s["curve"] if c["env_steps"] <= warm]
    sim_after = [c["success_rate"] for c in sim["curve"] if c["env_steps"] > warm]
    print(
        json.dumps(
            {
                "pretrained": {
                    "run_sim": sim["pretrained_success_rate"],
                    "study_during_warmup": sorted(set(study_warm)),
                },
                "final": {"run_sim": sim["finetuned_success_rate"], "study_per_seed": study_final},
                "after_warmup": {"run_sim": sim_after, "study_mean": _after(seeds, warm)},
            }
        )
    )
    _plot(sim, seeds, Path(args.study_out) / "study_vs_runtime.png")


def _after(seeds: dict, warm: int) -> list[float]:
    curves = [[c["success_rate"] for c in s["curve"] if c["env_steps"] > warm] for s in seeds.values()]
    return [round(float(v), 3) for v in np.mean(curves, axis=0)]


def _plot(sim: dict, seeds: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, s in enumerate(seeds.values()):
        ax.plot(
            [c["env_steps"] for c in s["curve"]],
            [c["success_rate"] for c in s["curve"]],
            "o-",
            color="tab:blue",
            alpha=0.5,
            label="study runner (one process), per seed" if i == 0 else None,
        )
    ax.plot(
        [0] + [c["env_steps"] for c in sim["curve"]],
        [sim["pretrained_success_rate"]] + [c["success_rate"] for c in sim["curve"]],
        "s-",
        color="tab:orange",
        label="run_sim.sh (learner + actor processes)",
    )
    ax.axvline(sim["warmup_steps"], color="k", ls=":", label="end of warmup")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"success on {sim['episodes']} fixed poses")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
