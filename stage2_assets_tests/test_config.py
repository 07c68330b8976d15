import pytest

from stage2_assets.config import DEFAULT_CONFIG, load_settings
from stage2_assets.errors import ConfigError


def test_shipped_config_loads_with_the_offline_default():
    settings = load_settings(DEFAULT_CONFIG)
    assert settings.data_source.kind == "simulated"
    assert settings.retraining.data_window == 730
    assert settings.ab_testing.shadow_mode_duration == 7
    assert settings.monitoring.performance_window == 30
    assert (
        settings.warehouse_path
        == (DEFAULT_CONFIG.parent.parent / "data" / "stage2.duckdb").resolve()
    )


def test_relative_paths_resolve_against_the_config_file(write_settings, tmp_path):
    settings = write_settings({"storage": {"warehouse": "sub/wh.duckdb"}})
    assert settings.warehouse_path == tmp_path / "sub" / "wh.duckdb"


def test_unknown_key_is_named(write_settings):
    with pytest.raises(ConfigError, match=r"retraining\.num_modles: unknown key"):
        write_settings({"retraining": {"num_modles": 3}})


def test_bad_value_is_named(write_settings):
    with pytest.raises(ConfigError, match=r"ab_testing\.significance_level"):
        write_settings({"ab_testing": {"significance_level": 2}})


def test_bad_duration_is_named(write_settings):
    with pytest.raises(
        ConfigError, match=r"retraining\.data_window.*'two years' is not a duration"
    ):
        write_settings({"retraining": {"data_window": "two years"}})


def test_bad_cron_is_refused_with_its_key(write_settings):
    with pytest.raises(ConfigError, match=r"data_refresh\.schedule.*not a valid cron"):
        write_settings({"data_refresh": {"schedule": "every sunday"}})


def test_csv_source_needs_a_path(write_settings):
    with pytest.raises(ConfigError, match="data_source.path is required"):
        write_settings({"data_source": {"kind": "csv"}})


def test_symbol_with_path_characters_is_refused(write_settings):
    with pytest.raises(ConfigError, match=r"data_source\.symbols.*'\.\./x' is not a valid ticker"):
        write_settings({"data_source": {"symbols": ["AAPL", "../x"]}})


def test_stage2_config_names_another_file(write_settings, monkeypatch):
    settings = write_settings({"retraining": {"num_models": 3}}, name="other.yaml")
    monkeypatch.setenv("STAGE2_CONFIG", str(settings.config_path))
    assert load_settings().retraining.num_models == 3


def test_missing_file_says_which(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_secrets_are_not_config_keys(write_settings):
    with pytest.raises(ConfigError, match=r"alerts\.smtp_password: unknown key"):
        write_settings({"alerts": {"smtp_password": "hunter2"}})


def test_every_shipped_config_loads():
    from stage2_assets.config import DEFAULT_CONFIG

    # config/local-*.yaml are an operator's own variants (ignored by git, as the README's recipes
    # name them), not shipped
    shipped = sorted(
        p for p in DEFAULT_CONFIG.parent.glob("*.yaml") if not p.name.startswith("local-")
    )
    assert {p.name for p in shipped} >= {
        "adaptation.yaml",
        "market-data.yaml",
        "demo-regime-change.yaml",
        "replay-two-regimes.yaml",
        "replay-bad-candidates.yaml",
    }
    for path in shipped:
        assert load_settings(path).config_path == path
    bad = load_settings(DEFAULT_CONFIG.parent / "replay-bad-candidates.yaml").data_source.simulated
    assert [e.kind for e in bad.episodes].count("transient") == 4
    assert {e.kind for e in bad.episodes} == {"transient", "label_noise", "stale_feed"}
