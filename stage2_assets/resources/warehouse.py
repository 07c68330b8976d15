"""The DuckDB warehouse: one file, the tables of the design, opened through dagster-duckdb.

Every write happens inside one transaction, so a crash leaves either the old or the new state.
DuckDB lets one process write a file at a time; a second writer waits (with back-off) and then
fails with a message that names the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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

# Nothing may phone home: DuckDB would otherwise fetch extensions from its repository on demand.
_OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def one(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """The first row of a query, with the result drained.

    DuckDB 2.0 leaves a result "unfinished" after ``fetchone()``, and the next ``register`` on the
    connection then fails; ``fetchall()`` drains it.
    """
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


class WarehouseBusyError(Stage2Error):
    """Another process holds the warehouse file."""


class Warehouse(DuckDBResource):
    """The stage2 warehouse file; ``connect()`` yields a connection with the schema in place."""

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        path = Path(self.database)
        if read_only and not path.exists():
            conn = duckdb.connect(":memory:", config=_OFFLINE)
            conn.execute(SCHEMA)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = backoff(
                    fn=duckdb.connect,
                    retry_on=(duckdb.IOException,),
                    kwargs={
                        "database": str(path),
                        "read_only": read_only,
                        "config": {**_OFFLINE, **self.connection_config},
                    },
                    max_retries=8,
                )
            except duckdb.IOException as exc:
                raise WarehouseBusyError(
                    f"warehouse {path} is in use by another process ({exc}); wait for it to finish"
                ) from None
            if not read_only:
                conn.execute(SCHEMA)
        try:
            yield conn
        finally:
            conn.close()

    def query_df(self, sql: str, params: list | None = None):
        """Run a read-only query and return a pandas frame."""
        with self.connect(read_only=True) as conn:
            return conn.execute(sql, params or []).df()
