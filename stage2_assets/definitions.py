"""The one place that assembles stage2: assets, checks, jobs, schedules, sensors, resources."""

import dagster as dg

from stage2_assets.assets.deployment import production_pointer
from stage2_assets.assets.features import features
from stage2_assets.assets.market_data import raw_bars, raw_bars_quality_gate, validated_bars
from stage2_assets.assets.monitoring import (
    model_performance,
    model_performance_production_not_degraded,
)
from stage2_assets.assets.shadow import predictions, shadow_comparison
from stage2_assets.assets.training import ensemble_vN
from stage2_assets.automation.schedules import build_schedules
from stage2_assets.automation.sensors import build_sensors
from stage2_assets.config import Settings, get_settings
from stage2_assets.resources.alerts import alerts_from_settings
from stage2_assets.resources.market_data import source_from_settings
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse

DATA_ASSETS = [raw_bars, validated_bars, features]
TRAINING_ASSETS = [ensemble_vN]
ADAPTATION_ASSETS = [
    *DATA_ASSETS,
    predictions,
    model_performance,
    *TRAINING_ASSETS,
    shadow_comparison,
    production_pointer,
]

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

weekly_adaptation = dg.define_asset_job(
    name="weekly_adaptation",
    selection=dg.AssetSelection.assets(*ADAPTATION_ASSETS),
    description=(
        "One week of the loop: refresh, quality gate, features, predictions and outcomes, performance, "
        "a new candidate, the comparison of every candidate whose shadow period ended, the pointer decision."
    ),
)

daily_predictions = dg.define_asset_job(
    name="daily_predictions",
    selection=dg.AssetSelection.assets(
        *DATA_ASSETS, predictions, model_performance, shadow_comparison, production_pointer
    ),
    description=(
        "After the close: refresh the day's bars, log predictions of production and shadow models, "
        "fill outcomes, look at every shadow's evidence (the sequential test decides on the day it "
        "has enough), then the pointer decision."
    ),
)
shadow_decision = dg.define_asset_job(
    name="shadow_decision",
    selection=dg.AssetSelection.assets(shadow_comparison, production_pointer),
    description="Look at every shadow candidate's evidence, then decide the production pointer.",
)


def _pointer_job(name: str, action: str, description: str):
    return dg.define_asset_job(
        name=name,
        selection=dg.AssetSelection.assets(production_pointer),
        config={
            "ops": {
                "production_pointer": {"config": {"action": action, "version": "", "reason": ""}}
            }
        },
        description=description,
    )


promote_version = _pointer_job(
    "promote_version", "promote", "Manual override: make a named version production."
)
rollback_production = _pointer_job(
    "rollback_production",
    "rollback",
    "Point production back at a named version, or at the previous one.",
)


def resources_for(settings: Settings) -> dict:
    """The resources of a code location running on these settings."""
    return {
        "market_data": source_from_settings(settings),
        "warehouse": Warehouse(database=str(settings.warehouse_path)),
        "model_store": ModelStore(root=str(settings.models_path)),
        "stage2_settings": Stage2Settings(config_file=str(settings.config_path)),
        "alert_channels": alerts_from_settings(settings),
    }


JOBS = [
    refresh_market_data,
    train_ensemble,
    daily_predictions,
    shadow_decision,
    weekly_adaptation,
    promote_version,
    rollback_production,
]


def build_definitions(settings: Settings) -> dg.Definitions:
    on = settings.monitoring.sensors_enabled
    jobs = {job.name: job for job in JOBS}
    return dg.Definitions(
        assets=ADAPTATION_ASSETS,
        asset_checks=[raw_bars_quality_gate, model_performance_production_not_degraded],
        jobs=JOBS,
        schedules=build_schedules(
            settings,
            jobs,
            dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED,
        ),
        sensors=build_sensors(
            jobs, dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED
        ),
        resources=resources_for(settings),
        # Steps are small: one process avoids ~3 s of start-up per step (stack notes).
        executor=dg.in_process_executor,
    )


defs = build_definitions(get_settings())
