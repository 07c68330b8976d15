"""Replay evidence: IC as scipy computes it, a book that is dollar-neutral, Sharpe for the horizon,
and paired-difference intervals that hold their level on a market with a common factor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stage2_assets.stats import evidence
from stage2_assets.stats.streams import paired_streams


def _market(days: int = 60, symbols: int = 20, seed: int = 0, factor: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2024-01-02", periods=days)
    frame = pd.MultiIndex.from_product(
        [dates, [f"S{i:02d}" for i in range(symbols)]], names=["date", "symbol"]
    ).to_frame(index=False)
    market = np.repeat(rng.normal(0, factor, days), symbols)
    signal = rng.normal(0, 1, len(frame))
    frame["fwd_return"] = market + 0.003 * signal + rng.normal(0, 0.01, len(frame))
    frame["prob_up"] = 1 / (1 + np.exp(-signal))
    frame["label"] = (frame["fwd_return"] > 0).astype(int)
    return frame


def test_daily_ic_and_rank_ic_are_pearson_and_spearman_across_the_days_symbols():
    rows = _market()
    ic = evidence.daily_ic(rows)
    assert len(ic) == 60
    for day in rows["date"].unique()[:5]:
        part = rows[rows["date"] == day]
        assert ic.loc[day, "ic"] == pytest.approx(
            stats.pearsonr(part["prob_up"], part["fwd_return"])[0]
        )
        assert ic.loc[day, "rank_ic"] == pytest.approx(
            stats.spearmanr(part["prob_up"], part["fwd_return"])[0]
        )
    summary = evidence.ic_summary(ic)
    assert summary["ic"] == pytest.approx(ic["ic"].mean())
    assert summary["icir"] == pytest.approx(ic["ic"].mean() / ic["ic"].std(ddof=1))
    assert summary["ic"] > 0.1  # the planted signal


def test_the_book_is_dollar_neutral_so_the_market_alone_earns_it_nothing():
    rows = _market()
    # every symbol moves with the market only: a dollar-neutral book earns exactly 0 before costs
    only_market = rows.assign(fwd_return=rows.groupby("date")["fwd_return"].transform("mean"))
    daily = evidence.book(only_market, 0.2, cost_bps=0.0)
    assert np.abs(daily["gross"]).max() < 1e-12
    # with the signal, its beta to the equal-weight market is near 0, and a long-only book's is 1
    daily = evidence.book(rows, 0.2, cost_bps=0.0)
    assert abs(evidence.beta(daily)) < 0.1
    long_only = daily.assign(gross=daily["market"])
    assert evidence.beta(long_only) == pytest.approx(1.0)


def test_turnover_and_costs():
    rows = _market(days=10)
    # the same ranking every day: the book is bought once (gross 1) and then held
    fixed = rows.assign(prob_up=rows["symbol"].str[1:].astype(int) / 100)
    daily = evidence.book(fixed, 0.25, cost_bps=10.0)
    assert daily["turnover"].iloc[0] == pytest.approx(1.0)
    assert daily["turnover"].iloc[1:].abs().max() == pytest.approx(0.0)
    assert (daily["gross"] - daily["ret"]).iloc[0] == pytest.approx(10 / 10_000)
    # top 25% of 20 symbols: 5 long at 0.1 each, 5 short at 0.1 each
    longs = fixed[fixed["date"] == fixed["date"].min()].nlargest(5, "prob_up")
    shorts = fixed[fixed["date"] == fixed["date"].min()].nsmallest(5, "prob_up")
    expected = (
        0.1 * np.expm1(longs["fwd_return"]).sum() - 0.1 * np.expm1(shorts["fwd_return"]).sum()
    )
    assert daily["gross"].iloc[0] == pytest.approx(expected)


def test_sharpe_is_annualized_for_the_label_horizon():
    daily = np.random.default_rng(1).normal(0.001, 0.01, 300)
    one = evidence.sharpe(daily, 1)
    assert one == pytest.approx(np.sqrt(252) * daily.mean() / daily.std(ddof=1))
    assert evidence.sharpe(daily, 5) == pytest.approx(one / np.sqrt(5))


def test_a_difference_of_an_arm_with_itself_is_zero_and_a_planted_edge_is_found():
    rows = _market(days=120)
    days = evidence.day_table(rows, 0.5, evidence.book(rows, 0.2, 5.0))
    same = evidence.paired_difference(days, days, horizon=1, samples=300, seed=0)
    for figures in same.values():
        assert figures["estimate"] == 0.0 and figures["ci"] == [0.0, 0.0]
    coin = rows.assign(prob_up=np.random.default_rng(3).random(len(rows)))
    other = evidence.day_table(coin, 0.5, evidence.book(coin, 0.2, 5.0))
    edge = evidence.paired_difference(days, other, horizon=1, samples=500, seed=0)
    assert edge["accuracy"]["ci"][0] > 0
    assert evidence.verdict("accuracy", edge["accuracy"]["ci"]) == "ahead"
    assert evidence.verdict("log_loss", edge["log_loss"]["ci"]) == "ahead"  # lower log loss
    # the estimate is the plain difference of the arms' accuracies on the same rows
    acc = lambda r: ((r["prob_up"] > 0.5) == (r["label"] == 1)).mean()  # noqa: E731
    assert edge["accuracy"]["estimate"] == pytest.approx(acc(rows) - acc(coin))


def test_block_picks_are_circular_runs_of_days():
    picks = evidence.block_picks(10, 4, 3, seed=0)
    assert picks.shape == (4, 10)
    steps = np.diff(picks[:, :3], axis=1) % 10
    assert (steps == 1).all()


def test_paired_intervals_hold_their_level_on_a_market_with_a_common_factor():
    """200 markets (30% of return variance in a common factor) where two models have equal skill:
    the 95% interval of the accuracy difference covers 0 in about 95% of them (binomial band)."""
    streams = paired_streams(200, 60, 30, accuracy_edge=0.0, market_share=0.3, seed=4)
    covered = 0
    for _, part in streams.groupby("comparison"):
        a = evidence.day_table(part.assign(prob_up=part["prob_candidate"]), 0.5, None)
        b = evidence.day_table(part.assign(prob_up=part["prob_production"]), 0.5, None)
        ci = evidence.paired_difference(
            a.assign(ret=0.0),
            b.assign(ret=0.0),
            horizon=1,
            samples=400,
            seed=0,
            metrics=("accuracy",),
        )["accuracy"]["ci"]
        covered += ci[0] <= 0 <= ci[1]
    assert 0.89 <= covered / 200 <= 0.99


def test_too_few_days_give_the_estimate_without_an_interval():
    rows = _market(days=15)
    days = evidence.day_table(rows, 0.5, evidence.book(rows, 0.2, 5.0))
    figures = evidence.paired_difference(days, None, horizon=1, samples=200, seed=0)
    assert figures["accuracy"]["ci"] is None and figures["accuracy"]["estimate"] > 0
    assert evidence.verdict("accuracy", None) == "no interval (too few days)"
