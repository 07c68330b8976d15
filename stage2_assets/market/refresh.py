"""Incremental refresh of the raw bar store: what to ask for, and how to store what came back.

Only bars that are new or revised are written: a refresh that brings nothing new writes nothing
but its log. Revisions are detected by comparing every field with the stored bar (a provider
correcting last week's close is normal life). The whole write is one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

import duckdb
import pandas as pd

from stage2_assets.errors import SourceMismatchError
from stage2_assets.faults import fault_point
from stage2_assets.resources.market_data import FetchResult
from stage2_assets.resources.warehouse import BAR_DIGEST, one

_VALUES = ["open", "high", "low", "close", "volume"]
_SAME_VALUES = " AND ".join(f"i.{c} IS NOT DISTINCT FROM s.{c}" for c in _VALUES)


def stored_source(conn: duckdb.DuckDBPyConnection) -> str | None:
    row = one(conn, "SELECT value FROM store_info WHERE key = 'source'")
    return row[0] if row else None


def ensure_same_source(conn: duckdb.DuckDBPyConnection, kind: str, warehouse: str) -> None:
    """Refuse to mix sources in one store, before anything is fetched or written."""
    current = stored_source(conn)
    if current is not None and current != kind:
        raise SourceMismatchError(
            f"warehouse {warehouse} holds bars from source '{current}', and the config now says "
            f"'{kind}': stores never mix sources. Point storage.warehouse at another file, or set "
            f"data_source.kind back to '{current}'."
        )


def last_stored_dates(
    conn: duckdb.DuckDBPyConnection, as_of: dt.date, symbols: list[str] | None = None
) -> dict[str, dt.date]:
    """{symbol: its last raw bar on or before ``as_of``} for the symbols the store holds bars of
    then (the previous universe), or for those of ``symbols`` it holds."""
    among = f"AND symbol IN ({', '.join('?' for _ in symbols)})" if symbols else ""
    return dict(
        conn.execute(
            f"SELECT symbol, max(date) FROM raw_bars WHERE date <= ? {among} GROUP BY symbol",
            [as_of, *(symbols or [])],
        ).fetchall()
    )


def plan_starts(
    conn: duckdb.DuckDBPyConnection,
    symbols: Iterable[str],
    history_start: dt.date,
    overlap_days: int,
    as_of: dt.date,
    full: Iterable[str] = (),
    last: dict[str, dt.date] | None = None,
) -> dict[str, dt.date]:
    """First date to fetch per symbol: after the last stored bar less the overlap, or history_start.

    A quarantined symbol is asked for its whole history again, so a provider's correction of an old
    bar arrives as a revision and releases it. Bars after ``as_of`` already in the store (a replay of
    an earlier week) are never re-asked for. Symbols in ``full`` (`stage2 refresh --full`) are asked
    for their whole history too. ``last`` is each symbol's last stored bar on or before ``as_of``
    (``last_stored_dates``) where the caller has it already.
    """
    quarantined = {row[0] for row in conn.execute("SELECT symbol FROM quarantine").fetchall()}
    if last is None:
        last = last_stored_dates(conn, as_of)
    starts = {}
    whole = quarantined | set(full)
    for symbol in symbols:
        stored_last = last.get(symbol)
        if stored_last is None or symbol in whole:
            starts[symbol] = history_start
        else:
            starts[symbol] = max(history_start, stored_last - dt.timedelta(days=overlap_days))
    return starts


def stage_delivery(conn: duckdb.DuckDBPyConnection, delivered: pd.DataFrame | None) -> bool:
    """Read the delivery once into the session's temp table ``incoming`` (``n``: its row order),
    which the re-adjustment check and the store compare with the stored bars; False, and no
    table, when nothing was delivered."""
    if delivered is None:
        conn.execute("DROP TABLE IF EXISTS incoming")
        return False
    delivered_rows = delivered  # noqa: F841 (read by name, warehouse.py)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE incoming AS SELECT row_number() OVER () AS n, "
        "symbol, CAST(date AS DATE) AS date, open, high, low, close, volume, source "
        "FROM delivered_rows"
    )
    return True


def store_fetched(
    conn: duckdb.DuckDBPyConnection,
    fetched: FetchResult,
    starts: dict[str, dt.date],
    source: str,
    run_id: str,
    as_of: dt.date,
    full: Iterable[str] = (),
    notes: pd.DataFrame | None = None,
    staged: bool = False,
) -> pd.DataFrame:
    """Write new and revised bars, the refresh log and the run's notes (``refresh_notes``) in one
    transaction; return the log rows. Quarantined symbols and those in ``full`` were fetched
    whole: their raw history is replaced. With ``staged``, ``incoming`` already holds the
    delivery (``stage_delivery``)."""
    delivered = fetched.delivered()
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    conn.execute("BEGIN TRANSACTION")
    try:
        stats = pd.DataFrame()
        if delivered is not None:
            if not staged:
                stage_delivery(conn, delivered)
            whole = _whole_symbols(conn, set(full), delivered)
            # a whole history equal to the stored one changes nothing: left out of the comparison
            unchanged = _unchanged_histories(conn, whole)
            stats = _write_changes(conn, run_id, now)
            if not unchanged.empty:
                stats = (
                    pd.concat([stats, unchanged], ignore_index=True) if len(stats) else unchanged
                )
            _replace_history(conn, run_id, now, whole - set(unchanged["symbol"]))
            conn.execute("DROP TABLE incoming")
        log = refresh_log_rows = _log_rows(fetched, starts, stats, run_id, as_of, now)  # noqa: F841
        fault_point("refresh_insert")  # bars written, transaction still open
        # the frames are read by name (a replacement scan, warehouse.py)
        conn.execute("INSERT INTO refresh_log SELECT * FROM refresh_log_rows")
        if notes is not None and not notes.empty:
            refresh_note_rows = notes  # noqa: F841
            conn.execute("INSERT INTO refresh_notes SELECT * FROM refresh_note_rows")
        if delivered is not None and stored_source(conn) is None:  # a new store's first bars
            conn.execute("INSERT INTO store_info VALUES ('source', ?)", [source])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return log


def _whole_symbols(
    conn: duckdb.DuckDBPyConnection, full: set[str], delivered: pd.DataFrame
) -> set[str]:
    """The delivered symbols fetched whole: quarantined ones, and those of a full re-fetch."""
    whole = {r[0] for r in conn.execute("SELECT symbol FROM quarantine").fetchall()} | full
    return whole & set(delivered["symbol"].unique()) if whole else whole


def _unchanged_histories(conn: duckdb.DuckDBPyConnection, whole: set[str]) -> pd.DataFrame:
    """The per-symbol counts (as ``_write_changes`` returns them: nothing new, nothing revised) of
    the symbols of ``whole`` whose delivered history holds exactly the stored raw rows, each as
    many times; their rows leave ``incoming``.

    A quarantined symbol is fetched whole every week, and most weeks its file has not changed:
    comparing its whole history row by row (and looking for stored rows to move out) cost an
    incremental refresh a fifth of its time. Equal row counts and equal sums of the rows' hashes
    (``BAR_DIGEST``) stand for equal rows; a symbol where they differ, or with stored bars after
    the delivery (a replay of an earlier week), is compared row by row as before."""
    empty = pd.DataFrame(columns=["symbol", "fetched", "new", "revised", "first_date", "last_date"])
    if not whole:
        return empty
    unchanged = conn.execute(
        f"""
        WITH delivered AS (
            SELECT symbol, count(*) AS rows, {BAR_DIGEST} AS digest,
                   min(date) AS first_date, max(date) AS last_date
            FROM incoming WHERE list_contains($whole, symbol) GROUP BY symbol
        ), stored AS (
            SELECT symbol, count(*) AS rows, {BAR_DIGEST} AS digest
            FROM raw_bars WHERE list_contains($whole, symbol) GROUP BY symbol
        )
        SELECT d.symbol, d.rows AS fetched, 0 AS new, 0 AS revised, d.first_date, d.last_date
        FROM delivered d JOIN stored s ON s.symbol = d.symbol AND s.rows = d.rows
            AND s.digest = d.digest
        ORDER BY d.symbol
        """,
        {"whole": sorted(whole)},
    ).df()
    if unchanged.empty:
        return empty
    conn.execute(
        "DELETE FROM incoming WHERE list_contains(?, symbol)", [unchanged["symbol"].tolist()]
    )
    return unchanged


def _replace_history(conn: duckdb.DuckDBPyConnection, run_id: str, now, whole: set[str]) -> int:
    """A quarantined symbol, or one named for a full re-fetch, is fetched whole: its raw history
    becomes what the source says now.

    Stored rows of the fetched span that the source no longer delivers (a duplicate day it has
    dropped, a bar it no longer has) move to ``raw_bars_replaced`` with the run that replaced them;
    rows equal to a delivered bar stay, as many times as it is delivered. Returns the rows moved.
    ``whole``: the symbols fetched whole whose history differs from the stored one."""
    if not whole:
        return 0
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE doomed AS
        WITH whole_incoming AS (
            SELECT * FROM incoming WHERE list_contains(?, symbol)
        ), spans AS (
            SELECT symbol, min(date) AS first, max(date) AS last FROM whole_incoming GROUP BY symbol
        ), delivered AS (
            SELECT symbol, date, open, high, low, close, volume, count(*) AS copies
            FROM whole_incoming GROUP BY symbol, date, open, high, low, close, volume
        ), stored AS (
            SELECT s.rowid AS rid, coalesce(i.copies, 0) AS copies,
                   row_number() OVER (
                       PARTITION BY s.symbol, s.date, s.open, s.high, s.low, s.close, s.volume
                       ORDER BY s.rowid
                   ) AS n
            FROM raw_bars s
            JOIN spans w ON s.symbol = w.symbol AND s.date >= w.first AND s.date <= w.last
            LEFT JOIN delivered i ON i.symbol = s.symbol AND i.date = s.date AND {_SAME_VALUES}
        )
        SELECT rid FROM stored WHERE n > copies
        """,
        [sorted(whole)],
    )
    (moved,) = conn.execute("SELECT count(*) FROM doomed").fetchall()[0]
    if moved:
        conn.execute(
            """
            INSERT INTO raw_bars_replaced
            SELECT r.*, ?, ? FROM raw_bars r WHERE r.rowid IN (SELECT rid FROM doomed)
            """,
            [now, run_id],
        )
        conn.execute("DELETE FROM raw_bars WHERE rowid IN (SELECT rid FROM doomed)")
    conn.execute("DROP TABLE doomed")
    return int(moved)


def _write_changes(conn: duckdb.DuckDBPyConnection, run_id: str, now) -> pd.DataFrame:
    """Store the rows of the ``incoming`` table that match no stored bar exactly (new or revised
    days, whose stored bars move to ``raw_bars_replaced``); return per symbol what came and what
    changed."""
    # One pass over the stored bars: per delivered row, whether its day is stored and whether a
    # stored bar equals it. A row that matches none is a change; its (symbol, date) is replaced,
    # so every row of that day is ``changed``.
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE compared AS
        SELECT *, bool_or(NOT equal) OVER (PARTITION BY symbol, date) AS changed FROM (
            SELECT i.n, any_value(i.symbol) AS symbol, any_value(i.date) AS date,
                   count(s.symbol) > 0 AS stored,
                   coalesce(bool_or(s.symbol IS NOT NULL AND {_SAME_VALUES}), false) AS equal
            FROM incoming i LEFT JOIN raw_bars s ON s.symbol = i.symbol AND s.date = i.date
            GROUP BY i.n
        )
        """
    )
    stats = conn.execute(
        """
        SELECT symbol,
               count(*) AS fetched,
               count(*) FILTER (WHERE changed AND NOT stored) AS new,
               count(DISTINCT date) FILTER (WHERE changed AND stored) AS revised,
               min(date) AS first_date, max(date) AS last_date
        FROM compared GROUP BY symbol
        """
    ).df()
    if stats["revised"].any():
        # the bars a revision replaces are kept for the audit, with the run that replaced them
        conn.execute(
            """
            INSERT INTO raw_bars_replaced
            SELECT r.*, ?, ? FROM raw_bars r
            SEMI JOIN compared k ON r.symbol = k.symbol AND r.date = k.date AND k.changed
                AND k.stored
            """,
            [now, run_id],
        )
        conn.execute(
            "DELETE FROM raw_bars r USING compared k "
            "WHERE k.changed AND k.stored AND r.symbol = k.symbol AND r.date = k.date"
        )
    conn.execute(
        """
        INSERT INTO raw_bars
        SELECT i.symbol, i.date, i.open, i.high, i.low, i.close, i.volume, i.source, ?, ?
        FROM incoming i JOIN compared k ON k.n = i.n AND k.changed
        ORDER BY i.n
        """,
        [run_id, now],
    )
    conn.execute("DROP TABLE compared")
    return stats


def _log_rows(
    fetched: FetchResult,
    starts: dict[str, dt.date],
    stats: pd.DataFrame,
    run_id: str,
    as_of: dt.date,
    now,
) -> pd.DataFrame:
    symbols = list(starts)
    counts = (
        stats.set_index("symbol").reindex(symbols)
        if not stats.empty
        else pd.DataFrame(
            index=symbols, columns=["fetched", "new", "revised", "first_date", "last_date"]
        )
    )

    def days(column: str) -> list:
        return [None if pd.isna(d) else pd.Timestamp(d).date() for d in counts[column]]

    return pd.DataFrame(
        {
            "run_id": run_id,
            "symbol": symbols,
            "as_of": [as_of] * len(symbols),
            "requested_start": [starts[s] for s in symbols],
            **{
                c: pd.to_numeric(counts[c]).fillna(0).astype("int64").to_numpy()
                for c in ("fetched", "new", "revised")
            },
            "first_date": days("first_date"),
            "last_date": days("last_date"),
            "error": [fetched.errors.get(s) for s in symbols],
            "duration_s": [float(fetched.seconds.get(s, 0.0)) for s in symbols],
            "logged_at": now,
        },
        columns=[
            "run_id",
            "symbol",
            "as_of",
            "requested_start",
            "fetched",
            "new",
            "revised",
            "first_date",
            "last_date",
            "error",
            "duration_s",
            "logged_at",
        ],
    )


def failures_by_reason(errors: dict[str, str]) -> dict[str, list[str]]:
    """{reason: symbols} from {symbol: "SYMBOL: reason"}: an offline provider fails 150 symbols
    for one reason, said once."""
    grouped: dict[str, list[str]] = {}
    for symbol, error in errors.items():
        grouped.setdefault(error.removeprefix(f"{symbol}: "), []).append(symbol)
    return grouped


def named(symbols: list[str], limit: int = 10) -> str:
    """``A, B, C and 7 more``."""
    more = f" and {len(symbols) - limit} more" if len(symbols) > limit else ""
    return ", ".join(symbols[:limit]) + more


def summarize_log(log: pd.DataFrame, notes: pd.DataFrame | None = None) -> dict:
    """The ``last_refresh`` block of ``stage2 status --json``: the run's per-symbol log and its
    notes (symbols missing from the source, refused files, re-adjusted histories, the gate's
    outcome)."""
    from stage2_assets.market.screening import COLLAPSED, MISSING, READJUSTED, REFUSED_FILE

    records = (
        list(zip(notes["kind"], notes["subject"], notes["detail"], strict=True))
        if notes is not None
        else []
    )

    def noted(kind: str) -> list[tuple[str, dict]]:
        return sorted(
            ((subject, json.loads(detail)) for k, subject, detail in records if k == kind),
            key=lambda pair: pair[0],
        )

    noted_keys = {
        "missing_symbols": [s for s, _ in noted(MISSING)],
        "missing_since": {s: d["since"] for s, d in noted(MISSING)},
        "missing_last_bar": {s: d.get("last_bar") for s, d in noted(MISSING)},
        "refused_files": [{"file": s, "reason": d["reason"]} for s, d in noted(REFUSED_FILE)],
        "readjusted_symbols": [s for s, _ in noted(READJUSTED)],
        "readjustment_factors": {s: d["factor"] for s, d in noted(READJUSTED)},
        "collapsed_duplicates": {s: d["rows"] for s, d in noted(COLLAPSED)},
        # the quality gate's outcome for the run (None before it ran): passed or blocked, and why
        "gate": next(({"outcome": s, **d} for s, d in noted("gate")), None),
    }
    if log.empty:
        return {"fetched": 0, "new": 0, "revised": 0, "failed_symbols": [], **noted_keys}
    failed = sorted(log.loc[log["error"].notna(), "symbol"].tolist())
    return {
        **noted_keys,
        "fetched": int(log["fetched"].sum()),
        "new": int(log["new"].sum()),
        "revised": int(log["revised"].sum()),
        "failed_symbols": failed,
        "errors": {
            symbol: error
            for symbol, error in zip(log["symbol"], log["error"], strict=True)
            if error
        },
        "run_id": str(log["run_id"].iloc[0]),
        "as_of": pd.Timestamp(log["as_of"].iloc[0]).date().isoformat(),
    }
