"""predictions and shadow_comparison: models predicting side by side, and the paired verdicts."""

import datetime as dt

import dagster as dg
import pandas as pd

from stage2_assets.assets.features import features
from stage2_assets.assets.market_data import md_table
from stage2_assets.assets.training import REPLAY_TAG, ensemble_vN
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.promotion.shadow import (
    archive_predictions,
    fill_outcomes,
    log_predictions,
    run_comparisons,
    tracked_models,
)
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse, one


@dg.asset(
    partitions_def=weekly_partitions,
    group_name="shadow",
    kinds={"duckdb", "pytorch"},
    deps=[features],
)
def predictions(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    model_store: ModelStore,
    stage2_settings: Stage2Settings,
) -> dg.MaterializeResult:
    """What production and every shadow model predicted, per (model_version, symbol, date).

    Promises: a model predicts only dates after its cut-off, from that date's features alone; a
    logged prediction is never altered or duplicated; outcomes are filled in once known as of the
    run's date.
    """
    as_of = as_of_date(context)
    settings = stage2_settings.get()
    replay = context.run.tags.get(REPLAY_TAG) == "true"
    retention = settings.monitoring.predictions_retention
    with warehouse.connect() as conn:
        roles = tracked_models(
            conn, model_store, as_of, replay=replay, log_weeks=settings.replay.log_weeks
        )
        added = log_predictions(conn, model_store, roles, as_of, context.run.run_id)
        filled = fill_outcomes(conn, as_of)
        archived, archive = 0, None
        if retention is not None and not replay:  # a replay's report reads every logged row
            archived, archive = archive_predictions(
                conn,
                as_of - dt.timedelta(days=retention),
                settings.predictions_archive_path,
                context.run.run_id,
            )
        (total, unresolved) = one(conn, "SELECT count(*), count(*) - count(label) FROM predictions")
    # one read of the event log: versions that served (a demoted production is no candidate) or
    # were already announced
    quiet = set(model_store.production_history()) | {
        e["version"] for e in model_store.events() if e["event"] == "shadowed"
    }
    for version, role in roles.items():
        if role == "shadow" and version not in quiet:
            model_store.append_event(
                "shadowed",
                version,
                reason=f"predicting in shadow from the day after its cut-off "
                f"{model_store.metadata(version)['cutoff']} (first logged by the run as of {as_of})",
            )
    table = pd.DataFrame(
        [{"version": v, "role": r, "rows_added": added.get(v, 0)} for v, r in roles.items()]
    )
    return dg.MaterializeResult(
        metadata={
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "models": md_table(table),
            "rows_added": dg.MetadataValue.int(sum(added.values())),
            "outcomes_filled": dg.MetadataValue.int(filled),
            "rows_total": dg.MetadataValue.int(total),
            "rows_awaiting_outcome": dg.MetadataValue.int(unresolved),
            "rows_archived": dg.MetadataValue.int(archived),
            **({"archive": dg.MetadataValue.path(str(archive))} if archive else {}),
        }
    )


@dg.asset(
    partitions_def=weekly_partitions,
    group_name="shadow",
    kinds={"duckdb", "scipy"},
    deps=[predictions, ensemble_vN],
)
def shadow_comparison(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    model_store: ModelStore,
    stage2_settings: Stage2Settings,
) -> dg.MaterializeResult:
    """Each candidate whose shadow period ended, against production on exactly the same rows:
    McNemar's exact test, a paired per-day log-loss test, a day-block bootstrap interval for the
    accuracy difference, and the decision (promote, keep, insufficient data) with its reason.
    Every record can be recomputed from the stored predictions alone.
    """
    settings = stage2_settings.get()
    as_of = as_of_date(context)
    with warehouse.connect() as conn:
        roles = tracked_models(conn, model_store, as_of)
        records = run_comparisons(
            conn, model_store, roles, as_of, settings.ab_testing, context.run.run_id
        )
    for record in records:
        model_store.append_event(
            "compared",
            record["candidate"],
            reason=record["reason"],
            decision=record["decision"],
            rows=record["rows"],
            p_mcnemar=record["p_mcnemar"],
            as_of=as_of.isoformat(),
        )
    table = pd.DataFrame(records)
    metadata = {
        "as_of": dg.MetadataValue.text(as_of.isoformat()),
        "comparisons": dg.MetadataValue.int(len(records)),
    }
    if records:
        shown = table[
            [
                "candidate",
                "rows",
                "accuracy_diff",
                "ci_low",
                "ci_high",
                "p_mcnemar",
                "p_paired",
                "decision",
            ]
        ].round(4)
        best = max(records, key=lambda r: r["accuracy_diff"])
        metadata.update(
            {
                "results": md_table(shown),
                "accuracy_diff": dg.MetadataValue.float(round(best["accuracy_diff"], 5)),
                "p_mcnemar": dg.MetadataValue.float(round(best["p_mcnemar"], 6)),
                "p_paired": dg.MetadataValue.float(round(best["p_paired"], 6)),
                "decision": dg.MetadataValue.text(best["decision"]),
                "reason": dg.MetadataValue.text(best["reason"]),
            }
        )
    return dg.MaterializeResult(metadata=metadata)
