"""Stale data is said, not served silently: a refresh records and warns how far the newest bar lags
its as-of date, training refuses a cut-off past the data, predict names the dates it used.
Real bars of four symbols from ../shared/market-data, cut at 2019-06-21."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from stage2_assets.assets.training import require_fresh
from stage2_assets.cli import main
from stage2_assets.errors import TrainingError
from stage2_assets.market.calendar import sessions_after
from stage2_assets_tests.conftest import make_project, write_csv

SYMBOLS = ("AAPL", "JPM", "CAT", "DIS")
LAST = "2019-06-21"


def test_sessions_after_counts_exchange_sessions_not_days():
    friday = dt.date(2019, 6, 21)
    assert sessions_after(friday, friday) == 0
    assert sessions_after(friday, dt.date(2019, 6, 23)) == 0  # the weekend
    assert sessions_after(friday, dt.date(2019, 6, 28)) == 5
    assert sessions_after(dt.date(2019, 7, 3), dt.date(2019, 7, 5)) == 1  # July 4th is no session
    assert sessions_after(None, friday) is None


def test_training_refuses_a_cut_off_more_than_the_allowed_sessions_past_the_data():
    require_fresh(pd.Timestamp(LAST), dt.date(2019, 6, 28), 5)  # 5 sessions: allowed
    with pytest.raises(
        TrainingError, match=r"from 2019-06-21, 6 sessions before the cut-off 2019-07-01"
    ):
        require_fresh(pd.Timestamp(LAST), dt.date(2019, 7, 1), 5)


@pytest.fixture
def stale_project(tmp_path, market_data_dir, monkeypatch):
    folder = tmp_path / "csv"
    for symbol in SYMBOLS:
        frame = pd.read_csv(market_data_dir / f"{symbol}.csv")
        write_csv(folder, symbol, frame[frame["date"] <= LAST])
    settings, home = make_project(
        tmp_path / "project",
        {
            "data_source": {"kind": "csv", "path": str(folder), "symbols": list(SYMBOLS)},
            "data_refresh": {"history_start": "2017-01-01"},
            "retraining": {
                "data_window": "1y",
                "num_models": 2,
                "max_epochs": 2,
                "hidden_units": 8,
                "min_train_rows": 200,
            },
        },
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return settings


def test_stale_data_is_recorded_warned_refused_and_dated(stale_project, capsys):
    config = ["--config", str(stale_project.config_path)]
    assert main([*config, "refresh", "--as-of", LAST]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert main([*config, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_refresh"]["stale_sessions"] == 0
    assert main([*config, "train", "--as-of", LAST]) == 0
    out = capsys.readouterr().out.strip()
    version = out.split()[-1]
    assert out.endswith(f"new version: {version}")
    # trained again on the same data: the run's candidate is the stored one, and says so
    assert main([*config, "train", "--as-of", LAST]) == 0
    assert capsys.readouterr().out.strip().endswith(f"reused version: {version}")

    # a month later the source still ends on 06-21: 27 sessions (June 24-28, 22 in July)
    assert main([*config, "refresh", "--as-of", "2019-07-31"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: the newest data is from 2019-06-21, 27 sessions before 2019-07-31" in err
    assert main([*config, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_refresh"]["stale_sessions"] == 27

    # training as of that date would cut a candidate past the data: refused before any run
    versions = stale_project.models_path / "versions"
    before = sorted(p.name for p in versions.iterdir())
    assert main([*config, "train", "--as-of", "2019-07-31"]) == 2
    err = capsys.readouterr().err
    assert "27 sessions before the cut-off 2019-07-31" in err and "max_stale_sessions" in err
    assert sorted(p.name for p in versions.iterdir()) == before

    # predict names the dates it used, and warns
    assert main([*config, "predict", "--version", version, "--as-of", "2019-12-31", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["newest_feature_date"] == LAST and out["stale_sessions"] > 100
    assert {r["date"] for r in out["predictions"]} == {LAST}
    assert main([*config, "predict", "--version", version, "--as-of", "2019-12-31"]) == 0
    captured = capsys.readouterr()
    assert f"latest features on or before 2019-12-31: {LAST}" in captured.out
    assert "WARNING: the newest features are from 2019-06-21" in captured.err


def test_a_rerun_of_an_earlier_week_keeps_the_newest_features(write_settings, dagster_home):
    """Rerunning last month's refresh must not roll the features (what predict serves from) back to
    last month; the earlier week's readers still see nothing after its date."""
    from stage2_assets.resources.warehouse import Warehouse

    settings = write_settings()
    config = ["--config", str(settings.config_path)]
    warehouse = Warehouse(database=str(settings.warehouse_path))

    def newest() -> tuple:
        with warehouse.connect(read_only=True) as conn:
            return conn.execute(
                "SELECT max(date), max(label_date), count(*) FROM features"
            ).fetchone()

    assert main([*config, "refresh", "--as-of", "2024-12-27"]) == 0
    latest = newest()
    assert main([*config, "refresh", "--as-of", "2024-11-29"]) == 0
    assert newest() == latest and latest[0] == dt.date(2024, 12, 27)
