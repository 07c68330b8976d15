"""Live performance of a model from its logged predictions and outcomes, and degradation.

The strategy that follows the predictions goes long a symbol predicted up and short one predicted
down, equal weight across the day's symbols, and pays ``cost_bps`` per unit of turnover.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from stage2_assets.ml.metrics import ECE_BINS, classification_metrics, confidence

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


def reliability_table(prob_up: np.ndarray, label: np.ndarray) -> list[dict]:
    """Per confidence bucket: rows, mean confidence, hit rate (the reliability diagram's points)."""
    conf = confidence(prob_up)
    correct = (np.asarray(prob_up) > 0.5) == (np.asarray(label) == 1)
    edges = np.linspace(0.5, 1.0, ECE_BINS // 2 + 1)
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)
    table = []
    for b in range(len(edges) - 1):
        mask = index == b
        if mask.any():
            table.append(
                {
                    "bucket": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "rows": int(mask.sum()),
                    "mean_confidence": float(conf[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return table


def performance(rows: pd.DataFrame, cost_bps: float) -> dict:
    """Everything model_performance stores for one model over one window of resolved rows."""
    if rows.empty:
        return {"rows": 0}
    metrics = classification_metrics(rows["prob_up"].to_numpy(), rows["label"].to_numpy())
    daily = strategy_returns(rows, cost_bps)
    return {
        **metrics,
        "days": int(rows["date"].nunique()),
        "sharpe": sharpe_ratio(daily),
        "max_drawdown": max_drawdown(daily),
        "mean_daily_return": float(daily.mean()) if len(daily) else 0.0,
        "reliability": reliability_table(rows["prob_up"].to_numpy(), rows["label"].to_numpy()),
    }


def degradation_test(
    recent_correct: np.ndarray, baseline_correct: np.ndarray
) -> tuple[float, float]:
    """(accuracy drop, one-sided p-value that recent accuracy is lower than the baseline's).

    Fisher's exact test on the 2x2 table of right/wrong calls in the two windows.
    """
    r, b = np.asarray(recent_correct, dtype=bool), np.asarray(baseline_correct, dtype=bool)
    if len(r) == 0 or len(b) == 0:
        return 0.0, 1.0
    table = [[int(b.sum()), int((~b).sum())], [int(r.sum()), int((~r).sum())]]
    p = float(stats.fisher_exact(table, alternative="greater").pvalue)
    return float(b.mean() - r.mean()), p
