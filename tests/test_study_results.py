"""The study's statistics and claim verdicts, against hand-computed values."""

import numpy as np
import pytest

from learner.study.results import (
    Claim,
    Comparison,
    auc,
    evaluate_claim,
    judge,
    mean_ci,
    paired_difference,
    results_markdown,
    verdict,
)


def _summary(rates):
    curve = [{"env_steps": 10 * (i + 1), "success_rate": r} for i, r in enumerate(rates)]
    return {"curve": curve, "final_success_rate": rates[-1]}


def test_auc_is_the_mean_success_over_evaluations():
    assert auc(_summary([0.0, 0.5, 1.0, 1.0])["curve"]) == pytest.approx(0.625)
    assert auc([]) == 0.0


def test_the_t_interval_by_hand():
    # 0.2 .. 1.0: mean 0.6, sd (n - 1) 0.31623, se 0.14142; t(0.975, 4 df) = 2.77645 -> +-0.39265
    mean, lo, hi = mean_ci([0.2, 0.4, 0.6, 0.8, 1.0])
    assert (mean, lo, hi) == (pytest.approx(0.6), pytest.approx(0.20735, abs=1e-5), pytest.approx(0.99265, abs=1e-5))
    # three seeds: t(0.975, 2 df) = 4.30265, far wider than the min-max range a bootstrap gives
    mean, lo, hi = mean_ci([0.5, 0.6, 0.7])
    assert (lo, hi) == (
        pytest.approx(0.6 - 4.30265 * 0.1 / np.sqrt(3), abs=1e-5),
        pytest.approx(0.6 + 0.248414, abs=1e-5),
    )
    assert mean_ci([0.5, 0.6, 0.7], bounds=(0.0, 0.75))[2] == 0.75  # a success rate stays in its range
    assert mean_ci([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))
    assert mean_ci([0.3]) == (0.3, 0.3, 0.3)  # one seed: no spread to estimate


def test_paired_difference_uses_only_common_seeds():
    mean, lo, hi, n = paired_difference({"0": 1.0, "1": 0.8, "2": 0.9}, {"0": 0.5, "1": 0.3, "9": 0.0})
    assert n == 2 and mean == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no seed"):
        paired_difference({"0": 1.0}, {"1": 1.0})


def test_the_rules_for_each_direction():
    g, less, eq = (
        Comparison("a", "b", "t"),
        Comparison("a", "b", "t", direction="less"),
        Comparison("a", "b", "t", direction="equal"),
    )
    assert [judge(g, 0.1, 0.3), judge(g, -0.1, 0.3), judge(g, -0.3, -0.1)] == ["holds", "unclear", "contradicted"]
    assert [judge(less, -0.3, -0.1), judge(less, -0.1, 0.2), judge(less, 0.1, 0.2)] == [
        "holds",
        "unclear",
        "contradicted",
    ]
    assert [judge(eq, -0.05, 0.08), judge(eq, -0.05, 0.3), judge(eq, 0.15, 0.3)] == [
        "holds",
        "unclear",
        "contradicted",
    ]
    ni = Comparison("a", "b", "t", direction="noninferior", margin=0.05)  # "matches or beats"
    assert [judge(ni, -0.04, 0.2), judge(ni, -0.2, 0.1), judge(ni, -0.3, -0.06)] == ["holds", "unclear", "contradicted"]
    assert judge(ni, 0.0, 0.0) == "holds"  # a 30/30 tie matches (it was "unclear" as "strictly better")
    assert verdict(["holds", "holds"]) == "reproduced"
    assert verdict(["too few pairs"]) == "inconclusive"
    assert verdict(["holds", "unclear"]) == "partial"
    assert verdict(["holds", "contradicted"]) == "not reproduced"
    assert verdict(["unclear", "unclear"]) == "inconclusive"


def test_a_claim_from_results_and_its_markdown():
    results = {
        "tasks": {
            "peg": {
                "wsrl": {str(s): _summary([0.2, 0.9 + 0.02 * s]) for s in range(5)},
                "cql": {str(s): _summary([0.2, 0.1 * s]) for s in range(5)},
            }
        }
    }
    claim = Claim(
        "C5",
        "WSRL beats the no-retention baselines",
        "Fig. 7",
        (Comparison("wsrl", "cql", "peg", "final"), Comparison("wsrl", "iql", "peg", "final")),
    )
    res = evaluate_claim(claim, results)
    first, missing = res["tests"]
    # final differences per seed: 0.9 - 0, 0.92 - 0.1, ..., 0.98 - 0.4 -> mean 0.74
    assert first["difference"] == pytest.approx(0.74) and first["pairs"] == 5 and first["outcome"] == "holds"
    assert missing["missing"] and missing["outcome"] == "unclear"
    assert res["verdict"] == "partial"
    md = results_markdown(results, [claim], "# study")
    # final 0.90 .. 0.98: mean 0.94, sd 0.031623, t(0.975, 4) 2.77645 -> +-0.03927
    assert "| peg | `wsrl` | 5 | 0.94 [0.90, 0.98] |" in md
    assert "+0.74 [" in md and "| not run |" in md and "partial" in md
    three = {"tasks": {"peg": {m: dict(list(v.items())[:3]) for m, v in results["tasks"]["peg"].items()}}}
    assert evaluate_claim(claim, three)["tests"][0]["outcome"] == "too few pairs"  # 3 pairs never hold
