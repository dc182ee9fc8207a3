"""The study's statistics and claim verdicts, against hand-computed values."""

import numpy as np
import pytest

from learner.study_results import (
    Claim,
    Comparison,
    auc,
    bootstrap_ci,
    evaluate_claim,
    judge,
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


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_agreement():
    mean, lo, hi = bootstrap_ci([0.2, 0.4, 0.6, 0.8, 1.0])
    assert mean == pytest.approx(0.6) and 0.2 <= lo < mean < hi <= 1.0
    # the bootstrap of the mean of 5 values has sd close to the sample sd / sqrt(5) (~0.14 here):
    # a 95% interval about +-1.96 of that wide, within resampling noise
    assert hi - lo == pytest.approx(2 * 1.96 * np.std([0.2, 0.4, 0.6, 0.8, 1.0]) / np.sqrt(5), rel=0.15)
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))
    assert bootstrap_ci([0.3]) == (0.3, 0.3, 0.3)  # one seed: no spread to estimate


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
    assert verdict(["holds", "holds"]) == "reproduced"
    assert verdict(["holds", "unclear"]) == "partial"
    assert verdict(["holds", "contradicted"]) == "not reproduced"
    assert verdict(["unclear", "unclear"]) == "inconclusive"


def test_a_claim_from_results_and_its_markdown():
    results = {
        "tasks": {
            "peg": {
                "wsrl": {str(s): _summary([0.2, 0.9 + 0.02 * s]) for s in range(3)},
                "cql": {str(s): _summary([0.2, 0.1 * s]) for s in range(3)},
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
    # final differences per seed: 0.9 - 0, 0.92 - 0.1, 0.94 - 0.2 -> mean 0.82
    assert first["difference"] == pytest.approx(0.82) and first["pairs"] == 3 and first["outcome"] == "holds"
    assert missing["missing"] and missing["outcome"] == "unclear"
    assert res["verdict"] == "partial"
    md = results_markdown(results, [claim], "# study")
    assert "| peg | `wsrl` | 3 | 0.92 [0.90, 0.94] |" in md
    assert "+0.82 [" in md and "| not run |" in md and "partial" in md
