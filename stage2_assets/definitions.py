"""The one place that assembles stage2: assets, checks, jobs, schedules, sensors, resources."""

import dagster as dg

from stage2_assets.assets.features import features
from stage2_assets.assets.market_data import raw_bars, raw_bars_quality_gate, validated_bars
from stage2_assets.assets.training import ensemble_vN
from stage2_assets.config import Settings, get_settings
from stage2_assets.resources.market_data import source_from_settings
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse

DATA_ASSETS = [raw_bars, validated_bars, features]
TRAINING_ASSETS = [ensemble_vN]

refresh_market_data = dg.define_asset_job(
    name="refresh_market_data",
    selection=dg.AssetSelection.assets(*DATA_ASSETS),
    description="Fetch new bars, gate them with the quality suite, recompute features.",
)

train_ensemble = dg.define_asset_job(
    name="train_ensemble",
    selection=dg.AssetSelection.assets(*TRAINING_ASSETS),
    description="Train a candidate ensemble on the window ending at the partition's cut-off.",
)


def resources_for(settings: Settings) -> dict:
    """The resources of a code location running on these settings."""
    return {
        "market_data": source_from_settings(settings),
        "warehouse": Warehouse(database=str(settings.warehouse_path)),
        "model_store": ModelStore(root=str(settings.models_path)),
        "stage2_settings": Stage2Settings(config_file=str(settings.config_path)),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[*DATA_ASSETS, *TRAINING_ASSETS],
        asset_checks=[raw_bars_quality_gate],
        jobs=[refresh_market_data, train_ensemble],
        resources=resources_for(settings),
        # Steps are small: one process avoids ~3 s of start-up per step (stack notes).
        executor=dg.in_process_executor,
    )


defs = build_definitions(get_settings())
