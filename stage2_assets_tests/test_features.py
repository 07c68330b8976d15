"""The feature set: known values, the look-back rule, and the proof of no look-ahead."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from stage2_assets.market.simulator import MarketSpec, RegimeSpec, simulate_bars
from stage2_assets.ml.features import FEATURE_COLUMNS, LOOKBACK_BARS, compute_features

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
    assert last["label"] == 1 and last["fwd_return"] == pytest.approx(np.log(1.01))


def test_label_is_the_direction_over_the_horizon(bars):
    table = compute_features(bars, horizon=5)
    aaa = bars[bars["symbol"] == "SIM000"].reset_index(drop=True)
    row = table[table["symbol"] == "SIM000"].iloc[10]
    i = aaa.index[aaa["date"] == row["date"]][0]
    assert row["fwd_return"] == pytest.approx(np.log(aaa.loc[i + 5, "close"] / aaa.loc[i, "close"]))
    assert row["label_date"] == aaa.loc[i + 5, "date"]
    assert table.groupby("symbol").tail(5)["label"].isna().all()


def test_changing_the_future_never_moves_past_features(bars):
    """No look-ahead: alter every bar after t, and no feature at or before t may change."""
    cut = pd.Timestamp("2023-08-15")
    before = compute_features(bars)
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
    after = compute_features(altered)
    key = ["symbol", "date"]
    past_before = before[before["date"] <= cut].set_index(key).sort_index()
    past_after = after[after["date"] <= cut].set_index(key).sort_index()
    pd.testing.assert_frame_equal(
        past_before[list(FEATURE_COLUMNS)], past_after[list(FEATURE_COLUMNS)]
    )
    # Labels need the future: the last label before the cut may change, and that is all.
    changed = (past_before["fwd_return"] - past_after["fwd_return"]).abs() > 1e-12
    assert changed.groupby(level="symbol").sum().le(1).all()
    assert changed.sum() > 0  # the test really altered what came after t
