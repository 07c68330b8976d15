"""ensemble_vN: a new candidate ensemble each week, saved as a new version in the model store."""

import datetime as dt

import dagster as dg
import pandas as pd

from stage2_assets.assets.features import features, require_features_rule
from stage2_assets.assets.market_data import md_table
from stage2_assets.errors import TrainingError
from stage2_assets.market.calendar import sessions_after
from stage2_assets.ml.candidate import (
    build_candidate,
    candidate_split,
    hyperparameters,
    split_fingerprint,
)
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.promotion.shadow import arm_versions, shadow_candidates
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse

# Re-running a week reuses its candidate (same cut-off, training data and hyperparameters) instead of
# adding a second one: each week brings one candidate, the count the yearly error budget assumes.
# A run tagged "false" trains anew (a determinism check).
REUSE_TAG = "stage2/reuse_version"
REPLAY_TAG = "stage2/replay"  # a walk-forward replay's run: its reference arms are logged too


def require_fresh(newest, cutoff, max_stale: int) -> None:
    """Refuse a candidate whose cut-off lies past the data by more than ``max_stale`` sessions."""
    if newest is None or pd.isna(newest):
        return  # no features at all: the split says so, with its own message
    newest = pd.Timestamp(newest).date()
    stale = sessions_after(newest, cutoff)
    if stale > max_stale:
        raise TrainingError(
            f"the newest features are from {newest}, {stale} sessions before the cut-off {cutoff} "
            f"(data_refresh.max_stale_sessions allows {max_stale}): refresh the data, or choose a "
            f"cut-off at most {max_stale} sessions after {newest}"
        )


def window_rows(conn, cutoff: dt.date, window_days: int) -> pd.DataFrame:
    """The feature rows of the window ending at ``cutoff``, the only ones the split keeps (dates
    after cut-off - data_window), read without the years before it."""
    start = cutoff - dt.timedelta(days=window_days)
    return conn.execute("SELECT * FROM features WHERE date > ? AND date <= ?", [start, cutoff]).df()


def find_same_candidate(
    store: ModelStore, cutoff, data_fingerprint: str, params: dict
) -> str | None:
    """A stored version trained on exactly these inputs, if any."""
    for version in reversed(store.versions()):
        meta = store.metadata(version)
        if (
            meta.get("cutoff") == cutoff.isoformat()
            and meta.get("data_fingerprint") == data_fingerprint
            and meta.get("hyperparameters") == params
        ):
            return version
    return None


@dg.asset(
    partitions_def=weekly_partitions,
    group_name="training",
    kinds={"pytorch", "lightning"},
    deps=[features],
)
def ensemble_vN(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    model_store: ModelStore,
    stage2_settings: Stage2Settings,
) -> dg.MaterializeResult:
    """A candidate trained on the rolling window ending at the partition's cut-off (its as-of date).

    Promises: no row with a date or a label date after the cut-off is seen; the validation slice is
    the last part of the window in time, after an embargo of the label horizon; the version is a new
    directory in the model store, never an overwrite, and appears whole or not at all.
    """
    settings = stage2_settings.get()
    cutoff = as_of_date(context)
    rule = settings.label_rule
    with warehouse.connect(read_only=True) as conn:
        require_features_rule(conn, rule)
        (newest,) = conn.execute(
            "SELECT max(date) FROM features WHERE date <= ?", [cutoff]
        ).fetchone()
        table = window_rows(conn, cutoff, settings.retraining.data_window)
    require_fresh(newest, cutoff, settings.data_refresh.max_stale_sessions)
    split = candidate_split(table, cutoff, settings.retraining, rule)
    reused = None
    if context.run.tags.get(REUSE_TAG, "true") != "false":
        reused = find_same_candidate(
            model_store,
            cutoff,
            split_fingerprint(split, settings.retraining.refit),
            hyperparameters(settings.retraining, rule),
        )
    if reused:
        version, metadata = reused, model_store.metadata(reused)
        context.log.info(f"reusing {version}: same cut-off, training data and hyperparameters")
    else:
        tensors, metadata = build_candidate(split, cutoff, settings.retraining, rule=rule)
        version = model_store.save_version(
            tensors, {**metadata, "dagster_run_id": context.run.run_id}
        )
    with warehouse.connect(read_only=True) as conn:
        in_shadow = shadow_candidates(conn, model_store)
    replay = context.run.tags.get(REPLAY_TAG) == "true"
    removed = model_store.prune(
        settings.retraining.keep_versions,
        protect=[
            *in_shadow,
            *arm_versions(model_store, cutoff, replay, log_weeks=settings.replay.log_weeks),
            *(e["version"] for e in model_store.pending_approvals()),
        ],
    )
    ensemble = metadata["metrics"]["ensemble"]
    baselines = metadata["metrics"]["baselines"]
    comparison = pd.DataFrame(
        [
            {"model": name, **{k: round(v, 4) for k, v in m.items() if k != "rows"}}
            for name, m in [
                ("ensemble", ensemble),
                ("majority", baselines["majority"]),
                ("yesterday", baselines["yesterday"]),
            ]
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "version": dg.MetadataValue.text(version),
            "reused": dg.MetadataValue.bool(reused is not None),
            "cutoff": dg.MetadataValue.text(cutoff.isoformat()),
            "train_rows": dg.MetadataValue.int(metadata["rows"]["train"]),
            "validation_rows": dg.MetadataValue.int(metadata["rows"]["validation"]),
            **{
                f"val_{k}": dg.MetadataValue.float(round(float(v), 5))
                for k, v in ensemble.items()
                if k != "rows"
            },
            "vs_baselines": md_table(comparison),
            "training_seconds": dg.MetadataValue.float(metadata["training"]["seconds"]),
            "device": dg.MetadataValue.text(metadata["training"]["device"]),
            "pruned_versions": dg.MetadataValue.json(removed),
            "path": dg.MetadataValue.path(str(model_store.version_path(version))),
        }
    )
