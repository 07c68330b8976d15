"""The 14 point-in-time features and the label: the one definition of the feature set.

A feature for date t is computed from bars up to and including t only (rolling windows look back,
exponential averages run forward). Rows without a full look-back (LOOKBACK_BARS bars of the
symbol) are dropped, never filled.

The label for t is tradable: a prediction made after t's close can act at the next session, so the
label's return starts there. ``next_close`` (the default, as Qlib's Alpha158 label): the log return
from close(t+1) to close(t+1+h); ``next_open``: from open(t+1) to open(t+1+h). ``direction`` labels
that return's sign; ``excess_direction`` the sign of the return minus the same day's cross-sectional
mean (what a market-neutral book predicts: the market's share of the day is taken out). The label
is the only column that needs the future; it stays NULL (with ``label_date``, the session of the
return's last price) until that bar exists. ``fwd_return`` is the raw return the label is cut from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
LABEL_STARTS = ("next_close", "next_open")
LABEL_KINDS = ("direction", "excess_direction")


@dataclass(frozen=True)
class LabelRule:
    """Which return a label is cut from: where it starts, its horizon in sessions, its kind."""

    start: str = "next_close"
    kind: str = "direction"
    horizon_days: int = 1

    def __post_init__(self) -> None:
        # "close" is the rule of stores built before tradable labels: close(t) -> close(t+h)
        if self.start not in (*LABEL_STARTS, "close"):
            raise ValueError(f"label start {self.start!r} is not one of {', '.join(LABEL_STARTS)}")
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"label kind {self.kind!r} is not one of {', '.join(LABEL_KINDS)}")
        if self.horizon_days < 1:
            raise ValueError("the label horizon is at least one session")

    @property
    def embargo_days(self) -> int:
        """Sessions a label reaches past its own date: the training slice ends this far before
        the validation slice, so no training label overlaps a validation date."""
        return self.horizon_days + (0 if self.start == "close" else 1)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        price = {"next_close": "close", "next_open": "open", "close": "close"}[self.start]
        first = "t" if self.start == "close" else "t+1"
        what = "direction" if self.kind == "direction" else "direction relative to the day's mean"
        return f"{what} of {price}({first}) -> {price}({first}+{self.horizon_days})"

    @classmethod
    def from_dict(cls, data: dict | None) -> LabelRule:
        """A version's stored rule; versions from before the rule was recorded used close(t)."""
        if not data:
            return LEGACY_LABEL_RULE
        return cls(**{k: data[k] for k in ("start", "kind", "horizon_days")})


LEGACY_LABEL_RULE = LabelRule(start="close", kind="direction", horizon_days=1)


def _rolling(grouped, column: str, window: int, how: str) -> pd.Series:
    rolled = getattr(grouped[column].rolling(window, min_periods=window), how)(
        **({"ddof": 0} if how == "std" else {})
    )
    return rolled.reset_index(level=0, drop=True)


def _ewm(frame: pd.DataFrame, column: str, **kwargs) -> pd.Series:
    # pandas' grouped ewm: the per-symbol recursion in one call, bit-identical to a transform
    # of Series.ewm per symbol and twice as fast
    averaged = frame.groupby("symbol", sort=False)[column].ewm(adjust=False, **kwargs).mean()
    return averaged.reset_index(level=0, drop=True)


def compute_features(
    bars: pd.DataFrame,
    rule: LabelRule | int | None = None,
    market_mean: pd.Series | None = None,
) -> pd.DataFrame:
    """Features and label per (symbol, date) from validated daily bars.

    ``bars`` needs symbol, date, open, high, low, close, volume; any row order. ``rule`` is the
    label rule (an int: the default rule with that horizon). ``market_mean``: for an
    ``excess_direction`` label computed on a part of the universe, the mean forward return per
    date over the whole universe (``forward_returns`` of every part); by default the mean over
    ``bars``.
    """
    if rule is None or isinstance(rule, int):
        rule = LabelRule(horizon_days=rule or 1)
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

    h = rule.horizon_days
    if rule.start == "close":
        out["fwd_return"] = g["_logc"].shift(-h) - log_close
        out["label_date"] = g["date"].shift(-h)
    else:
        price = "_logc" if rule.start == "next_close" else "_logo"
        df["_logo"] = np.log(df["open"])
        g = df.groupby("symbol", sort=False)
        out["fwd_return"] = g[price].shift(-1 - h) - g[price].shift(-1)
        out["label_date"] = g["date"].shift(-1 - h)
    target = out["fwd_return"]
    if rule.kind == "excess_direction":
        if market_mean is None:
            target = target - target.groupby(out["date"]).transform("mean")
        else:
            target = target - out["date"].map(market_mean).to_numpy()
    out["label"] = (target > 0).astype("Int8").where(target.notna())

    position = g.cumcount()
    complete = (position >= LOOKBACK_BARS - 1) & out[list(FEATURE_COLUMNS)].notna().all(axis=1)
    complete &= np.isfinite(out[list(FEATURE_COLUMNS)]).all(axis=1)
    return out.loc[complete, columns].reset_index(drop=True)


def forward_returns(bars: pd.DataFrame, rule: LabelRule) -> pd.DataFrame:
    """(date, fwd_return) of every bar under ``rule``, as ``compute_features`` computes them: the
    pieces of a market mean for a universe computed in parts."""
    df = bars[["symbol", "date", "open", "close"]].sort_values(["symbol", "date"], kind="stable")
    g = df.assign(_logc=np.log(df["close"]), _logo=np.log(df["open"])).groupby("symbol", sort=False)
    h = rule.horizon_days
    if rule.start == "close":
        fwd = g["_logc"].shift(-h) - np.log(df["close"])
    else:
        price = "_logc" if rule.start == "next_close" else "_logo"
        fwd = g[price].shift(-1 - h) - g[price].shift(-1)
    return pd.DataFrame({"date": df["date"].to_numpy(), "fwd_return": fwd.to_numpy()})
