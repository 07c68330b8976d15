"""features: the 14 point-in-time features and the label per (symbol, date)."""

import time

import dagster as dg
import pandas as pd

from stage2_assets.assets.market_data import table_summary, validated_bars
from stage2_assets.ml.features import FEATURE_COLUMNS, LABEL_COLUMNS, compute_features
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse

_COLUMNS = ["symbol", "date", *FEATURE_COLUMNS, *LABEL_COLUMNS]


@dg.asset(
    partitions_def=weekly_partitions,
    group_name="features",
    kinds={"duckdb", "pandas"},
    deps=[validated_bars],
)
def features(
    context: dg.AssetExecutionContext, warehouse: Warehouse, stage2_settings: Stage2Settings
) -> dg.MaterializeResult:
    """Features of every validated bar up to the as-of date, and labels as far as they are known.

    Promises: a feature for date t uses bars up to t only; rows without a full look-back are
    absent; a label is NULL until its horizon's bar exists on or before the as-of date. The table
    is replaced whole in one transaction.
    """
    horizon = stage2_settings.get().retraining.label_horizon_days
    as_of = as_of_date(context)
    with warehouse.connect() as conn:
        bars = conn.execute(
            "SELECT symbol, date, open, high, low, close, volume FROM validated_bars WHERE date <= ?",
            [as_of],
        ).df()
    bars["date"] = pd.to_datetime(bars["date"])
    started = time.perf_counter()
    table = compute_features(bars, horizon)
    seconds = time.perf_counter() - started
    table = table.assign(
        date=pd.to_datetime(table["date"]).dt.date,
        label_date=pd.to_datetime(table["label_date"]).dt.date,
    )
    with warehouse.connect() as conn:
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute("DELETE FROM features")
            conn.register("new_features", table)
            conn.execute(f"INSERT INTO features SELECT {', '.join(_COLUMNS)} FROM new_features")
            conn.unregister("new_features")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    labelled = table["label"].notna()
    return dg.MaterializeResult(
        metadata={
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "rows": dg.MetadataValue.int(len(table)),
            "labelled_rows": dg.MetadataValue.int(int(labelled.sum())),
            "share_up": dg.MetadataValue.float(
                round(float(table.loc[labelled, "label"].mean()), 4) if labelled.any() else 0.0
            ),
            "compute_seconds": dg.MetadataValue.float(round(seconds, 3)),
            "features": dg.MetadataValue.json(list(FEATURE_COLUMNS)),
            "table": dg.MetadataValue.json(table_summary(warehouse, "features")),
        }
    )
