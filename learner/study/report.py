"""A finished study's ``results.md`` (tables with t-intervals, the claims) and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from learner.study.claims import claims
from learner.study.suites import TASKS


def write_results(results: dict[str, Any], out: Path, suite_name: str) -> None:
    """``results.md`` (tables with intervals, the claims) and a figure per task."""
    from learner.study.results import results_markdown

    ran = results["tasks"]
    plots = [plot_task(results, task, out / f"results_{task}.png") for task in ran]
    for task, by_method in ran.items():
        for group, (title, members) in FIGURES.items():
            shown = [m for m in members if m in by_method]
            if len(shown) >= 2:
                plots.append(plot_task(results, task, out / f"results_{task}_{group}.png", shown, title))
    # Fig. 30: each method on the task and on its weak-pre-training variant, side by side
    for weak, strong in ((t, TASKS[t].weak_of) for t in ran if TASKS[t].weak_of in ran):
        both = {f"{m} ({t})": ran[t][m] for m in ran[weak] if m in ran[strong] for t in (strong, weak)}
        if both:
            key = f"{weak}_vs_{strong}"
            title = "weak pre-training (paper Fig. 30)"
            plots.append(plot_task({"tasks": {key: both}}, key, out / f"results_{key}.png", title=title))
    # The claims on every task that ran (C14 on a task that has a weak variant), the first task's untagged.
    tested = [t for t in ran if TASKS[t].weak_of is None] or list(ran)[:1] or ["peg"]
    weak_of = {spec.weak_of: name for name, spec in TASKS.items() if spec.weak_of}
    rows = [c for i, t in enumerate(tested) for c in claims(t, weak_of.get(t), "" if i == 0 else t)]
    header = (
        f"# Study `{suite_name}`\n\nMade by `launch/study.sh --suite {suite_name}` (agent overrides: "
        f"{results.get('overrides') or 'none'}). Figures: " + ", ".join(f"`{p.name}`" for p in plots) + "."
    )
    (out / "results.md").write_text(results_markdown(results, rows, header))


# Figures that mirror the paper's: the methods each compares (those that ran are drawn).
FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "no_retention": ("no retention (paper Figs 2, 7)", ("wsrl", "calql", "cql", "iql", "jsrl", "sac_fast")),
    "retention": (
        "methods that keep the data (Figs 6, 9)",
        ("wsrl", "rlpd", "wsrl_retain", "calql_retain", "cql_retain", "iql_retain"),
    ),
    "warmup": (
        "warmup on/off and kinds (Figs 10, 18, 25)",
        ("wsrl", "wsrl_no_warmup", "wsrl_random_warmup", "wsrl_dataset_warmup"),
    ),
    "k": ("the warmup's length K (Fig. 19)", ("wsrl_no_warmup", "wsrl_k500", "wsrl_k1000", "wsrl")),
    "init": (
        "initialisation and the online algorithm (Figs 12, 13)",
        ("wsrl", "wsrl_policy_only", "wsrl_q_only", "wsrl_no_init", "wsrl_calql_online"),
    ),
    "table1": ("Table 1 analogue: WSRL vs RLPD vs SAC(fast) at equal env steps", ("wsrl", "rlpd", "sac_fast")),
}


def plot_task(
    results: dict[str, Any], task: str, path: Path, methods: list[str] | None = None, title: str = ""
) -> Path:
    """Success (mean and t-interval band over seeds) against env steps and against critic steps
    (the paper's Figs 7 and Table 1), Q minus the return that followed on the evaluation rollouts
    (C3 as a bias), Q and TD error on the held-out offline probe (Figs 4/11), and the policy's
    distance from the pre-trained one, KL(pi_pre || pi) and the entropy-free KL of the means (Fig. 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learner.study.results import mean_ci

    panels = [
        ("success_rate", "success rate", "env_steps"),
        ("success_rate", "success rate against critic steps", "grad_steps"),
        ("diag/eval/q_minus_return", "Q minus the return that followed (evaluation)", "env_steps"),
        ("diag/offline_probe/q", "Q on held-out offline data", "env_steps"),
        ("diag/offline_probe/td_error", "TD error on held-out offline data", "env_steps"),
        ("diag/online_probe/kl_policy", "KL(pi_pre || pi) on early online states", "env_steps"),
        ("diag/online_probe/kl_means", "KL of the means (unit covariance), early online states", "env_steps"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(22, 8))
    axes.flat[-1].axis("off")
    for ax, (key, panel_title, x_key) in zip(axes.flat, panels):
        for name, seeds in results["tasks"][task].items():
            if methods is not None and name not in methods:
                continue
            curves = [s["curve"] for s in seeds.values()]
            # critic steps differ between seeds only if a schedule does: the first seed's are drawn
            x = [c.get(x_key, np.nan) for c in curves[0]]
            ys = [[c.get(key, np.nan) for c in curve] for curve in curves]
            stats = [mean_ci(col) if not np.isnan(col).any() else (np.nan,) * 3 for col in np.array(ys).T]
            mean, lo, hi = (np.array(v) for v in zip(*stats))
            (line,) = ax.plot(x, mean, marker="o", ms=3, label=name)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("env steps (warmup included)" if x_key == "env_steps" else "critic steps")
        if "kl" in key:  # one method's KL can be orders of magnitude above the rest
            ax.set_yscale("symlog", linthresh=1.0)
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{task}{': ' + title if title else ''}; mean over seeds, 95% t-interval band")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
