"""ensemble_vN: a new candidate ensemble each week, saved as a new version in the model store."""

import dagster as dg
import pandas as pd

from stage2_assets.assets.features import features
from stage2_assets.assets.market_data import md_table
from stage2_assets.ml.candidate import build_candidate
from stage2_assets.partitions import as_of_date, weekly_partitions
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse


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
    with warehouse.connect(read_only=True) as conn:
        table = conn.execute("SELECT * FROM features WHERE date <= ?", [cutoff]).df()
    tensors, metadata = build_candidate(table, cutoff, settings.retraining)
    version = model_store.save_version(tensors, {**metadata, "dagster_run_id": context.run.run_id})
    removed = model_store.prune(settings.retraining.keep_versions)
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
