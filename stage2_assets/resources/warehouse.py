"""The DuckDB warehouse: one file, the tables of the design, opened through dagster-duckdb.

Every write happens inside one transaction, so a crash leaves either the old or the new state.
DuckDB lets one process write a file at a time; a second writer waits (with back-off) and then
fails with a message that names the file.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
from dagster._utils.backoff import backoff
from dagster_duckdb import DuckDBResource

from stage2_assets.errors import Stage2Error
from stage2_assets.ml.features import FEATURE_COLUMNS

FEATURE_SQL_COLUMNS = ",\n    ".join(f"{name} DOUBLE" for name in FEATURE_COLUMNS)
# Columns added after a table first shipped: a store built before gains them on its next write.
# Writers insert BY NAME, so the order of columns in an old or a new table does not matter.
_ADDED = {
    "shadow_comparisons": (
        "metric VARCHAR",
        "statistic DOUBLE",
        "p_value DOUBLE",
        "effect DOUBLE",
        "lower_bound DOUBLE",
        "upper_bound DOUBLE",
        "mde DOUBLE",
        "alpha DOUBLE",
        "decided_on DATE",
    ),
    "degradation_log": ("recent_days INTEGER", "baseline_days INTEGER"),
    "quarantine": ("raw_fingerprint VARCHAR",),
    "model_performance": (
        "always_up_accuracy DOUBLE",
        "climatology DOUBLE",
        "brier_skill DOUBLE",
    ),
}
ADDED_COLUMNS = "\n".join(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column};"
    for table, columns in _ADDED.items()
    for column in columns
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS store_info (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS raw_bars (
    symbol VARCHAR NOT NULL, date DATE NOT NULL,
    open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE,
    source VARCHAR NOT NULL, run_id VARCHAR, fetched_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS raw_bars_replaced (
    symbol VARCHAR NOT NULL, date DATE NOT NULL,
    open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE,
    source VARCHAR NOT NULL, run_id VARCHAR, fetched_at TIMESTAMP,
    replaced_at TIMESTAMP, replaced_by_run VARCHAR
);
CREATE TABLE IF NOT EXISTS refresh_log (
    run_id VARCHAR, symbol VARCHAR, as_of DATE, requested_start DATE,
    fetched INTEGER, new INTEGER, revised INTEGER, first_date DATE, last_date DATE,
    error VARCHAR, duration_s DOUBLE, logged_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS refresh_notes (
    run_id VARCHAR, as_of DATE, kind VARCHAR, subject VARCHAR, detail VARCHAR, logged_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS validated_bars (
    symbol VARCHAR NOT NULL, date DATE NOT NULL,
    open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE,
    source VARCHAR NOT NULL, validated_run_id VARCHAR,
    PRIMARY KEY (symbol, date)
);
CREATE TABLE IF NOT EXISTS quality_log (
    run_id VARCHAR, symbol VARCHAR, checked_at TIMESTAMP, passed BOOLEAN,
    errors VARCHAR, warnings VARCHAR, rows_checked INTEGER, first_date DATE, last_date DATE
);
CREATE TABLE IF NOT EXISTS gate_reads (
    run_id VARCHAR NOT NULL, raw_run_id VARCHAR NOT NULL, applied BOOLEAN, read_at TIMESTAMP,
    PRIMARY KEY (run_id, raw_run_id)
);
CREATE TABLE IF NOT EXISTS quarantine (
    symbol VARCHAR PRIMARY KEY, reasons VARCHAR, since TIMESTAMP, run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS features (
    symbol VARCHAR NOT NULL, date DATE NOT NULL,
    {FEATURE_SQL_COLUMNS},
    label TINYINT, fwd_return DOUBLE, label_date DATE,
    PRIMARY KEY (symbol, date)
);
CREATE TABLE IF NOT EXISTS predictions (
    model_version VARCHAR NOT NULL, role VARCHAR NOT NULL, symbol VARCHAR NOT NULL, date DATE NOT NULL,
    prob_up DOUBLE, confidence DOUBLE, logged_at TIMESTAMP, logged_as_of DATE, run_id VARCHAR,
    label TINYINT, fwd_return DOUBLE, label_date DATE, outcome_filled_at TIMESTAMP,
    PRIMARY KEY (model_version, symbol, date)
);
CREATE TABLE IF NOT EXISTS model_performance (
    model_version VARCHAR NOT NULL, role VARCHAR, as_of DATE NOT NULL, window_start DATE, window_end DATE,
    rows INTEGER, days INTEGER, accuracy DOUBLE, balanced_accuracy DOUBLE, log_loss DOUBLE, brier DOUBLE,
    ece DOUBLE, mean_confidence DOUBLE, share_up DOUBLE, sharpe DOUBLE, max_drawdown DOUBLE,
    reliability VARCHAR, run_id VARCHAR,
    PRIMARY KEY (model_version, as_of)
);
CREATE TABLE IF NOT EXISTS shadow_comparisons (
    candidate VARCHAR NOT NULL, production VARCHAR, as_of DATE NOT NULL, period_start DATE, period_end DATE,
    rows INTEGER, days INTEGER, candidate_accuracy DOUBLE, production_accuracy DOUBLE, accuracy_diff DOUBLE,
    ci_low DOUBLE, ci_high DOUBLE, p_mcnemar DOUBLE, p_paired DOUBLE, decision VARCHAR, reason VARCHAR,
    details VARCHAR, run_id VARCHAR, decided_at TIMESTAMP,
    PRIMARY KEY (candidate, as_of)
);
CREATE TABLE IF NOT EXISTS degradation_log (
    model_version VARCHAR NOT NULL, as_of DATE NOT NULL, recent_rows INTEGER, baseline_rows INTEGER,
    recent_accuracy DOUBLE, baseline_accuracy DOUBLE, drop DOUBLE, p_value DOUBLE, degraded BOOLEAN,
    reason VARCHAR, run_id VARCHAR,
    PRIMARY KEY (model_version, as_of)
);
{ADDED_COLUMNS}
"""

# The schema a store was last brought up to, recorded in store_info: a writable connection runs
# SCHEMA (creating tables, adding the columns of ADDED_COLUMNS to an old store) only when the text
# changed since, so opening a current store costs one lookup instead of a dozen DDL statements.
SCHEMA_VERSION = hashlib.sha256(SCHEMA.encode()).hexdigest()[:16]
_SCHEMA_KEY = "schema_version"

# Nothing may phone home: DuckDB would otherwise fetch extensions from its repository on demand.
_OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
# DuckDB's own default takes 80% of the machine's memory for its buffers and keeps what it took;
# stage2's largest statements (a first load of thousands of symbols) spill to disk beyond this
# instead. STAGE2_DUCKDB_MEMORY_LIMIT (a DuckDB size: "4GiB", "25%") overrides it.
_MEMORY = {"memory_limit": os.environ.get("STAGE2_DUCKDB_MEMORY_LIMIT", "2GiB")}


# A pandas frame that a hot statement reads is named by a local variable of the function that runs
# the statement, and DuckDB reads it by that name (a replacement scan, on by default): registering
# a view of it and dropping it after cost 1.5-2 ms a frame, several times in each weekly refresh
# and gate. The names are ones no table of the store has (a table of that name would be read).
# The functions that do so say "read by name".

# An order-free digest of a group of bars' values: equal for the same rows, each as many times (a
# sum, not an XOR, which cancels a day's two copies and would miss both being changed alike).
BAR_DIGEST = "sum(hash(date, open, high, low, close, volume)::HUGEINT)"


def one(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """The first row of a query, with the result drained.

    DuckDB 2.0 leaves a result "unfinished" after ``fetchone()``, and the next ``register`` on the
    connection then fails; ``fetchall()`` drains it.
    """
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the store has this table yet (a store opened read-only keeps its old schema)."""
    return (
        one(
            conn,
            "SELECT count(*) FROM duckdb_tables() "
            "WHERE table_name = ? AND database_name = current_database()",
            [name],
        )[0]
        > 0
    )


def _ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Bring the store to SCHEMA unless store_info says it already is."""
    try:
        current = one(conn, "SELECT value FROM store_info WHERE key = ?", [_SCHEMA_KEY])
    except duckdb.CatalogException:  # a new file: no store_info yet
        current = None
    if current is not None and current[0] == SCHEMA_VERSION:
        return
    conn.execute(SCHEMA)
    conn.execute("INSERT OR REPLACE INTO store_info VALUES (?, ?)", [_SCHEMA_KEY, SCHEMA_VERSION])


class WarehouseBusyError(Stage2Error):
    """Another process holds the warehouse file."""


class WarehouseCorruptError(Stage2Error):
    """The warehouse file cannot be read: truncated, overwritten, not a DuckDB file."""


class _Locked(Exception):
    """DuckDB's lock is held by another process (worth waiting for)."""


_LOCK_HOLDER = re.compile(r"\(PID (\d+)\)")
# What DuckDB says of a file it cannot read as a database (truncated, overwritten, not DuckDB)
_CORRUPT_SIGNS = (
    "not a valid DuckDB database file",
    "Could not read enough bytes",
    "Corrupt",
    "checksum",
    "Serialization Error",
    "INTERNAL Error",
)


def _corrupt(path: Path, exc: BaseException | str) -> WarehouseCorruptError:
    return WarehouseCorruptError(
        f"warehouse {path} is corrupt and cannot be read (DuckDB: {str(exc).splitlines()[0]}); "
        "nothing was answered from it. Restore the last backup with `stage2 restore BACKUP_DIR` "
        "(see docs/runbook.md), or move the file aside and refresh into a new store"
    )


def _looks_corrupt(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, (duckdb.SerializationException, duckdb.InternalException)) or any(
        sign in text for sign in _CORRUPT_SIGNS
    )


def _busy(path: Path, exc: BaseException) -> WarehouseBusyError:
    """Name the process that holds the lock, and whether it is alive here."""
    from stage2_assets.processes import pid_alive

    match = _LOCK_HOLDER.search(str(exc))
    if match and pid_alive(int(match.group(1))):
        holder = f"process {match.group(1)}, running"
        advice = "wait for it to finish (or stop it), then run the command again"
    elif match:
        holder = f"process {match.group(1)}, which is not running on this machine"
        advice = "another machine or container uses the file: stop it there first"
    else:
        holder = "another process"
        advice = "wait for it to finish, then run the command again"
    return WarehouseBusyError(f"warehouse {path} is in use by {holder}: {advice}")


_HEADERS = 3 * 4096  # DuckDB's main header and its two database headers


def _check_length(conn: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    """A file cut short opens, and may answer the queries that touch only its first blocks: its
    length must at least hold the blocks in use (each has a slot of its own; free blocks may lie
    past the end of the file, so the total is no bound). Skipped while a write-ahead log is pending."""
    if Path(f"{path}.wal").exists():
        return
    block_size, used_blocks = one(
        conn,
        "SELECT block_size, used_blocks FROM pragma_database_size() WHERE database_name = ?",
        [alias],
    )
    expected = _HEADERS + int(used_blocks) * int(block_size)
    length = path.stat().st_size
    if length < expected:
        raise _corrupt(
            path, f"the file holds {length} bytes, fewer than the {expected} its blocks in use need"
        )


class _Attached:
    """A warehouse file attached to this process's DuckDB instance, and the threads using it."""

    def __init__(self, alias: str, read_only: bool):
        self.alias, self.read_only = alias, read_only
        self.users: Counter[int] = Counter()  # thread id -> open connections


# Creating a DuckDB instance costs 20-35 ms here (its catalog of built-in functions) and closing a
# file's instance about as much again; a refresh and its gate open the warehouse several times.
# So each process keeps one in-memory instance per configuration and attaches a warehouse file to
# it while a connection uses it: the file is detached (checkpointed, its lock released) when the
# last connection closes, as closing its own instance did, so other processes see the same
# locking as before. Keyed by process id: a forked child builds its own.
_SHARED = threading.Condition()
_INSTANCES: dict[tuple, duckdb.DuckDBPyConnection] = {}
_FILES: dict[tuple, _Attached] = {}
_ALIASES = itertools.count()
_SPILL: dict[tuple, str] = {}  # instance -> the spill folder it was last pointed at
# How long a write waits for other threads' reads of the file in this process to end.
_READERS_WAIT_S = 60.0


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _instance(key: tuple, config: dict) -> duckdb.DuckDBPyConnection:
    if key not in _INSTANCES:
        _INSTANCES[key] = duckdb.connect(":memory:", config=config)
    return _INSTANCES[key]


def _release(instance: tuple) -> None:
    """With no file attached to it, an instance that spilled to disk is closed: DuckDB removes
    its spill folder (``<warehouse>.tmp``) only then, and it cannot move it elsewhere."""
    if any(key[:2] == instance for key in _FILES):
        return
    base = _INSTANCES[instance]
    spill = _SPILL.get(instance)  # the folder it was last pointed at (asked, where unknown)
    if spill is None:
        (spill,) = one(base, "SELECT current_setting('temp_directory')")
    if Path(spill).is_dir():
        del _INSTANCES[instance]
        _SPILL.pop(instance, None)
        base.close()


class Warehouse(DuckDBResource):
    """The stage2 warehouse file; ``connect()`` yields a connection with the schema in place.

    A file another process holds is waited for (with back-off) and then reported busy, naming the
    holder; a file DuckDB cannot read is reported corrupt, naming the way back, whether that shows
    when it is opened or in a query."""

    def _attach(
        self, base: duckdb.DuckDBPyConnection, instance: tuple, path: Path, read_only: bool
    ) -> str:
        """Attach the file to ``base`` (the instance ``instance``) under a fresh alias (waiting out
        another process's lock) and check it is whole; return the alias."""
        alias = f"warehouse_{next(_ALIASES)}"
        mode = " (READ_ONLY)" if read_only else ""

        def attempt() -> None:
            try:
                base.execute(f"ATTACH {_sql_text(str(path))} AS {alias}{mode}")
            except duckdb.IOException as exc:
                if "Could not set lock" in str(exc):
                    raise _Locked(str(exc)) from None
                raise

        try:
            backoff(fn=attempt, retry_on=(_Locked,), max_retries=8)
        except _Locked as exc:
            raise _busy(path, exc) from None
        except duckdb.Error as exc:
            if _looks_corrupt(exc):
                raise _corrupt(path, exc) from None
            raise Stage2Error(
                f"warehouse {path} cannot be opened (DuckDB: {str(exc).splitlines()[0]})"
            ) from None
        try:
            _check_length(base, path, alias)
        except WarehouseCorruptError:
            base.execute(f"DETACH {alias}")
            raise
        # what spills goes beside the file, as with the file's own instance (unless another
        # warehouse's spill files are in use: they stay where they are)
        with suppress(duckdb.Error):
            base.execute(f"SET temp_directory = {_sql_text(f'{path}.tmp')}")
            _SPILL[instance] = f"{path}.tmp"
        return alias

    @contextmanager
    def _file(self, path: Path, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection whose default database is the warehouse file, attached while in use. A
        reader shares a writer's attachment in this process; a writer waits for other threads'
        reads to end (the file is attached read-only meanwhile) and is refused at once where its
        own thread holds a read, which would never end first."""
        config = {**_OFFLINE, **_MEMORY, **self.connection_config}
        instance = (os.getpid(), tuple(sorted(map(str, config.items()))))
        key = (*instance, str(path.resolve()))
        me = threading.get_ident()
        with _SHARED:
            base = _instance(instance, config)
            entry = _FILES.get(key)
            if entry is not None and entry.read_only and not read_only:
                if entry.users[me] or not _SHARED.wait_for(
                    lambda: _FILES.get(key) is None, timeout=_READERS_WAIT_S
                ):
                    raise Stage2Error(
                        f"warehouse {path} is open read-only in this process: a write must wait "
                        "until that connection closes"
                    )
                entry = None
            if entry is None:
                entry = _Attached(self._attach(base, instance, path, read_only), read_only)
                _FILES[key] = entry
            entry.users[me] += 1
        conn = None
        try:
            conn = base.cursor()
            conn.execute(f"USE {entry.alias}")
            yield conn
        finally:
            if conn is not None:
                conn.close()
            with _SHARED:
                entry.users[me] -= 1
                if entry.users[me] == 0:
                    del entry.users[me]
                if not entry.users:
                    del _FILES[key]
                    try:
                        base.execute(f"DETACH {entry.alias}")
                        _release(instance)
                    finally:
                        _SHARED.notify_all()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        path = Path(self.database)
        if read_only and not path.exists():
            conn = duckdb.connect(":memory:", config=_OFFLINE)
            conn.execute(SCHEMA)
            try:
                yield conn
            finally:
                conn.close()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._file(path, read_only) as conn:
            if not read_only:
                try:
                    _ensure_schema(conn)
                except duckdb.Error as exc:
                    if _looks_corrupt(exc):
                        raise _corrupt(path, exc) from None
                    raise
            try:
                yield conn
            except duckdb.Error as exc:
                if _looks_corrupt(exc):  # a file that opened but breaks when read
                    raise _corrupt(path, exc) from None
                raise

    def query_df(self, sql: str, params: list | None = None):
        """Run a read-only query and return a pandas frame."""
        with self.connect(read_only=True) as conn:
            return conn.execute(sql, params or []).df()


def symbol_ranges(counts: list[tuple[str, int]], limit: int) -> list[tuple[str, str]]:
    """Consecutive (first, last) symbol ranges of about ``limit`` bars each, from (symbol, bars)
    sorted by symbol; one range for a universe within the limit."""
    ranges, first, previous, total = [], None, None, 0
    for symbol, bars in counts:
        if first is not None and total + bars > limit:
            ranges.append((first, previous))
            first, total = None, 0
        first = symbol if first is None else first
        total += bars
        previous = symbol
    if first is not None:
        ranges.append((first, previous))
    return ranges
