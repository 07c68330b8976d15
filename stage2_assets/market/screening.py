"""What a refresh checks before anything is stored: limits, duplicated rows, vanished symbols and
back-adjusted history.

A vendor re-adjusts history at every split (and, for adjusted series, every dividend): every price
before the event is scaled by one factor. An incremental refresh sees that only on its overlap,
where each revised bar differs from the stored one by the same factor; storing the overlap alone
would leave a fake jump at the seam. Such a symbol is re-fetched whole instead, in the same run.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from stage2_assets.market.bars import PRICE_COLUMNS
from stage2_assets.market.refresh import last_stored_dates
from stage2_assets.resources.market_data import FetchResult

# refresh_notes.kind, one word per thing a run reports beside its per-symbol log
MISSING = "missing_symbol"
REFUSED_FILE = "refused_file"
READJUSTED = "readjusted"
COLLAPSED = "collapsed_duplicates"


@dataclass
class Notes:
    """What one refresh reports beside the per-symbol log: rows of ``refresh_notes``."""

    rows: list[dict] = field(default_factory=list)

    def add(self, kind: str, subject: str, **detail) -> None:
        self.rows.append({"kind": kind, "subject": subject, "detail": json.dumps(detail)})

    def frame(self, run_id: str, as_of: dt.date, now) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=["kind", "subject", "detail"])
        frame.insert(0, "as_of", as_of)
        frame.insert(0, "run_id", run_id)
        frame["logged_at"] = now
        frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
        return frame[["run_id", "as_of", "kind", "subject", "detail", "logged_at"]]


def screen_fetched(fetched: FetchResult, max_rows: int, notes: Notes) -> None:
    """Refuse a symbol that delivered more than ``max_rows`` rows (it becomes that symbol's error;
    nothing of it is stored) and collapse rows repeated exactly within one symbol's delivery, in
    place. A day delivered twice with different values is kept twice: the quality gate judges it."""
    for symbol, rows in fetched.row_counts().items():
        if rows > max_rows:
            del fetched.bars[symbol]
            fetched.errors[symbol] = (
                f"{symbol}: the source delivered {rows:,} rows, over "
                f"data_refresh.max_rows_per_symbol ({max_rows:,}): refused, nothing stored"
            )
    delivered = fetched.delivered()
    if delivered is None:
        return
    # one pass over the whole delivery: per-symbol checks cost a fixed overhead each
    repeated = delivered.loc[delivered.duplicated(), "symbol"].value_counts()
    for symbol, rows in repeated.items():
        notes.add(COLLAPSED, str(symbol), rows=int(rows))
        fetched.bars[symbol] = fetched.bars[symbol].drop_duplicates().reset_index(drop=True)


def missing_symbols(
    conn: duckdb.DuckDBPyConnection,
    expected: list[str],
    listed: list[str],
    as_of: dt.date,
    last: dict[str, dt.date] | None = None,
) -> dict[str, dict]:
    """{symbol: {since, last_bar}} for expected symbols the source no longer lists.

    ``since`` is the as-of date of the first run in an unbroken series of runs that found it
    missing, so a vanished symbol is reported every run and announced once. ``last`` is
    ``last_stored_dates(conn, as_of)`` where the caller has it already."""
    gone = sorted(set(expected) - set(listed))
    if not gone:
        return {}
    last_bar = last if last is not None else last_stored_dates(conn, as_of, gone)
    previous = conn.execute(
        """
        SELECT subject, detail FROM refresh_notes
        WHERE kind = ? AND run_id = (
            SELECT run_id FROM refresh_log WHERE as_of <= ? ORDER BY logged_at DESC LIMIT 1
        )
        """,
        [MISSING, as_of],
    ).fetchall()
    before = {subject: json.loads(detail)["since"] for subject, detail in previous}
    return {
        symbol: {
            "since": before.get(symbol, as_of.isoformat()),
            "last_bar": last_bar[symbol].isoformat() if symbol in last_bar else None,
        }
        for symbol in gone
    }


def readjustment_factors(conn: duckdb.DuckDBPyConnection, tolerance: float) -> dict[str, float]:
    """{symbol: factor} for symbols whose delivered bars (the staged ``incoming`` table), where
    they overlap stored ones, revise every price of the earlier overlap days by one common factor
    (stored / delivered) while the later overlap days, if any, are unchanged: the signature of a
    back-adjustment. A correction of one bar or one field does not qualify; it stays an ordinary
    revision."""
    ratios = ", ".join(f"r.{c} / i.{c} AS {c}" for c in PRICE_COLUMNS)
    # only the overlap of symbols with some price off by more than the tolerance comes back,
    # usually none: the same test as below (where NaN, a zero price's 0/0, is off by nothing;
    # DuckDB orders NaN above every number, so it is left out by name)
    off = " OR ".join(f"(abs({c} - 1.0) > $tolerance AND NOT isnan({c}))" for c in PRICE_COLUMNS)
    overlap = conn.execute(
        f"""
        WITH overlap AS MATERIALIZED (
            SELECT i.symbol, i.date, {ratios}
            FROM incoming i JOIN raw_bars r ON r.symbol = i.symbol AND r.date = i.date
        )
        SELECT * FROM overlap
        WHERE symbol IN (SELECT symbol FROM overlap WHERE {off})
        ORDER BY symbol, date
        """,
        {"tolerance": float(tolerance)},
    ).df()
    values = overlap[PRICE_COLUMNS].to_numpy(dtype="float64")
    changed = (np.abs(values - 1.0) > tolerance).any(axis=1)
    factors = {}
    # only symbols with a revised overlap bar need a closer look (usually none)
    for symbol in overlap.loc[changed, "symbol"].unique():
        rows = (overlap["symbol"] == symbol).to_numpy()
        sym_values, sym_changed = values[rows], changed[rows]
        if not np.isfinite(sym_values).all() or (sym_values <= 0).any():
            continue
        # revised days first, then unchanged ones: the adjustment reaches back from an event
        if sym_changed[sym_changed.argmin() :].any() and not sym_changed.all():
            continue
        revised = sym_values[sym_changed]
        factor = float(np.median(revised))
        if np.abs(revised / factor - 1.0).max() <= tolerance:
            factors[str(symbol)] = factor
    return factors
