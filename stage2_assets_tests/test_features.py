"""The feature set: known values, the look-back rule, and the proof of no look-ahead."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from stage2_assets.market.simulator import MarketSpec, RegimeSpec, simulate_bars
from stage2_assets.ml.features import FEATURE_COLUMNS, LOOKBACK_BARS, LabelRule, compute_features

SPEC = MarketSpec(
    seed=5,
    num_symbols=3,
    start_date=dt.date(2023, 1, 3),
    regimes=[RegimeSpec(dt.date(2023, 1, 3), 0.0002, 0.015, 0.1)],
)


@pytest.fixture(scope="module")
def bars():
    return simulate_bars(SPEC, SPEC.symbols, dt.date(2023, 12, 29))


def test_feature_names_are_the_design_contract():
    assert FEATURE_COLUMNS == (
        "ret_1d",
        "ret_5d",
        "ret_10d",
        "ret_20d",
        "vol_20d",
        "rsi_14",
        "macd",
        "macd_signal",
        "bb_pct_b",
        "atr_14_pct",
        "sma_ratio_10_50",
        "volume_z_20",
        "stoch_k_14",
        "hl_range",
    )


def test_rows_without_a_full_look_back_are_dropped_not_filled(bars):
    table = compute_features(bars)
    first = table.groupby("symbol")["date"].min()
    sessions = bars.groupby("symbol")["date"].apply(
        lambda d: d.sort_values().iloc[LOOKBACK_BARS - 1]
    )
    assert (first == sessions).all()
    assert len(table) == len(bars) - 3 * (LOOKBACK_BARS - 1)
    assert table[list(FEATURE_COLUMNS)].notna().all().all()


def test_known_values_on_a_hand_made_series():
    n = 60
    close = 100 * 1.01 ** np.arange(n)  # +1% every day
    bars = pd.DataFrame(
        {
            "symbol": "UP",
            "date": pd.bdate_range("2024-01-01", periods=n),
            "open": close,
            "high": close * 1.02,
            "low": close * 0.99,
            "close": close,
            "volume": 1000.0,
        }
    )
    last = compute_features(bars).iloc[-2]
    assert last["ret_1d"] == pytest.approx(np.log(1.01))
    assert last["ret_20d"] == pytest.approx(20 * np.log(1.01))
    assert last["vol_20d"] == pytest.approx(0, abs=1e-12)
    assert last["rsi_14"] == 100.0  # never a down day
    assert last["hl_range"] == pytest.approx(0.03)
    assert last["volume_z_20"] == 0.0  # constant volume
    assert last["sma_ratio_10_50"] == pytest.approx(
        np.mean(close[-11:-1]) / np.mean(close[-51:-1]) - 1
    )
    assert last["stoch_k_14"] == pytest.approx(
        100 * (close[-2] - close[-15] * 0.99) / (close[-2] * 1.02 - close[-15] * 0.99)
    )
    # the tradable label of t needs close(t+2): unknown on the last two rows
    assert pd.isna(last["label"]) and pd.isna(last["fwd_return"])
    labelled = compute_features(bars).iloc[-3]
    assert labelled["label"] == 1 and labelled["fwd_return"] == pytest.approx(np.log(1.01))


def _symbol_rows(bars, table, symbol="SIM000", at=10):
    own = bars[bars["symbol"] == symbol].sort_values("date").reset_index(drop=True)
    row = table[table["symbol"] == symbol].iloc[at]
    return own, row, own.index[own["date"] == row["date"]][0]


def test_label_starts_at_the_next_close_and_spans_the_horizon(bars):
    table = compute_features(bars, LabelRule(horizon_days=5))
    own, row, i = _symbol_rows(bars, table)
    assert row["fwd_return"] == pytest.approx(
        np.log(own.loc[i + 6, "close"] / own.loc[i + 1, "close"])
    )
    assert row["label"] == int(row["fwd_return"] > 0)
    assert row["label_date"] == own.loc[i + 6, "date"]
    assert table.groupby("symbol").tail(6)["label"].isna().all()


def test_next_open_label_runs_from_open_to_open(bars):
    table = compute_features(bars, LabelRule(start="next_open", horizon_days=2))
    own, row, i = _symbol_rows(bars, table)
    assert row["fwd_return"] == pytest.approx(
        np.log(own.loc[i + 3, "open"] / own.loc[i + 1, "open"])
    )
    assert row["label_date"] == own.loc[i + 3, "date"]


def test_excess_direction_takes_the_days_mean_out(bars):
    table = compute_features(bars, LabelRule(kind="excess_direction"))
    labelled = table.dropna(subset=["label"])
    excess = labelled["fwd_return"] - labelled.groupby("date")["fwd_return"].transform("mean")
    assert (labelled["label"] == (excess > 0).astype(int)).all()
    # with three symbols, some day has every return up but not every excess return
    assert (labelled.groupby("date")["label"].mean() < 1).all()
    plain = compute_features(bars).dropna(subset=["label"])
    assert (plain.groupby("date")["label"].mean() == 1).any()


def test_the_label_rule_sets_the_embargo():
    assert LabelRule(horizon_days=1).embargo_days == 2
    assert LabelRule(start="next_open", horizon_days=3).embargo_days == 4
    assert LabelRule(start="close", horizon_days=1).embargo_days == 1  # stores built before


@pytest.mark.parametrize(
    "rule",
    [
        LabelRule(),
        LabelRule(start="next_open", horizon_days=3),
        LabelRule(kind="excess_direction", horizon_days=2),
    ],
    ids=["next_close", "next_open_h3", "excess_h2"],
)
def test_changing_the_future_never_moves_past_features(bars, rule):
    """No look-ahead: alter every bar after t, and no feature at or before t may change; a label
    moves only if its last price lies after t."""
    cut = pd.Timestamp("2023-08-15")
    before = compute_features(bars, rule)
    rng = np.random.default_rng(0)
    altered = bars.copy()
    future = altered["date"] > cut
    scale = rng.uniform(0.5, 2.0, future.sum())
    for column in ("open", "high", "low", "close"):
        altered.loc[future, column] *= scale
    altered.loc[future, "volume"] *= rng.uniform(0.1, 10, future.sum())
    altered = altered[
        ~(future & (altered["date"] > "2023-11-30"))
    ]  # and drop the last weeks entirely
    after = compute_features(altered, rule)
    key = ["symbol", "date"]
    past_before = before[before["date"] <= cut].set_index(key).sort_index()
    past_after = after[after["date"] <= cut].set_index(key).sort_index()
    pd.testing.assert_frame_equal(
        past_before[list(FEATURE_COLUMNS)], past_after[list(FEATURE_COLUMNS)]
    )
    # Labels need the future: exactly those whose last price lies after the cut may change.
    changed = (past_before["fwd_return"] - past_after["fwd_return"]).abs() > 1e-12
    changed |= past_before["label"].astype(float) != past_after["label"].astype(float)
    reaches_past_cut = pd.to_datetime(past_before["label_date"]) > cut
    assert not (changed & ~reaches_past_cut).any()
    assert changed.groupby(level="symbol").sum().le(rule.embargo_days).all()
    assert changed.sum() > 0  # the test really altered what came after t
