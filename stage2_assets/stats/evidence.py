"""The figures a quant reads off a replay: information coefficients, a dollar-neutral book, and
paired differences between arms with block-bootstrap intervals.

Rows hold ``date``, ``symbol``, ``prob_up``, ``label`` and ``fwd_return`` (the raw log return the
label is cut from, over ``horizon`` sessions). The day is the unit of evidence: every interval
resamples blocks of whole days (``block_days`` consecutive days, circular), so both the common
factor within a day and the persistence of regimes across days stay inside a resampled unit.

- IC and rank IC: per day, Pearson and Spearman correlation of P(up) with the forward return
  across the day's symbols; their mean, standard deviation and ICIR = mean / std (per day, not
  annualized), as Qlib reports them.
- The book: each day, long the top ``fraction`` of symbols by P(up) and short the bottom
  ``fraction``, equal weights, half the gross on each side (dollar-neutral, gross 1). It pays
  ``cost_bps`` per unit of turnover. Its daily return is the h-day return of that day's book
  (overlapping when h > 1), so the Sharpe ratio is annualized by sqrt(252 / h). Beta is the OLS
  slope of the book's return on the equal-weight market's return over the same horizon.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stage2_assets.ml.metrics import EPS

TRADING_DAYS = 252
# an interval needs at least this many blocks of days; fewer: the estimate alone
MIN_BLOCKS = 4


def _by_day_rank(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame.groupby("date")[column].rank(method="average")


def daily_ic(rows: pd.DataFrame) -> pd.DataFrame:
    """Per day: ``ic`` (Pearson) and ``rank_ic`` (Spearman) of P(up) with the forward return.
    Days with fewer than 3 symbols or a constant column are left out."""
    frame = rows[["date", "prob_up", "fwd_return"]].dropna()
    frame = frame.assign(
        rank_p=_by_day_rank(frame, "prob_up"), rank_r=_by_day_rank(frame, "fwd_return")
    )

    def corr(a: pd.Series, b: pd.Series) -> pd.Series:
        g = pd.DataFrame({"date": frame["date"], "a": a, "b": b}).groupby("date")
        n = g.size()
        mean_a, mean_b = g["a"].transform("mean"), g["b"].transform("mean")
        da, db = a - mean_a, b - mean_b
        parts = pd.DataFrame(
            {"date": frame["date"], "ab": da * db, "aa": da * da, "bb": db * db}
        ).groupby("date")
        sums = parts.sum()
        denom = np.sqrt(sums["aa"] * sums["bb"])
        out = sums["ab"] / denom.where(denom > 0)
        return out[n >= 3]

    out = pd.DataFrame(
        {
            "ic": corr(frame["prob_up"], frame["fwd_return"]),
            "rank_ic": corr(frame["rank_p"], frame["rank_r"]),
        }
    )
    return out.dropna()


def ic_summary(ic: pd.DataFrame) -> dict:
    out: dict = {"ic_days": int(len(ic))}
    for column in ("ic", "rank_ic"):
        values = ic[column].to_numpy() if column in ic else np.array([])
        mean = float(values.mean()) if len(values) else None
        sd = float(values.std(ddof=1)) if len(values) > 1 else None
        out[column] = mean
        out[f"{column}_std"] = sd
        out["icir" if column == "ic" else "rank_icir"] = (
            mean / sd if mean is not None and sd else None
        )
    return out


def book(rows: pd.DataFrame, fraction: float, cost_bps: float) -> pd.DataFrame:
    """Per day: the dollar-neutral book's ``gross`` and net ``ret`` (h-day simple returns),
    ``turnover`` (sum of absolute weight changes from the previous day), and the equal-weight
    ``market`` return of the day's symbols."""
    frame = rows[["date", "symbol", "prob_up", "fwd_return"]].dropna()
    simple = np.expm1(frame["fwd_return"].to_numpy())
    frame = frame.assign(simple=simple)
    n = frame.groupby("date")["symbol"].transform("size")
    k = np.maximum(np.floor(n * fraction), 1).astype(int)
    # the order within a day: highest P(up) first; ties broken by symbol, so the book is reproducible
    order = frame.sort_values(["date", "prob_up", "symbol"], ascending=[True, False, True])
    position = order.groupby("date").cumcount()
    size = order.groupby("date")["symbol"].transform("size")
    k_ord = k.reindex(order.index)
    long_ = position < k_ord
    short = position >= size - k_ord
    both = long_ & short  # a day with one symbol: neither side
    weight = np.where(long_ & ~both, 0.5 / k_ord, 0.0) - np.where(short & ~both, 0.5 / k_ord, 0.0)
    order = order.assign(weight=weight)
    weights = order.pivot_table(index="date", columns="symbol", values="weight", aggfunc="sum")
    weights = weights.fillna(0.0)
    returns = order.pivot_table(index="date", columns="symbol", values="simple", aggfunc="mean")
    returns = returns.reindex_like(weights).fillna(0.0)
    gross = (weights * returns).sum(axis=1)
    turnover = weights.diff().abs().sum(axis=1)
    turnover.iloc[:1] = weights.iloc[:1].abs().sum(axis=1)
    market = frame.groupby("date")["simple"].mean().reindex(weights.index)
    return pd.DataFrame(
        {
            "gross": gross,
            "ret": gross - turnover * cost_bps / 10_000,
            "turnover": turnover,
            "market": market,
        }
    )


def sharpe(daily: np.ndarray, horizon: int) -> float | None:
    daily = np.asarray(daily, dtype=float)
    if len(daily) < 2 or daily.std(ddof=1) == 0:
        return None
    return float(np.sqrt(TRADING_DAYS / horizon) * daily.mean() / daily.std(ddof=1))


def max_drawdown(daily: np.ndarray, horizon: int) -> float:
    """Largest fall of the equity curve from its peak, as a positive fraction. With h > 1 each
    day's book earns 1/h of its h-day return (h staggered books, each holding h days)."""
    daily = np.asarray(daily, dtype=float) / horizon
    if len(daily) == 0:
        return 0.0
    equity = np.cumprod(1 + daily)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return float((1 - equity / peak).max())


def beta(book_daily: pd.DataFrame) -> float | None:
    x, y = book_daily["market"].to_numpy(), book_daily["gross"].to_numpy()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or x.var() == 0:
        return None
    return float(np.cov(x, y, ddof=1)[0, 1] / x.var(ddof=1))


def book_figures(book_daily: pd.DataFrame, horizon: int) -> dict:
    ret = book_daily["ret"].to_numpy()
    return {
        "sharpe": sharpe(ret, horizon),
        "mean_daily_return": float(ret.mean()) if len(ret) else None,
        "annual_return": float(ret.mean() * TRADING_DAYS / horizon) if len(ret) else None,
        "max_drawdown": max_drawdown(ret, horizon),
        "turnover": float(book_daily["turnover"].mean()) if len(ret) else None,
        "beta": beta(book_daily),
    }


def day_table(
    rows: pd.DataFrame, climatology: float, book_daily: pd.DataFrame | None
) -> pd.DataFrame:
    """Per day, the sums every paired figure is a ratio of: rows, right calls, log loss, Brier,
    the climatology forecast's Brier, and the book's net return."""
    p = np.clip(rows["prob_up"].to_numpy(dtype=float), EPS, 1 - EPS)
    y = rows["label"].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "date": rows["date"].to_numpy(),
            "n": 1.0,
            "hits": ((p > 0.5) == (y == 1)).astype(float),
            "log_loss": -(y * np.log(p) + (1 - y) * np.log(1 - p)),
            "brier": (p - y) ** 2,
            "brier_clim": (climatology - y) ** 2,
        }
    )
    out = frame.groupby("date").sum()
    out["ret"] = (
        book_daily["ret"].reindex(out.index).fillna(0.0).to_numpy()
        if book_daily is not None
        else np.nan
    )
    return out


def _estimates(sums_a: dict, sums_b: dict | None, horizon: int) -> dict:
    """a − b (b None: a alone) from day sums, summed over the last axis."""
    n = sums_a["n"].sum(axis=-1)
    clim = sums_a["brier_clim"].sum(axis=-1)

    def total(sums, key):
        return sums[key].sum(axis=-1) if sums is not None else 0.0

    out = {
        "accuracy": (total(sums_a, "hits") - total(sums_b, "hits")) / n,
        "log_loss": (total(sums_a, "log_loss") - total(sums_b, "log_loss")) / n,
        # skill against climatology: 1 - Brier/Brier_clim; the difference of two skills
        "brier_skill": (total(sums_b, "brier") - total(sums_a, "brier")) / clim
        if sums_b is not None
        else 1 - total(sums_a, "brier") / clim,
        # mean daily return of the book, annualized for the horizon
        "annual_return": (total(sums_a, "ret") - total(sums_b, "ret"))
        / sums_a["ret"].shape[-1]
        * TRADING_DAYS
        / horizon,
    }
    return out


def block_picks(days: int, samples: int, block: int, seed: int) -> np.ndarray:
    """Indices of a circular block bootstrap over ``days`` (samples × days), seeded."""
    block = max(1, min(block, days))
    rng = np.random.default_rng(seed)
    blocks = -(-days // block)
    starts = rng.integers(0, days, size=(samples, blocks))
    picks = (starts[:, :, None] + np.arange(block)[None, None, :]) % days
    return picks.reshape(samples, -1)[:, :days]


def paired_difference(
    a: pd.DataFrame,
    b: pd.DataFrame | None,
    *,
    horizon: int,
    samples: int,
    seed: int,
    block_days: int = 5,
    level: float = 0.95,
    metrics: tuple[str, ...] = ("accuracy", "log_loss", "brier_skill", "annual_return"),
) -> dict:
    """{metric: {"estimate", "ci"}} of a − b on the same days (day tables from ``day_table``).
    Positive is better for accuracy, brier_skill and annual_return; lower is better for log_loss.
    With fewer than MIN_BLOCKS blocks of days, ``ci`` is None."""
    if b is not None:
        b = b.reindex(a.index)
        if b.isna().all(axis=None):
            raise ValueError("the two arms share no day")
    keys = ("n", "hits", "log_loss", "brier", "brier_clim", "ret")
    sums_a = {k: a[k].to_numpy(dtype=float) for k in keys}
    sums_b = {k: b[k].to_numpy(dtype=float) for k in keys} if b is not None else None
    point = _estimates(sums_a, sums_b, horizon)
    picks = block_picks(len(a), samples, block_days, seed)
    boot = _estimates(
        {k: v[picks] for k, v in sums_a.items()},
        {k: v[picks] for k, v in sums_b.items()} if sums_b is not None else None,
        horizon,
    )
    tail = (1 - level) / 2
    out = {}
    enough = len(a) >= MIN_BLOCKS * block_days
    for metric in metrics:
        values = boot[metric]
        if not enough:
            # too few days for a block bootstrap to say anything: the estimate, no interval
            out[metric] = {"estimate": float(point[metric]), "ci": None}
            continue
        if not np.all(np.isfinite(values)):
            out[metric] = {"estimate": None, "ci": None}
            continue
        out[metric] = {
            "estimate": float(point[metric]),
            "ci": [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))],
        }
    return out


def verdict(metric: str, ci: list[float] | None) -> str:
    """The word a paired interval carries: ahead, behind, or no difference shown."""
    if not ci:
        return "no interval (too few days)"
    better_high = metric != "log_loss"
    low, high = ci
    if low > 0:
        return "ahead" if better_high else "behind"
    if high < 0:
        return "behind" if better_high else "ahead"
    return "no difference shown"
