"""The paper's claims as paired tests, fixed in code before any study ran (docs/study.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from learner.study.suites import TASKS


def claims(task: str, weak_task: str | None = "peg_noexpert", tag: str = "") -> list[Any]:
    """The paper's claims (its findings C1-C16, each written out below with the figure it rests on)
    as paired tests on ``task``, fixed before any study ran; C14 when ``weak_task`` (``task`` with a weaker pre-training) is
    given. ``tag`` marks the claims' ids (a second task). Claims on diagnostics (C2, C3, C6) are
    shown as figures, not tested."""
    from learner.study.results import NONINFERIORITY_MARGIN, Claim, Comparison

    def beats(a: str, b: str, metric: str = "auc") -> Comparison:
        return Comparison(a, b, task, metric)  # type: ignore[arg-type]

    def matches(a: str, b: str, metric: str = "auc") -> Comparison:
        """Matches or beats: non-inferiority within the margin fixed in study_results."""
        return Comparison(a, b, task, metric, "noninferior", NONINFERIORITY_MARGIN)  # type: ignore[arg-type]

    found = [
        Claim(
            "C1/C5",
            "WSRL beats the offline methods continued without retention, JSRL and SAC(fast)",
            "Figs 2, 7",
            (
                beats("wsrl", "calql"),
                beats("wsrl", "cql"),
                beats("wsrl", "iql"),
                beats("wsrl", "jsrl"),
                beats("wsrl", "sac_fast"),
            ),
        ),
        Claim("C4", "RLPD from scratch beats Cal-QL with retention", "Fig. 6", (beats("rlpd", "calql_retain"),)),
        Claim(
            "C7/C11",
            "WSRL without retention matches or beats methods that keep the data (RLPD; Table 1 at equal env steps)",
            "Fig. 9, Table 1",
            (matches("wsrl", "rlpd"), matches("wsrl", "rlpd", "final"), matches("wsrl", "calql_retain")),
        ),
        Claim("C8", "warmup is critical", "Figs 10, 19", (beats("wsrl", "wsrl_no_warmup"),)),
        Claim(
            "C9",
            "a non-pessimistic online algorithm: SAC beats Cal-QL online",
            "Fig. 12",
            (beats("wsrl", "wsrl_calql_online"),),
        ),
        Claim(
            "C10",
            "initialising the policy is crucial; the Q-function helps less",
            "Figs 12, 13",
            (beats("wsrl", "wsrl_q_only"), beats("wsrl", "wsrl_no_init")),
        ),
        Claim(
            "C12",
            "random-action warmup is no better than none; dataset warmup and retention are no better than WSRL",
            "Figs 18, 25, 26",
            (
                Comparison("wsrl_random_warmup", "wsrl_no_warmup", task, "auc", "equal"),
                beats("wsrl", "wsrl_dataset_warmup"),
                Comparison("wsrl_retain", "wsrl", task, "auc", "equal"),
            ),
        ),
    ]
    if TASKS[task].collect_kind == "guided":
        found.append(
            Claim(
                "T1",
                "with the same guided-run buffer, WSRL (no data kept) ends above RLPD (the data kept)",
                "Table 1",
                (beats("wsrl", "rlpd", "final"), beats("wsrl", "rlpd_eager", "final")),
            )
        )
    if weak_task is not None:
        found.append(
            Claim(
                "C14",
                "WSRL cannot rescue a failed pre-training",
                "Fig. 30",
                (Comparison("wsrl", "wsrl", weak_task, "final", "less", baseline_task=task),),
            )
        )
    return [replace(c, id=f"{c.id} ({tag})") for c in found] if tag else found
