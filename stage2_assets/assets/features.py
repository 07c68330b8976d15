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
)
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse, one

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


def write_changed_rows(conn, table: pd.DataFrame) -> int:
    """Make the features table equal to ``table`` by writing only what differs: rows that are new
    or whose values changed (a label now known, a revised bar) replace their stored row, stored
    rows absent from ``table`` go. The caller holds the transaction. Returns the rows written.

    The same table as a DELETE of everything and an INSERT of ``table``, for a few thousand rows
    written a week instead of every row; readers order what they read."""
    columns = ", ".join(_COLUMNS)
    conn.register("new_features", table)
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE changed_features AS "
            f"SELECT {columns} FROM new_features EXCEPT SELECT {columns} FROM features"
        )
        conn.execute(
            "DELETE FROM features f WHERE NOT EXISTS (SELECT 1 FROM new_features n "
            "WHERE n.symbol = f.symbol AND n.date = f.date) OR EXISTS (SELECT 1 FROM "
            "changed_features c WHERE c.symbol = f.symbol AND c.date = f.date)"
        )
        conn.execute(f"INSERT INTO features SELECT {columns} FROM changed_features")
        (written,) = conn.execute("SELECT count(*) FROM changed_features").fetchone()
        conn.execute("DROP TABLE changed_features")
    finally:
        conn.unregister("new_features")
    return int(written)


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
    one transaction (only changed rows written), so a change of label rule rewrites every row
    on the next refresh.
    """
    rule = stage2_settings.get().label_rule
    as_of = as_of_date(context)
    with warehouse.connect() as conn:
        # a rerun of an earlier week keeps the table as of the newest week computed: every reader
        # filters by date and label date (training, predictions, outcomes), so the later rows leak
        # nothing into that week, and the live predictions keep their fresh features
        row = conn.execute("SELECT value FROM store_info WHERE key = ?", [_AS_OF_KEY]).fetchone()
        computed = max(as_of, dt.date.fromisoformat(row[0])) if row else as_of
        bars = conn.execute(
            "SELECT symbol, date, open, high, low, close, volume FROM validated_bars WHERE date <= ?",
            [computed],
        ).df()
    bars["date"] = pd.to_datetime(bars["date"])
    started = time.perf_counter()
    table = compute_features(bars, rule)
    seconds = time.perf_counter() - started
    table = table.assign(
        date=pd.to_datetime(table["date"]).dt.date,
        label_date=pd.to_datetime(table["label_date"]).dt.date,
    )
    with warehouse.connect() as conn:
        conn.execute("BEGIN TRANSACTION")
        try:
            changed = write_changed_rows(conn, table)
            conn.execute(
                "INSERT OR REPLACE INTO store_info VALUES (?, ?), (?, ?)",
                [_RULE_KEY, json.dumps(rule.as_dict()), _AS_OF_KEY, computed.isoformat()],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    labelled = table["label"].notna()
    return dg.MaterializeResult(
        metadata={
            "rows_written": dg.MetadataValue.int(changed),
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "computed_as_of": dg.MetadataValue.text(computed.isoformat()),
            "rows": dg.MetadataValue.int(len(table)),
            "labelled_rows": dg.MetadataValue.int(int(labelled.sum())),
            "share_up": dg.MetadataValue.float(
                round(float(table.loc[labelled, "label"].mean()), 4) if labelled.any() else 0.0
            ),
            "compute_seconds": dg.MetadataValue.float(round(seconds, 3)),
            "features": dg.MetadataValue.json(list(FEATURE_COLUMNS)),
            "label_rule": dg.MetadataValue.text(rule.describe()),
            "table": dg.MetadataValue.json(table_summary(warehouse, "features")),
        }
    )
