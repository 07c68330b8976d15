"""model_performance and the degradation check."""

import dagster as dg

from stage2_assets.assets.market_data import md_table
from stage2_assets.assets.shadow import predictions
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.promotion.shadow import check_degradation, record_performance, tracked_models
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse

_HEADLINE = (
    "accuracy",
    "balanced_accuracy",
    "ece",
    "brier",
    "sharpe",
    "max_drawdown",
    "mean_confidence",
    "share_up",
)


@dg.asset(
    partitions_def=weekly_partitions, group_name="monitoring", kinds={"duckdb"}, deps=[predictions]
)
def model_performance(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    model_store: ModelStore,
    stage2_settings: Stage2Settings,
) -> dg.MaterializeResult:
    """Per tracked model over the rolling window ending at the as-of date: accuracy, balanced
    accuracy, ECE and Brier with a reliability table, Sharpe and max drawdown of the long/short
    strategy after costs, share of bullish calls. Also judges production for degradation against
    its own first live days, on later rows, day by day (``degradation_log``), which the
    degradation check reports.
    """
    settings = stage2_settings.get()
    mon, ab = settings.monitoring, settings.ab_testing
    as_of = as_of_date(context)
    with warehouse.connect() as conn:
        roles = tracked_models(conn, model_store, as_of)
        table = record_performance(
            conn, roles, as_of, mon.performance_window, mon.transaction_cost_bps, context.run.run_id
        )
        degradation = check_degradation(
            conn,
            model_store,
            as_of,
            mon.performance_window,
            mon.degradation_threshold,
            mon.degradation_level,
            ab.min_samples,
            context.run.run_id,
        )
    metadata = {
        "as_of": dg.MetadataValue.text(as_of.isoformat()),
        "models": dg.MetadataValue.int(len(table)),
    }
    if not table.empty:
        metadata["by_model"] = md_table(
            table[["model_version", "role", "rows", *_HEADLINE]].round(4)
        )
        production = table[table["role"] == "production"]
        if not production.empty:
            row = production.iloc[0]
            metadata.update(
                {
                    f"production_{k}": dg.MetadataValue.float(round(float(row[k]), 5))
                    for k in _HEADLINE
                }
            )
            metadata["production_reliability"] = dg.MetadataValue.json(row["reliability"])
    if degradation:
        metadata["degraded"] = dg.MetadataValue.bool(degradation["degraded"])
        metadata["degradation"] = dg.MetadataValue.text(degradation["reason"])
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=model_performance,
    description="Production's recent accuracy has not dropped significantly below its own earlier record.",
)
def model_performance_production_not_degraded(
    context: dg.AssetCheckExecutionContext, warehouse: Warehouse, model_store: ModelStore
) -> dg.AssetCheckResult:
    production = model_store.production()
    with warehouse.connect(read_only=True) as conn:
        row = conn.execute(
            "SELECT * FROM degradation_log WHERE model_version = ? ORDER BY as_of DESC LIMIT 1",
            [production or ""],
        ).df()
    if row.empty:
        return dg.AssetCheckResult(passed=True, description="no production version judged yet")
    record = row.iloc[0]
    return dg.AssetCheckResult(
        passed=not bool(record["degraded"]),
        severity=dg.AssetCheckSeverity.ERROR,
        description=record["reason"],
        metadata={
            "model_version": dg.MetadataValue.text(record["model_version"]),
            "as_of": dg.MetadataValue.text(str(record["as_of"])[:10]),
            "recent_accuracy": dg.MetadataValue.float(float(record["recent_accuracy"])),
            "baseline_accuracy": dg.MetadataValue.float(float(record["baseline_accuracy"])),
            "drop": dg.MetadataValue.float(float(record["drop"])),
            "p_value": dg.MetadataValue.float(float(record["p_value"])),
        },
    )
