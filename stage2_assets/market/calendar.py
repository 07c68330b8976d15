"""The NYSE trading calendar, from the maintained ``exchange_calendars`` package."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import pandas as pd


@lru_cache(maxsize=1)
def _nyse():
    import exchange_calendars as xc

    today = dt.date.today()
    return xc.get_calendar("XNYS", start="2000-01-03", end=f"{today.year + 1}-12-31")


def nyse_sessions(start: dt.date | str, end: dt.date | str) -> pd.DatetimeIndex:
    """NYSE sessions from start to end, both included, as naive midnight timestamps."""
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    if end_ts < start_ts:
        return pd.DatetimeIndex([])
    sessions = _nyse().sessions_in_range(start_ts, end_ts)
    return pd.DatetimeIndex(sessions).tz_localize(None)


@lru_cache(maxsize=2)
def _sessions_through(today: dt.date):
    """Every NYSE session from 2000 up to ``today``, as datetime64 values (built once a day)."""
    values = nyse_sessions("2000-01-03", today).to_numpy(copy=True)
    values.setflags(write=False)
    return values


def sessions_between(earlier: pd.Series, later: pd.Series) -> pd.Series:
    """Count of NYSE sessions strictly between each pair of dates (0 when they are adjacent)."""
    values = _sessions_through(dt.date.today())
    lo = values.searchsorted(pd.to_datetime(earlier, cache=False).values, side="right")
    hi = values.searchsorted(pd.to_datetime(later, cache=False).values, side="left")
    return pd.Series((hi - lo).clip(min=0), index=later.index)


def sessions_after(last: dt.date | None, as_of: dt.date) -> int | None:
    """NYSE sessions after ``last`` up to and including ``as_of``: how stale data ending on
    ``last`` is as of that date (0: current). None when there is no data at all."""
    if last is None:
        return None
    return len(nyse_sessions(last + dt.timedelta(days=1), as_of))
