"""The figures reported beside the gate's decision, against textbook values and scipy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stage2_assets.stats.comparison import (
    INSUFFICIENT,
    PROMOTE,
    compare,
    day_block_bootstrap_ci,
    mcnemar_exact,
)
from stage2_assets.stats.gate import GateRule
from stage2_assets.stats.streams import paired_streams


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


def test_compare_reports_beside_the_gate_over_the_days_it_used():
    frame = paired_streams(1, 40, 50, accuracy_edge=0.14, seed=10)
    rule = GateRule(alpha=0.002, first_look=5, max_looks=40)
    result = compare(frame, rule, min_samples=100, bootstrap_samples=500, seed=1)
    assert result.decision == PROMOTE
    gate = result.gate
    assert result.days == gate["days"] < 40 and result.rows == gate["rows"] == 50 * gate["days"]
    used = frame[pd.to_datetime(frame["date"]) <= pd.Timestamp(gate["decided_on"])]
    ok_c = (used["prob_candidate"] > 0.5) == (used["label"] == 1)
    ok_p = (used["prob_production"] > 0.5) == (used["label"] == 1)
    assert result.accuracy_diff == pytest.approx(ok_c.mean() - ok_p.mean())
    assert result.ci[0] < result.accuracy_diff < result.ci[1]
    assert result.p_paired == pytest.approx(gate["p_value"])
    again = compare(frame, rule, min_samples=100, bootstrap_samples=500, seed=1)
    assert again.to_dict() == result.to_dict()


def test_thin_data_is_insufficient_never_an_error():
    frame = paired_streams(1, 40, 2, accuracy_edge=0.14, seed=3)
    rule = GateRule(alpha=0.002, first_look=5, max_looks=40)
    assert compare(frame, rule, min_samples=100, bootstrap_samples=200).decision == INSUFFICIENT
    empty = compare(frame.iloc[0:0], rule, min_samples=100, bootstrap_samples=200)
    assert empty.decision == INSUFFICIENT and empty.rows == 0
