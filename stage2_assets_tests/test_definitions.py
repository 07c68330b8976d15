import dagster as dg

from stage2_assets.config import get_settings
from stage2_assets.definitions import build_definitions, defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


DESIGN_ASSETS = {
    "raw_bars",
    "validated_bars",
    "features",
    "ensemble_vN",
    "predictions",
    "model_performance",
    "shadow_comparison",
    "production_pointer",
}
JOBS = {
    "refresh_market_data",
    "train_ensemble",
    "daily_predictions",
    "shadow_decision",
    "weekly_adaptation",
    "promote_version",
    "rollback_production",
}
SCHEDULES = {
    "weekly_refresh_schedule",
    "weekly_retraining_schedule",
    "daily_predictions_schedule",
    "weekly_decision_schedule",
}
SENSORS = {
    "degradation_sensor",
    "data_quality_sensor",
    "pointer_events_sensor",
    "run_failure_sensor",
}


def _checks():
    graph = defs.resolve_asset_graph()
    return {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}


def test_every_design_asset_job_and_check_is_defined():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == DESIGN_ASSETS
    for job in JOBS:
        assert defs.resolve_job_def(job).name == job
    assert set(_checks()) == {"raw_bars_quality_gate", "model_performance_production_not_degraded"}
    assert {s.name for s in defs.schedules} == SCHEDULES
    assert {s.name for s in defs.sensors} == SENSORS


def test_the_graph_follows_the_design():
    graph = defs.resolve_asset_graph()

    def parents(name):
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("validated_bars") == {"raw_bars"}
    assert parents("features") == {"validated_bars"}
    assert parents("ensemble_vN") == {"features"}
    assert parents("shadow_comparison") == {"predictions", "ensemble_vN"}
    assert parents("production_pointer") == {"shadow_comparison", "model_performance"}


def test_the_quality_gate_blocks_and_the_degradation_check_does_not():
    checks = _checks()
    assert checks["raw_bars_quality_gate"].blocking is True
    assert checks["model_performance_production_not_degraded"].blocking is False


def test_definitions_follow_the_settings(write_settings):
    settings = write_settings({"data_source": {"kind": "csv", "path": "somewhere"}})
    built = build_definitions(settings)
    resources = built.resources
    assert type(resources["market_data"]).__name__ == "CsvSource"
    assert resources["warehouse"].database == str(settings.warehouse_path)
    assert get_settings().data_source.kind == "simulated"  # the shipped default is untouched


def test_today_is_the_exchange_date_whose_week_exists():
    """At 00:30 UTC on Sunday 2026-11-29 it is Saturday evening in New York: stage2's today is the
    28th, whose week (2026-11-22) is the newest partition. The machine's UTC date names a week that
    does not exist yet; a run started then failed with an unknown partition."""
    import datetime as dt

    from stage2_assets import clock
    from stage2_assets.partitions import partition_key_for, weekly_partitions

    now = dt.datetime(2026, 11, 29, 0, 30, tzinfo=dt.UTC)
    keys = weekly_partitions.get_partition_keys(current_time=now)
    assert clock.today(now) == dt.date(2026, 11, 28)
    assert partition_key_for(clock.today(now)) == keys[-1] == "2026-11-22"
    assert partition_key_for(now.date()) not in keys
    # later on the Sunday in New York, the new week exists and is today's
    later = dt.datetime(2026, 11, 29, 15, 0, tzinfo=dt.UTC)
    assert partition_key_for(clock.today(later)) == "2026-11-29"
    assert "2026-11-29" in weekly_partitions.get_partition_keys(current_time=later)
