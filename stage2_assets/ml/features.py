"""The 14 point-in-time features and the label: the one definition of the feature set.

A feature for date t is computed from bars up to and including t only (rolling windows look back,
exponential averages run forward). Rows without a full look-back (LOOKBACK_BARS bars of the
symbol) are dropped, never filled. The label for t is the direction of the log return from t to
t+h bars of the same symbol; it is the only column that needs the future, and it stays NULL
(with ``label_date``) until that bar exists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURE_COLUMNS: tuple[str, ...] = (
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
LABEL_COLUMNS: tuple[str, ...] = ("label", "fwd_return", "label_date")
# The longest window (SMA 50) decides when a symbol's history is long enough.
LOOKBACK_BARS = 50


def _rolling(grouped, column: str, window: int, how: str) -> pd.Series:
    rolled = getattr(grouped[column].rolling(window, min_periods=window), how)(
        **({"ddof": 0} if how == "std" else {})
    )
    return rolled.reset_index(level=0, drop=True)


def _ewm(frame: pd.DataFrame, column: str, **kwargs) -> pd.Series:
    return frame.groupby("symbol", sort=False)[column].transform(
        lambda s: s.ewm(adjust=False, **kwargs).mean()
    )


def compute_features(bars: pd.DataFrame, horizon: int = 1) -> pd.DataFrame:
    """Features and label per (symbol, date) from validated daily bars.

    ``bars`` needs symbol, date, open, high, low, close, volume; any row order.
    """
    columns = ["symbol", "date", *FEATURE_COLUMNS, *LABEL_COLUMNS]
    if bars.empty:
        return pd.DataFrame(columns=columns)
    df = bars[["symbol", "date", "open", "high", "low", "close", "volume"]].sort_values(
        ["symbol", "date"], kind="stable"
    )
    df = df.reset_index(drop=True)
    g = df.groupby("symbol", sort=False)
    log_close = np.log(df["close"])
    df["_logc"] = log_close
    prev_close = g["close"].shift(1)
    out = pd.DataFrame({"symbol": df["symbol"], "date": df["date"]})
    for k in (1, 5, 10, 20):
        out[f"ret_{k}d"] = log_close - g["_logc"].shift(k)
    df["_r1"] = out["ret_1d"]
    out["vol_20d"] = _rolling(df.groupby("symbol", sort=False), "_r1", 20, "std")

    delta = df["close"] - prev_close
    df["_gain"] = delta.clip(lower=0)
    df["_loss"] = (-delta).clip(lower=0)
    avg_gain = _ewm(df, "_gain", alpha=1 / 14)
    avg_loss = _ewm(df, "_loss", alpha=1 / 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100 - 100 / (1 + avg_gain / avg_loss)
    out["rsi_14"] = rsi.where(avg_loss > 0, 100.0)

    macd_line = _ewm(df, "close", span=12) - _ewm(df, "close", span=26)
    df["_macd"] = macd_line
    out["macd"] = macd_line / df["close"]
    out["macd_signal"] = _ewm(df, "_macd", span=9) / df["close"]

    g = df.groupby("symbol", sort=False)
    sma20 = _rolling(g, "close", 20, "mean")
    std20 = _rolling(g, "close", 20, "std")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["bb_pct_b"] = ((df["close"] - (sma20 - 2 * std20)) / (4 * std20)).where(std20 > 0, 0.5)

    true_range = pd.concat(
        [df["high"] - df["low"], (df["high"] - prev_close).abs(), (df["low"] - prev_close).abs()],
        axis=1,
    ).max(axis=1, skipna=True)
    df["_tr"] = true_range
    out["atr_14_pct"] = _ewm(df, "_tr", alpha=1 / 14) / df["close"]

    out["sma_ratio_10_50"] = _rolling(g, "close", 10, "mean") / _rolling(g, "close", 50, "mean") - 1

    vol_mean = _rolling(g, "volume", 20, "mean")
    vol_std = _rolling(g, "volume", 20, "std")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["volume_z_20"] = ((df["volume"] - vol_mean) / vol_std).where(vol_std > 0, 0.0)

    low14 = _rolling(g, "low", 14, "min")
    high14 = _rolling(g, "high", 14, "max")
    span = high14 - low14
    with np.errstate(divide="ignore", invalid="ignore"):
        out["stoch_k_14"] = (100 * (df["close"] - low14) / span).where(span > 0, 50.0)
    out["hl_range"] = (df["high"] - df["low"]) / df["close"]

    future_logc = g["_logc"].shift(-horizon)
    out["fwd_return"] = future_logc - log_close
    out["label"] = (out["fwd_return"] > 0).astype("Int8").where(out["fwd_return"].notna())
    out["label_date"] = g["date"].shift(-horizon)

    position = g.cumcount()
    complete = (position >= LOOKBACK_BARS - 1) & out[list(FEATURE_COLUMNS)].notna().all(axis=1)
    complete &= np.isfinite(out[list(FEATURE_COLUMNS)]).all(axis=1)
    return out.loc[complete, columns].reset_index(drop=True)
