"""The comparison statistics against textbook values and scipy, and the decision rule's error rate."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stage2_assets.stats.comparison import (
    INSUFFICIENT,
    KEEP,
    PROMOTE,
    compare,
    day_block_bootstrap_ci,
    mcnemar_exact,
)

RULE = {
    "significance_level": 0.05,
    "min_improvement": 0.01,
    "min_samples": 100,
    "bootstrap_samples": 500,
}


def test_mcnemar_exact_matches_the_textbook_example():
    # Agresti's example: 10 discordant pairs one way, 2 the other -> p = 2 * P(X <= 2 | n=12, 1/2)
    cand = np.array([True] * 10 + [False] * 2 + [True] * 30)
    prod = np.array([False] * 10 + [True] * 2 + [True] * 30)
    p, b, c = mcnemar_exact(cand, prod)
    assert (b, c) == (10, 2)
    assert p == pytest.approx(2 * sum(stats.binom.pmf(k, 12, 0.5) for k in range(3)))
    assert p == pytest.approx(0.0386, abs=1e-4)


def test_mcnemar_without_discordant_pairs_is_one():
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same) == (1.0, 0, 0)


def test_bootstrap_interval_is_reproducible_and_covers_the_mean():
    rng = np.random.default_rng(1)
    days = np.repeat(np.arange(50), 20)
    diff = rng.normal(0.05, 1, 1000)
    first = day_block_bootstrap_ci(days, diff, 0.95, 2000, seed=3)
    assert first == day_block_bootstrap_ci(days, diff, 0.95, 2000, seed=3)
    assert first[0] < diff.mean() < first[1]
    assert first[1] - first[0] == pytest.approx(2 * 1.96 * diff.std() / np.sqrt(1000), rel=0.25)


def _paired(rng, days=20, symbols=25, cand_edge=0.0, prod_edge=0.0):
    n = days * symbols
    label = rng.integers(0, 2, n)

    def model(edge):
        right = rng.random(n) < 0.5 + edge
        direction = np.where(right, label, 1 - label)
        return np.where(
            direction == 1, 0.5 + rng.uniform(0.01, 0.2, n), 0.5 - rng.uniform(0.01, 0.2, n)
        )

    return pd.DataFrame(
        {
            "date": np.repeat(pd.bdate_range("2025-01-01", periods=days), symbols),
            "label": label,
            "fwd_return": np.where(label == 1, 0.01, -0.01),
            "prob_candidate": model(cand_edge),
            "prob_production": model(prod_edge),
        }
    )


def test_a_clearly_better_candidate_is_promoted_and_the_statistics_agree():
    result = compare(_paired(np.random.default_rng(0), days=30, symbols=40, cand_edge=0.12), **RULE)
    assert result.decision == PROMOTE
    assert result.accuracy_diff > 0.05 and result.ci[0] > 0
    assert result.p_mcnemar < 0.001 and result.logloss_diff > 0 and result.strategy_return_diff > 0


def test_a_worse_candidate_is_kept_out():
    result = compare(_paired(np.random.default_rng(0), days=30, symbols=40, prod_edge=0.12), **RULE)
    assert result.decision == KEEP and "worse" in result.reason


def test_thin_or_missing_outcomes_decide_insufficient_data():
    data = _paired(np.random.default_rng(0), days=3, symbols=20, cand_edge=0.3)
    assert compare(data, **RULE).decision == INSUFFICIENT  # 60 rows < 100
    data = _paired(np.random.default_rng(0), cand_edge=0.3)
    data.loc[data.index[:450], "label"] = np.nan  # outcomes not in yet
    result = compare(data, **RULE)
    assert result.decision == INSUFFICIENT and result.rows == 50
    assert compare(data.iloc[0:0], **RULE).decision == INSUFFICIENT


def test_a_tie_is_kept():
    data = _paired(np.random.default_rng(0))
    data["prob_candidate"] = data["prob_production"]
    result = compare(data, **RULE)
    assert result.decision == KEEP and "tie" in result.reason and result.p_mcnemar == 1.0


def test_identical_models_are_falsely_promoted_at_most_at_the_significance_level():
    promotions = sum(
        compare(_paired(np.random.default_rng(seed), days=10, symbols=40), **RULE).decision
        == PROMOTE
        for seed in range(300)
    )
    assert promotions / 300 <= 0.05  # promote needs p < 0.05 and a positive gain: ~2.5% expected
