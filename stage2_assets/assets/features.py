"""features: the 14 point-in-time features and the label per (symbol, date)."""

import datetime as dt
import json
import time

import dagster as dg
import pandas as pd

from stage2_assets.assets.market_data import table_summary, validated_bars
from stage2_assets.errors import TrainingError
from stage2_assets.ml.features import (
    FEATURE_COLUMNS,
    LABEL_COLUMNS,
    LEGACY_LABEL_RULE,
    LabelRule,
    compute_features,
    forward_returns,
)
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse, one, symbol_ranges

_COLUMNS = ["symbol", "date", *FEATURE_COLUMNS, *LABEL_COLUMNS]
_RULE_KEY = "features_label_rule"
_AS_OF_KEY = "features_as_of"  # the newest as-of the features were computed for


def stored_label_rule(conn) -> LabelRule | None:
    """The label rule the features table was computed under (None: no features yet)."""
    row = one(conn, "SELECT value FROM store_info WHERE key = ?", [_RULE_KEY])
    if row:
        return LabelRule.from_dict(json.loads(row[0]))
    (count,) = one(conn, "SELECT count(*) FROM features")
    return LEGACY_LABEL_RULE if count else None


def require_features_rule(conn, rule: LabelRule) -> None:
    """Refuse to train on features whose labels follow another rule than the configured one."""
    stored = stored_label_rule(conn)
    if stored is not None and stored != rule:
        raise TrainingError(
            f"the features table holds labels of another rule ({stored.describe()}) than the "
            f"configuration ({rule.describe()}): run `stage2 refresh` (or materialize features) "
            "to rebuild them under the configured rule, then train"
        )


def write_changed_rows(conn, table: pd.DataFrame, symbols: tuple[str, str] | None = None) -> int:
    """Make the features table equal to ``table`` by writing only what differs: rows that are new
    or whose values changed (a label now known, a revised bar) replace their stored row, stored
    rows absent from ``table`` go. With ``symbols`` (first, last), only the stored rows of the
    symbols in that range are compared and replaced. The caller holds the transaction. Returns the
    rows written.

    The same table as a DELETE of everything and an INSERT of ``table``, for a few thousand rows
    written a week instead of every row; readers order what they read."""
    columns = ", ".join(_COLUMNS)
    within, params = ("WHERE symbol BETWEEN ? AND ?", list(symbols)) if symbols else ("", [])
    conn.register("new_features", table)
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE changed_features AS SELECT {columns} FROM new_features "
            f"EXCEPT SELECT {columns} FROM features {within}",
            params,
        )
        conn.execute(
            f"DELETE FROM features f {within.replace('symbol', 'f.symbol')} "
            f"{'AND' if symbols else 'WHERE'} (NOT EXISTS (SELECT 1 FROM new_features n "
            "WHERE n.symbol = f.symbol AND n.date = f.date) OR EXISTS (SELECT 1 FROM "
            "changed_features c WHERE c.symbol = f.symbol AND c.date = f.date))",
            params,
        )
        conn.execute(f"INSERT INTO features SELECT {columns} FROM changed_features")
        (written,) = conn.execute("SELECT count(*) FROM changed_features").fetchone()
        conn.execute("DROP TABLE changed_features")
    finally:
        conn.unregister("new_features")
    return int(written)


FEATURE_CHUNK_BARS = 400_000  # bars computed at once (about 0.5 GiB at the peak)


def _bars(conn, computed: dt.date, symbols: tuple[str, str] | None) -> pd.DataFrame:
    """Validated bars up to ``computed`` (of the symbols in the range)."""
    within = " AND symbol BETWEEN ? AND ?" if symbols else ""
    bars = conn.execute(
        "SELECT symbol, date, open, high, low, close, volume FROM validated_bars "
        f"WHERE date <= ?{within}",
        [computed, *(symbols or ())],
    ).df()
    bars["date"] = pd.to_datetime(bars["date"])
    return bars


@dg.asset(
    partitions_def=weekly_partitions,
    group_name="features",
    kinds={"duckdb", "pandas"},
    deps=[validated_bars],
)
def features(
    context: dg.AssetExecutionContext, warehouse: Warehouse, stage2_settings: Stage2Settings
) -> dg.MaterializeResult:
    """Features of every validated bar up to the as-of date (or the newest week already
    computed, on a rerun of an earlier week), and labels as far as they are known.

    Promises: a feature for date t uses bars up to t only; rows without a full look-back are
    absent; a label (the configured tradable rule, recorded in ``store_info``) is NULL until its
    last bar exists on or before the as-of date. The table is made equal to the computed one in
    one transaction (only changed rows written; a universe of more than FEATURE_CHUNK_BARS
    bars, one per range of symbols), so a change of label rule rewrites every row on the next
    refresh.
    """
    rule = stage2_settings.get().label_rule
    as_of = as_of_date(context)
    with warehouse.connect() as conn:
        # a rerun of an earlier week keeps the table as of the newest week computed: every reader
        # filters by date and label date (training, predictions, outcomes), so the later rows leak
        # nothing into that week, and the live predictions keep their fresh features
        row = conn.execute("SELECT value FROM store_info WHERE key = ?", [_AS_OF_KEY]).fetchone()
        computed = max(as_of, dt.date.fromisoformat(row[0])) if row else as_of
        counts = conn.execute(
            "SELECT symbol, count(*) FROM validated_bars WHERE date <= ? GROUP BY symbol ORDER BY symbol",
            [computed],
        ).fetchall()
    # A universe of thousands of symbols is computed in ranges of whole symbols (a feature looks
    # at its own symbol only), so memory stays bounded; a market-neutral label then needs the
    # market's mean forward return per date from every range first.
    ranges = symbol_ranges(counts, FEATURE_CHUNK_BARS)
    several = len(ranges) > 1
    market_mean = None
    seconds, rows, labelled, ups, changed = 0.0, 0, 0, 0, 0
    with warehouse.connect() as conn:
        if several and rule.kind == "excess_direction":
            parts = [forward_returns(_bars(conn, computed, r), rule) for r in ranges]
            market_mean = pd.concat(parts).groupby("date")["fwd_return"].mean()
            del parts
        conn.execute("BEGIN TRANSACTION")
        try:
            for symbols in ranges or [None]:
                bars = _bars(conn, computed, symbols if several else None)
                started = time.perf_counter()
                table = compute_features(bars, rule, market_mean)
                seconds += time.perf_counter() - started
                del bars
                table = table.assign(
                    date=pd.to_datetime(table["date"]).dt.date,
                    label_date=pd.to_datetime(table["label_date"]).dt.date,
                )
                changed += write_changed_rows(conn, table, symbols if several else None)
                known = table["label"].notna()
                rows, labelled = rows + len(table), labelled + int(known.sum())
                ups += int(table.loc[known, "label"].sum())
                del table
                if several:
                    # DuckDB keeps a transaction's new rows in memory until it commits: each
                    # range is committed, so memory stays bounded. Features are a function of
                    # the validated bars, every row is whole, and an interrupted run leaves
                    # ranges as they were, for the next run to bring up to date (store_info's
                    # as-of is written last).
                    conn.execute("COMMIT")
                    conn.execute("BEGIN TRANSACTION")
            if several:  # the rows of symbols no longer validated at all
                conn.execute(
                    "DELETE FROM features WHERE NOT list_contains(?, symbol)",
                    [[symbol for symbol, _ in counts]],
                )
            conn.execute(
                "INSERT OR REPLACE INTO store_info VALUES (?, ?), (?, ?)",
                [_RULE_KEY, json.dumps(rule.as_dict()), _AS_OF_KEY, computed.isoformat()],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return dg.MaterializeResult(
        metadata={
            "rows_written": dg.MetadataValue.int(changed),
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "computed_as_of": dg.MetadataValue.text(computed.isoformat()),
            "rows": dg.MetadataValue.int(rows),
            "labelled_rows": dg.MetadataValue.int(labelled),
            "share_up": dg.MetadataValue.float(round(ups / labelled, 4) if labelled else 0.0),
            "symbol_ranges": dg.MetadataValue.int(len(ranges)),
            "compute_seconds": dg.MetadataValue.float(round(seconds, 3)),
            "features": dg.MetadataValue.json(list(FEATURE_COLUMNS)),
            "label_rule": dg.MetadataValue.text(rule.describe()),
            "table": dg.MetadataValue.json(table_summary(warehouse, "features")),
        }
    )
