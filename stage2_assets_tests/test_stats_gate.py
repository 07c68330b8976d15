"""The promotion gate: reference values of its statistics, its error on a correlated market, its
stepping through the days."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from stage2_assets.stats.comparison import mcnemar_exact
from stage2_assets.stats.gate import (
    INCONCLUSIVE,
    INSUFFICIENT,
    KEEP,
    PROMOTE,
    REJECT,
    GateRule,
    daily_gains,
    dm_statistic,
    evaluate_gate,
    long_run_variance,
)
from stage2_assets.stats.sequential import boundaries
from stage2_assets.stats.streams import between_day_share, paired_streams


def _binomial_upper(hits: int, trials: int, level: float = 0.99) -> float:
    return float(stats.binomtest(hits, trials).proportion_ci(level, method="exact").high)


def test_boundary_of_a_single_look_is_the_fixed_sample_quantile():
    (only,) = boundaries(0.025, 1, 3.0)
    assert only == pytest.approx(stats.norm.isf(0.025), abs=2e-3)


def test_boundaries_spend_exactly_alpha_over_all_looks():
    alpha, looks, first = 0.05, 12, 3
    bounds = np.array(boundaries(alpha, looks, 2.0, first))
    rng = np.random.default_rng(11)
    paths = np.cumsum(rng.standard_normal((200_000, looks)), axis=1) / np.sqrt(
        np.arange(1, looks + 1)
    )
    crossed = (paths[:, first - 1 :] >= bounds).any(axis=1)
    # Monte Carlo standard error at 200k paths is 0.0005
    assert crossed.mean() == pytest.approx(alpha, abs=0.002)
    # and each look spends its share of alpha * t**rho
    first_cross = np.argmax(paths[:, first - 1 :] >= bounds, axis=1)
    by_look6 = (crossed & (first_cross <= 6 - first)).mean()
    assert by_look6 == pytest.approx(alpha * (6 / looks) ** 2, abs=0.0015)


def test_long_run_variance_is_statsmodels_newey_west_or_the_plain_variance():
    rng = np.random.default_rng(3)
    e = rng.standard_normal(60)
    x = e + 0.6 * np.r_[0.0, e[:-1]]  # positively autocorrelated: HAC above the plain variance
    fit = sm.OLS(x, np.ones_like(x)).fit(
        cov_type="HAC", cov_kwds={"maxlags": 3, "use_correction": False}
    )
    hac = float(fit.bse[0] ** 2 * len(x))
    assert hac > x.var(ddof=1)
    assert long_run_variance(x) == pytest.approx(hac, rel=1e-9)
    alternating = np.tile([1.0, -1.0], 30)  # negative autocorrelation: HAC below, plain kept
    assert long_run_variance(alternating) == pytest.approx(alternating.var(ddof=1))


def test_dm_statistic_applies_the_hln_correction_and_t_with_n_minus_1_df():
    x = np.array([0.012, -0.004, 0.020, 0.007, 0.015, -0.002, 0.011, 0.009, 0.004, 0.016])
    n = len(x)
    stat, se, p = dm_statistic(x, min_improvement=0.001)
    dm = (x.mean() - 0.001) / np.sqrt(long_run_variance(x) / n)
    assert stat == pytest.approx(dm * np.sqrt((n - 1) / n), rel=1e-12)
    assert p == pytest.approx(stats.t.sf(stat, n - 1), rel=1e-9)
    assert se == pytest.approx((x.mean() - 0.001) / stat)


def test_daily_gains_average_each_day_over_its_symbols():
    paired = pd.DataFrame(
        {
            "date": ["2024-01-02"] * 2 + ["2024-01-03"] * 2,
            "symbol": ["A", "B", "A", "B"],
            "label": [1, 0, 1, 1],
            "fwd_return": [0.01, -0.01, 0.02, 0.01],
            "prob_candidate": [0.6, 0.4, 0.7, 0.5],
            "prob_production": [0.5, 0.5, 0.5, 0.5],
        }
    )
    days = daily_gains(paired, "brier")
    # day 1: (0.25 - 0.16 + 0.25 - 0.16) / 2; day 2: ((0.25 - 0.09) + (0.25 - 0.25)) / 2
    assert days["gain"].tolist() == pytest.approx([0.09, 0.08])
    assert days["rows"].tolist() == [2, 2]
    assert days["accuracy_gain"].tolist() == pytest.approx([0.5, 0.5])


def test_simulated_streams_have_the_configured_day_structure():
    frame = paired_streams(1, 250, 50, market_share=0.3, view_share=0.12, seed=5)
    labels_between = between_day_share(frame["label"], frame["date"])
    logit = np.log(frame["prob_candidate"] / (1 - frame["prob_candidate"]))
    views_between = between_day_share(logit, frame["date"])
    # the label's between-day share of a 30% factor is about 0.19 (sign of a correlated normal)
    assert 0.14 < labels_between < 0.25
    assert 0.09 < views_between < 0.17
    edge = paired_streams(40, 40, 50, accuracy_edge=0.09, seed=6)
    hits_c = ((edge["prob_candidate"] > 0.5) == (edge["label"] == 1)).mean()
    hits_p = ((edge["prob_production"] > 0.5) == (edge["label"] == 1)).mean()
    assert hits_c - hits_p == pytest.approx(0.09, abs=0.01)


def test_equal_models_on_a_correlated_market_are_promoted_at_most_at_alpha():
    """The null on correlated rows: rows of one day move together, the gate must still hold alpha.

    McNemar's row-level test on the same streams is far too bold, which is why it no longer decides.
    """
    streams = 300
    frame = paired_streams(streams, 40, 50, seed=21)
    rule = GateRule(alpha=0.05, first_look=5, max_looks=40)
    promoted = 0
    mcnemar_hits = 0
    for _, stream in frame.groupby("comparison"):
        promoted += evaluate_gate(stream, rule).decision == PROMOTE
        ok_c = (stream["prob_candidate"] > 0.5) == (stream["label"] == 1)
        ok_p = (stream["prob_production"] > 0.5) == (stream["label"] == 1)
        p, b, c = mcnemar_exact(ok_c.to_numpy(), ok_p.to_numpy())
        mcnemar_hits += p / 2 < 0.05 and b > c
    assert promoted / streams <= _binomial_upper(int(0.05 * streams), streams)
    assert promoted / streams < 0.08
    assert mcnemar_hits / streams > 0.10


def test_a_regime_sized_edge_is_promoted_within_the_maximum_shadow():
    frame = paired_streams(30, 40, 50, accuracy_edge=0.14, seed=8)
    rule = GateRule(alpha=0.1 / 52, first_look=5, max_looks=40)
    results = [evaluate_gate(s, rule) for _, s in frame.groupby("comparison")]
    promoted = [r for r in results if r.decision == PROMOTE]
    assert len(promoted) >= 27
    assert all(r.lower_bound > 0 and r.days <= 40 and r.effect > 0 for r in promoted)


def test_a_worse_candidate_is_rejected_for_futility():
    frame = paired_streams(1, 40, 50, accuracy_edge=0.14, seed=9)
    flipped = frame.rename(
        columns={"prob_candidate": "prob_production", "prob_production": "prob_candidate"}
    )
    result = evaluate_gate(flipped, GateRule(alpha=0.002, first_look=5, max_looks=40))
    assert result.decision == REJECT and result.upper_bound < 0 and result.decided_on is not None


def test_the_first_crossing_stands_and_later_days_are_not_used():
    frame = paired_streams(1, 40, 50, accuracy_edge=0.14, seed=10)
    rule = GateRule(alpha=0.002, first_look=5, max_looks=40)
    full = evaluate_gate(frame, rule)
    assert full.decision == PROMOTE
    cut = frame[pd.to_datetime(frame["date"]) <= pd.Timestamp(full.decided_on)]
    assert evaluate_gate(cut, rule).to_dict() == full.to_dict()


def test_thin_shadows_are_insufficient_then_inconclusive_then_kept():
    frame = paired_streams(1, 40, 50, seed=12)
    rule = GateRule(alpha=0.002, first_look=5, max_looks=12, futility_level=0.001)
    dates = sorted(frame["date"].unique())
    assert evaluate_gate(frame[frame["date"] < dates[4]], rule).decision == INSUFFICIENT
    assert evaluate_gate(frame[frame["date"] < dates[8]], rule).decision == INCONCLUSIVE
    ended = evaluate_gate(frame, rule)
    assert ended.decision == KEEP and ended.days == 12 and "inconclusive" in ended.reason
