"""The quality gate's bookkeeping: what is pending, the verdicts, the quarantine, the upsert.

Pending bars are raw bars that no validated bar matches exactly: new bars, revised bars, and
the whole history of a symbol that has never passed. Validating only them keeps each refresh's
cost proportional to what changed. Only the bars of refresh runs that no applied gate has read can
be pending (``gate_reads``: each gate's refresh runs, marked applied when validated_bars is written
from its verdicts), so the exact comparison reads those runs' bars, not the whole history; a
blocked gate leaves its runs unapplied, to be read again. A quarantined symbol is judged again on
its raw history when its raw bars changed since its verdict (so it leaves quarantine once its
provider corrects the data); when they did not, the verdict stands and the symbol is not judged
again, so a rerun or a quiet week is not blocked by a symbol that was already quarantined. The
failed share is over every symbol the store holds.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import duckdb
import pandas as pd

from stage2_assets import clock
from stage2_assets.checks.quality_suite import QualityReport, validate_bars
from stage2_assets.resources.warehouse import BAR_DIGEST, symbol_ranges

_VALUES = ["open", "high", "low", "close", "volume"]
_SAME = " AND ".join(f"r.{c} IS NOT DISTINCT FROM v.{c}" for c in _VALUES)
_COLUMNS = ["symbol", "date", *_VALUES, "source"]


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _COLUMNS)


def _pending_sql(
    within: str = "", skip: bool = False, since: dt.date | None = None, runs: bool = False
) -> str:
    """The CTEs ``changed`` (the days on which some raw row differs from the validated bar) and
    ``pending`` (every raw row of those days: a second copy of a day is judged beside the first, so
    the unique-days rule sees both). ``within`` names a registered frame of (symbol, first, last)
    spans that both tables are narrowed to first, ``since`` being their earliest first day (a
    constant the scans skip whole row groups by); with ``skip``, the query's first parameter is a
    list of symbols left out; with ``runs``, its next parameter is the list of refresh runs whose
    raw rows are compared (``unapplied_runs``)."""
    raw, validated, rid = "raw_bars", "validated_bars", "r.rowid"
    narrowed = ""
    if within:
        day = pd.Timestamp(since).date().isoformat() if since is not None else None
        floor = f"t.date >= DATE '{day}' AND " if day else ""
        span = (
            f"JOIN {within} j ON {floor}j.symbol = t.symbol AND t.date BETWEEN j.first AND j.last"
        )
        narrowed = (
            f"raw AS (SELECT t.rowid AS rid, t.* FROM raw_bars t {span}), "
            f"validated AS (SELECT t.* FROM validated_bars t {span}), "
        )
        raw, validated, rid = "raw", "validated", "r.rid"
    # The raw rows equal to their validated bar are found by a join (which hashes the smaller
    # side, the few rows of an incremental run) and the rest by their row id: a NOT EXISTS over the
    # same condition hashed every validated bar on every run.
    return f"""
        WITH {narrowed}candidates AS (
            SELECT {rid} AS rid, {_columns("r")} FROM {raw} r WHERE true
            {"AND NOT list_contains(?, r.symbol)" if skip else ""}
            {"AND list_contains(?, coalesce(r.run_id, ''))" if runs else ""}
        ), matched AS (
            SELECT r.rid FROM candidates r
            JOIN {validated} v ON v.symbol = r.symbol AND v.date = r.date AND {_SAME}
        ), changed AS (
            SELECT DISTINCT r.symbol, r.date FROM candidates r ANTI JOIN matched m ON m.rid = r.rid
        ), pending AS (
            SELECT {_columns("r")} FROM {raw} r JOIN changed c ON c.symbol = r.symbol AND c.date = r.date
        )
        """


def _with_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    return frame


def unapplied_runs(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The refresh runs with raw bars that no applied gate has read, and '' where some bar has no
    run (one stored by hand: always compared): the only bars that can differ from the validated
    ones. Every raw bar of an applied gate's runs equals its validated bar or belongs to a
    quarantined symbol (judged again on its whole history when its raw bars change), and raw bars
    are never changed in place, only added or moved out."""
    return [
        run
        for (run,) in conn.execute(
            "SELECT DISTINCT coalesce(run_id, '') AS run FROM raw_bars WHERE run_id IS NULL "
            "OR run_id NOT IN (SELECT raw_run_id FROM gate_reads WHERE applied) ORDER BY run"
        ).fetchall()
    ]


def pending_counts(
    conn: duckdb.DuckDBPyConnection, skip: list[str] | None = None, runs: list[str] | None = None
) -> list[tuple[str, int]]:
    """(symbol, pending rows) in symbol order, leaving out the symbols of ``skip``; with ``runs``,
    among the raw bars of those refresh runs."""
    return conn.execute(
        f"{_pending_sql(skip=bool(skip), runs=runs is not None)} SELECT symbol, count(*) "
        "FROM pending GROUP BY symbol ORDER BY symbol",
        [*([list(skip)] if skip else []), *([list(runs)] if runs is not None else [])],
    ).fetchall()


def pending_bars(
    conn: duckdb.DuckDBPyConnection,
    skip: list[str] | None = None,
    symbols: tuple[str, str] | None = None,
    runs: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pending raw bars, the validated bars they follow), leaving out the symbols of ``skip``;
    with ``symbols`` (first, last), of that range only; with ``runs``, among the raw bars of those
    refresh runs.

    The validated bars are, per pending symbol, the last one before each stretch of pending days (a
    revised old bar and this week's new ones are two stretches): each anchors the move and gap of
    the pending bar after it, which is otherwise measured from the previous pending bar, weeks
    earlier. A validated bar of a pending day is being replaced and anchors nothing."""
    within = "WHERE symbol BETWEEN ? AND ?" if symbols else ""
    both = conn.execute(
        f"""
        {_pending_sql(skip=bool(skip), runs=runs is not None)}, spans AS (
            SELECT symbol, min(date) AS first, max(date) AS last FROM changed GROUP BY symbol
        ), before_first AS (
            SELECT {_columns("v")} FROM validated_bars v
            JOIN spans p ON p.symbol = v.symbol AND v.date < p.first
            QUALIFY row_number() OVER (PARTITION BY v.symbol ORDER BY v.date DESC) = 1
        ), between_stretches AS (
            SELECT {", ".join(_COLUMNS)} FROM (
                SELECT {_columns("v")}, false AS is_pending FROM validated_bars v
                JOIN spans p ON p.symbol = v.symbol AND v.date > p.first AND v.date < p.last
                ANTI JOIN changed c ON c.symbol = v.symbol AND c.date = v.date
                UNION ALL
                SELECT symbol, date, NULL, NULL, NULL, NULL, NULL, NULL, true FROM changed
            )
            QUALIFY NOT is_pending
                AND lead(is_pending) OVER (PARTITION BY symbol ORDER BY date)
        ), context AS (
            SELECT * FROM before_first UNION ALL SELECT * FROM between_stretches
        )
        SELECT *, false AS is_context FROM pending {within}
        UNION ALL SELECT *, true FROM context {within}
        ORDER BY is_context, symbol, date
        """,
        [
            *([list(skip)] if skip else []),
            *([list(runs)] if runs is not None else []),
            *(list(symbols) * 2 if symbols else []),
        ],
    ).df()
    is_context = both.pop("is_context").to_numpy(dtype=bool)
    both = _with_timestamps(both)
    return (
        both[~is_context].reset_index(drop=True),
        both[is_context].reset_index(drop=True),
    )


def raw_fingerprints(
    conn: duckdb.DuckDBPyConnection, symbols: list[str] | None = None
) -> dict[str, str]:
    """{symbol: a fingerprint of all its raw bars} for every symbol the store holds (or for those
    of ``symbols`` it holds): equal fingerprints mean the same rows (row count and an order-free
    digest of every value, ``BAR_DIGEST``). A fingerprint recorded by an earlier version (an XOR
    of the hashes) differs from every new one: that symbol is judged once more."""
    if symbols is not None and not symbols:
        return {}
    among = "WHERE list_contains(?, symbol)" if symbols is not None else ""
    return {
        symbol: f"{rows}:{digest}"
        for symbol, rows, digest in conn.execute(
            f"SELECT symbol, count(*), {BAR_DIGEST} FROM raw_bars {among} GROUP BY symbol",
            [list(symbols)] if symbols is not None else [],
        ).fetchall()
    }


def raw_universe(conn: duckdb.DuckDBPyConnection) -> int:
    """How many symbols the store holds raw bars of: the base of the failed share."""
    return int(conn.execute("SELECT count(DISTINCT symbol) FROM raw_bars").fetchall()[0][0])


def evaluate_quality(
    conn: duckdb.DuckDBPyConnection, run_id: str, rules
) -> tuple[QualityReport, int]:
    """Judge the pending bars by ``rules`` (data_refresh.quality), record verdicts and quarantine in one
    transaction; return the report and the number of bars judged."""
    quarantined = conn.execute("SELECT symbol, reasons, raw_fingerprint FROM quarantine").fetchall()
    fingerprints = raw_fingerprints(conn, [symbol for symbol, _, _ in quarantined])
    held = {
        symbol: json.loads(reasons)
        for symbol, reasons, fingerprint in quarantined
        if fingerprint is not None and fingerprints.get(symbol) == fingerprint
    }
    # A quarantined symbol whose raw bars are what was judged: the verdict stands, unjudged. One
    # whose raw bars changed (a correction) is judged again on its whole raw history, even where
    # the corrected rows equal validated ones, so a correction can release it. Either way its
    # pending bars are not what is judged.
    skip = [symbol for symbol, _, _ in quarantined]
    rejudge = [symbol for symbol, _, _ in quarantined if symbol not in held]
    whole = None
    if rejudge:
        whole = conn.execute(
            "SELECT symbol, date, open, high, low, close, volume, source FROM raw_bars "
            "WHERE list_contains(?, symbol) ORDER BY symbol, date",
            [rejudge],
        ).df()
        whole["date"] = pd.to_datetime(whole["date"]).astype("datetime64[ns]")

    def judge(pending: pd.DataFrame, context: pd.DataFrame) -> QualityReport:
        return validate_bars(
            pending,
            context,
            clock.today(),
            rules.max_abs_daily_move,
            rules.max_missing_sessions,
            rules.max_price_ratio,
        )

    # the runs read now, before their bars: bars a refresh adds meanwhile wait for the next gate
    runs = unapplied_runs(conn)
    # pending bars are raw bars: a store of fewer raw rows than the limit is judged in one piece
    # without counting them first (a second pass over the tables on every weekly refresh)
    raw_rows, universe = conn.execute(
        "SELECT count(*), count(DISTINCT symbol) FROM raw_bars"
    ).fetchall()[0]
    counts = pending_counts(conn, skip, runs) if raw_rows > PENDING_CHUNK_ROWS else []
    if raw_rows <= PENDING_CHUNK_ROWS or sum(rows for _, rows in counts) <= PENDING_CHUNK_ROWS:
        pending, context = pending_bars(conn, skip=skip, runs=runs)
        if whole is not None:
            pending = pd.concat([pending, whole], ignore_index=True).sort_values(
                ["symbol", "date"], kind="stable", ignore_index=True
            )
        report, judged = judge(pending, context), len(pending)
    else:
        # a first load of thousands of symbols: read and judged a range of symbols at a time
        # (every rule judges a symbol by its own rows), so memory stays bounded
        parts = [
            judge(*pending_bars(conn, skip, r, runs))
            for r in symbol_ranges(counts, PENDING_CHUNK_ROWS)
        ]
        if whole is not None:
            parts.append(judge(whole, whole.iloc[0:0]))
        report = QualityReport.merged(parts)
        judged = sum(rows for _, rows in counts) + (len(whole) if whole is not None else 0)
    report.held = held
    report.universe = int(universe)  # raw_universe(), from the count above
    # what a failing symbol's quarantine records: the raw bars it was judged on
    fingerprints.update(raw_fingerprints(conn, [s for s in report.errors if s not in fingerprints]))
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    log = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "symbol": symbol,
                "checked_at": now,
                "passed": symbol not in report.errors,
                "errors": json.dumps(report.errors.get(symbol, [])),
                "warnings": json.dumps(report.warnings.get(symbol, [])),
                "rows_checked": report.rows[symbol],
                "first_date": report.date_range[symbol][0],
                "last_date": report.date_range[symbol][1],
                "raw_fingerprint": fingerprints.get(symbol),
            }
            for symbol in report.symbols
        ],
        columns=[
            "run_id",
            "symbol",
            "checked_at",
            "passed",
            "errors",
            "warnings",
            "rows_checked",
            "first_date",
            "last_date",
            "raw_fingerprint",
        ],
    )
    verdicts = log  # noqa: F841 (read by name in the statements below, warehouse.py)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("INSERT INTO quality_log SELECT * EXCLUDE (raw_fingerprint) FROM verdicts")
        # released: quarantined symbols that passed now (most runs release none, fail none)
        if any(symbol in report.rows for symbol in skip if symbol not in report.errors):
            conn.execute(
                "DELETE FROM quarantine WHERE symbol IN (SELECT symbol FROM verdicts WHERE passed)"
            )
        if report.errors:
            conn.execute(
                """
                INSERT INTO quarantine (symbol, reasons, since, run_id, raw_fingerprint)
                SELECT symbol, errors, checked_at, run_id, raw_fingerprint FROM verdicts
                WHERE NOT passed
                ON CONFLICT (symbol) DO UPDATE SET reasons = excluded.reasons,
                    run_id = excluded.run_id, raw_fingerprint = excluded.raw_fingerprint
                """
            )
        conn.execute(
            "INSERT INTO gate_reads SELECT ?, unnest(?::VARCHAR[]), false, ? ON CONFLICT DO NOTHING",
            [run_id, runs, now],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return report, judged


PENDING_CHUNK_ROWS = 2_000_000  # pending bars read into memory at once


def load_report(conn: duckdb.DuckDBPyConnection, run_id: str) -> QualityReport | None:
    """The verdicts recorded by this run's quality gate, or None when it did not run."""
    rows = conn.execute(
        "SELECT symbol, passed, errors, warnings, rows_checked, first_date, last_date FROM quality_log WHERE run_id = ?",
        [run_id],
    ).fetchall()
    if not rows:
        return None
    report = QualityReport()
    report.universe = raw_universe(conn)
    for symbol, passed, errors, warnings, count, first, last in rows:
        report.rows[symbol] = count
        report.date_range[symbol] = (first, last)
        if not passed:
            report.errors[symbol] = json.loads(errors)
        if json.loads(warnings):
            report.warnings[symbol] = json.loads(warnings)
    return report


@dataclass(frozen=True)
class Written:
    """What ``apply_passing`` wrote to validated_bars."""

    bars: int  # bars upserted
    # passing symbols judged (one released with bars equal to its validated ones writes none)
    symbols: int


def apply_passing(conn: duckdb.DuckDBPyConnection, report: QualityReport, run_id: str) -> Written:
    """Upsert the pending bars of every passing symbol into validated_bars; return how many bars
    and symbols were written, not the bars themselves (a first load of thousands of symbols stays
    inside the database)."""
    # Only the span the gate judged of each passing symbol is read: a symbol can gain pending bars
    # between the gate and this step only through another writer, and bars the gate never judged
    # wait for the next run. An incremental run so compares days, not the whole history.
    judged = [(s, span) for s, span in report.date_range.items() if s not in report.errors]
    spans = pd.DataFrame(
        {
            "symbol": pd.Series([s for s, _ in judged], dtype="object"),
            "first": pd.to_datetime(pd.Series([span[0] for _, span in judged], dtype="object")),
            "last": pd.to_datetime(pd.Series([span[1] for _, span in judged], dtype="object")),
        }
    )
    since = min((span[0] for _, span in judged), default=None)
    judged_spans = spans  # noqa: F841 (read by name below, warehouse.py)
    conn.execute("BEGIN TRANSACTION")
    try:
        # found and written inside the database in one statement: no round trip of the bars
        # through pandas, and no table of them written, counted and dropped
        ((bars,),) = conn.execute(
            f"""
            INSERT OR REPLACE INTO validated_bars
            {_pending_sql("judged_spans", since=since)}
            SELECT symbol, date, open, high, low, close, volume, source, ? FROM pending
            ORDER BY symbol, date
            """,
            [run_id],
        ).fetchall()
        # the runs this gate read need not be compared again
        conn.execute("UPDATE gate_reads SET applied = true WHERE run_id = ?", [run_id])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Written(bars=int(bars), symbols=len(judged))


def quarantine_rows(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    """The quarantine as ``stage2 status --json`` shows it."""
    return [
        {
            "symbol": symbol,
            "reasons": json.loads(reasons),
            "since": since.isoformat() if since else None,
        }
        for symbol, reasons, since in conn.execute(
            "SELECT symbol, reasons, since FROM quarantine ORDER BY symbol"
        ).fetchall()
    ]
