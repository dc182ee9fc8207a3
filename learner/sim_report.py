"""What the simulated main job reports beyond the success counts: its learning-curve figure, how
much the (scripted) person did, and the learner's alarms and rollbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.metrics import read_jsonl


def interventions_of(actor_dir: Path, distance: float | None, ratio: float) -> dict[str, Any]:
    """How much the (scripted) person did, from the actor's episode log."""
    path = actor_dir / "metrics.jsonl"
    rows = [r for r in read_jsonl(path) if "intervened_steps" in r] if path.exists() else []
    steps = sum(int(r.get("length", 0)) for r in rows)
    done = sum(int(r["intervened_steps"]) for r in rows)
    return {
        "scripted_human_distance_m": distance,
        "intervention_ratio": ratio,
        "training_episodes": len(rows),
        "training_steps": steps,
        "intervened_steps": done,
        "intervened_fraction": done / max(steps, 1),
        "intervened_episodes": sum(int(r["intervened_steps"]) > 0 for r in rows),
    }


def health_of(learner_dir: Path) -> dict[str, Any]:
    """The learner's alarms and rollbacks (learner/snapshots.py's event log)."""
    from learner.snapshots import read_events

    events = read_events(learner_dir)
    raised = [e for e in events if e["event"] == "alarm_raised"]
    return {
        "alarms_raised": len(raised),
        "rollbacks": sum(e["event"] == "rollback" for e in events),
        "events": [e for e in events if e["event"] in ("alarm_raised", "rollback")],
    }


def plot(out: Path, warmup: int, curve: list[dict], before: float, after: float, episodes: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in read_jsonl(out / "actor" / "metrics.jsonl") if "success" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if rows:
        steps = np.array([r["step"] for r in rows])
        succ = np.array([r["success"] for r in rows])
        k = min(20, len(succ))
        rolling = np.convolve(succ, np.ones(k) / k, mode="valid")
        ax.plot(
            steps[k - 1 :], rolling, color="tab:blue", alpha=0.6, label=f"training episodes (stochastic, mean of {k})"
        )
    if curve:
        ax.plot(
            [c["env_steps"] for c in curve],
            [c["success_rate"] for c in curve],
            "o-",
            color="tab:orange",
            label=f"evaluation, {episodes} fixed poses (deterministic)",
        )
    ax.axhline(before, color="gray", ls="--", label=f"pre-trained: {before:.0%}")
    ax.axvline(warmup, color="k", ls=":", label=f"end of warmup (K={warmup})")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"WSRL on simulated peg insertion: {before:.0%} -> {after:.0%}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / "learning_curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
