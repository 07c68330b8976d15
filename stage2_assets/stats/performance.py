"""Live performance of a model from its logged predictions and outcomes, and degradation.

The strategy that follows the predictions goes long a symbol predicted up and short one predicted
down, equal weight across the day's symbols, and pays ``cost_bps`` per unit of turnover.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from stage2_assets.ml.metrics import ECE_BINS, classification_metrics, equal_mass_bins

TRADING_DAYS = 252


def strategy_returns(rows: pd.DataFrame, cost_bps: float) -> pd.Series:
    """Daily returns of the long/short strategy (rows: date, symbol, prob_up, fwd_return)."""
    if rows.empty:
        return pd.Series(dtype=float)
    frame = rows.assign(position=np.sign(rows["prob_up"].to_numpy() - 0.5))
    weights = frame.pivot_table(
        index="date", columns="symbol", values="position", aggfunc="mean"
    ).fillna(0.0)
    weights = weights.div(weights.abs().sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    returns = (
        frame.pivot_table(index="date", columns="symbol", values="fwd_return", aggfunc="mean")
        .reindex_like(weights)
        .fillna(0.0)
    )
    gross = (weights * (np.exp(returns) - 1)).sum(axis=1)
    turnover = weights.diff().abs().sum(axis=1).fillna(weights.abs().sum(axis=1))
    return gross - turnover * cost_bps / 10_000


def sharpe_ratio(daily: pd.Series) -> float:
    if len(daily) < 2 or daily.std(ddof=1) == 0:
        return 0.0
    return float(np.sqrt(TRADING_DAYS) * daily.mean() / daily.std(ddof=1))


def max_drawdown(daily: pd.Series) -> float:
    """Largest fall of the compounded equity curve from its running peak, as a positive fraction."""
    if daily.empty:
        return 0.0
    equity = (1 + daily).cumprod()
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity.to_numpy()]))[1:]
    return float((1 - equity.to_numpy() / peak).max())


def reliability_table(prob_up: np.ndarray, label: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-mass bin of P(up): rows, mean P(up), share of up labels (the reliability
    diagram's points; the same bins as the ECE)."""
    p = np.asarray(prob_up, dtype=float)
    y = np.asarray(label, dtype=float)
    index = equal_mass_bins(p, bins)
    table = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            table.append(
                {
                    "bucket": f"{p[mask].min():.3f}-{p[mask].max():.3f}",
                    "rows": int(mask.sum()),
                    "mean_prob_up": float(p[mask].mean()),
                    "share_up": float(y[mask].mean()),
                }
            )
    return table


def performance(rows: pd.DataFrame, cost_bps: float, climatology: float | None = None) -> dict:
    """Everything model_performance stores for one model over one window of resolved rows;
    ``climatology`` is the base rate of up days known before the window (for the skill score)."""
    if rows.empty:
        return {"rows": 0}
    metrics = classification_metrics(
        rows["prob_up"].to_numpy(), rows["label"].to_numpy(), climatology
    )
    daily = strategy_returns(rows, cost_bps)
    return {
        **metrics,
        "days": int(rows["date"].nunique()),
        "sharpe": sharpe_ratio(daily),
        "max_drawdown": max_drawdown(daily),
        "mean_daily_return": float(daily.mean()) if len(daily) else 0.0,
        "reliability": reliability_table(rows["prob_up"].to_numpy(), rows["label"].to_numpy()),
    }


def daily_accuracy(rows: pd.DataFrame) -> np.ndarray:
    """Per day, the share of right calls (rows: date, prob_up, label), in date order."""
    if rows.empty:
        return np.array([])
    right = (rows["prob_up"].to_numpy() > 0.5) == (rows["label"].to_numpy() == 1)
    return pd.Series(right.astype(float)).groupby(rows["date"].to_numpy()).mean().to_numpy()


def degradation_test(recent_days: np.ndarray, baseline_days: np.ndarray) -> tuple[float, float]:
    """(accuracy drop, one-sided p-value that recent accuracy is lower than the baseline's).

    Welch's t-test on the two windows' daily accuracies: the day is the unit of evidence, since
    the calls of one day are right or wrong together when the market moves.
    """
    r = np.asarray(recent_days, dtype=float)
    b = np.asarray(baseline_days, dtype=float)
    if len(r) < 2 or len(b) < 2:
        return 0.0, 1.0
    drop = float(b.mean() - r.mean())
    if r.std() == 0 and b.std() == 0:
        return drop, 0.0 if drop > 0 else 1.0
    p = float(stats.ttest_ind(b, r, equal_var=False, alternative="greater").pvalue)
    return drop, p
