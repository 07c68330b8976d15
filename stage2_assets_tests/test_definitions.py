import dagster as dg

from stage2_assets.config import get_settings
from stage2_assets.definitions import build_definitions, defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_design_asset_job_and_check_is_defined():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"raw_bars", "validated_bars", "features"} <= keys
    assert defs.resolve_job_def("refresh_market_data") is not None
    checks = {key.name for key in graph.asset_check_keys}
    assert "raw_bars_quality_gate" in checks


def test_the_quality_gate_is_blocking():
    spec = next(iter(defs.resolve_asset_graph().asset_check_keys))
    node = defs.resolve_asset_graph().get_check_spec(spec)
    assert node.blocking is True


def test_definitions_follow_the_settings(write_settings):
    settings = write_settings({"data_source": {"kind": "csv", "path": "somewhere"}})
    built = build_definitions(settings)
    resources = built.resources
    assert type(resources["market_data"]).__name__ == "CsvSource"
    assert resources["warehouse"].database == str(settings.warehouse_path)
    assert get_settings().data_source.kind == "simulated"  # the shipped default is untouched
