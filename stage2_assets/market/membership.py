"""The universe over time: each symbol's first and last delivered bar, kept by the raw store.

A symbol belongs to the universe on day D when its bars have begun by D and have not stopped more
than ``max_stale_sessions`` sessions before the newest bar of any symbol on or before D (a whole
feed that went stale is staleness, warned about elsewhere, not every symbol leaving). Training at a cut-off uses every symbol's rows up
to it, those that vanished later included; serving on D uses only the members of D, so a symbol
delisted months ago is not given a fresh prediction from its last, stale bar.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pandas as pd

from stage2_assets.market.calendar import sessions_after
from stage2_assets.resources.warehouse import has_table


def membership(
    conn: duckdb.DuckDBPyConnection, day: dt.date, max_stale_sessions: int
) -> pd.DataFrame:
    """One row per symbol the store has bars of: ``first_date``, ``last_date`` (on or before
    ``day``), ``state`` (member / left / not_yet) and ``missing_since`` (the source stopped
    listing it)."""
    spans = conn.execute(
        """
        SELECT symbol, min(date) AS first_date,
               max(date) FILTER (WHERE date <= ?) AS last_date
        FROM raw_bars GROUP BY symbol ORDER BY symbol
        """,
        [day],
    ).df()
    missing: dict[str, str] = {}
    if has_table(conn, "refresh_notes"):
        for subject, detail in conn.execute(
            """
            SELECT subject, detail FROM refresh_notes
            WHERE kind = 'missing_symbol' AND run_id = (
                SELECT run_id FROM refresh_log WHERE as_of <= ? ORDER BY logged_at DESC LIMIT 1
            )
            """,
            [day],
        ).fetchall():
            missing[subject] = json.loads(detail)["since"]

    newest = spans["last_date"].max()

    def state(row) -> str:
        if pd.isna(row.last_date):
            return "not_yet"
        lag = sessions_after(pd.Timestamp(row.last_date).date(), pd.Timestamp(newest).date())
        return "member" if lag <= max_stale_sessions else "left"

    spans["state"] = [state(r) for r in spans.itertuples()] if len(spans) else []
    spans["missing_since"] = spans["symbol"].map(missing)
    for column in ("first_date", "last_date"):
        spans[column] = pd.to_datetime(spans[column]).dt.date
    return spans


def members_on(
    conn: duckdb.DuckDBPyConnection, day: dt.date, max_stale_sessions: int
) -> dict[str, str]:
    """{symbol: state} of every symbol the store knows on ``day``."""
    table = membership(conn, day, max_stale_sessions)
    return dict(zip(table["symbol"], table["state"], strict=True))
