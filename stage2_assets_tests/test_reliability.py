"""Hardening: concurrent cycles (more of the battery in later work)."""

import subprocess
import sys
import time

import pytest
import yaml

from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.conftest import SMALL_SIM, _merge

pytestmark = pytest.mark.reliability

TINY = {"retraining": {"num_models": 2, "max_epochs": 3, "hidden_units": 8, "min_train_rows": 200}}


def test_two_weekly_cycles_at_once_one_runs_one_is_refused(tmp_path):
    from stage2_assets.config import load_settings

    (tmp_path / "adaptation.yaml").write_text(yaml.safe_dump(_merge(SMALL_SIM, TINY)))
    settings = load_settings(tmp_path / "adaptation.yaml")
    home = tmp_path / "dh"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        "DAGSTER_HOME": str(home),
        "GX_ANALYTICS_ENABLED": "False",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PATH": "/usr/bin:/bin",
    }
    command = [
        sys.executable,
        "-m",
        "stage2_assets.cli",
        "--config",
        str(settings.config_path),
        "weekly",
        "--as-of",
        "2025-06-27",
    ]
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    second = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    results = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "another stage2 command is changing" in refused and "nothing changed" in refused
    store = ModelStore(root=str(settings.models_path))
    assert len(store.versions()) == 1  # one version per cut-off
    assert store.production() in (
        None,
        store.versions()[0],
    )  # the pointer names a complete version or none
    store.verify(store.versions()[0])
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        (rows, distinct) = conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, date)) FROM raw_bars"
        ).fetchall()[0]
    assert rows == distinct == 6 * 373  # 373 NYSE sessions 2024-01-02..2025-06-27, each stored once


KILLED = []


@pytest.mark.parametrize(
    "point", ["refresh_insert", "gx_validation", "training", "version_write", "pointer_swap"]
)
def test_a_kill_at_each_stage_leaves_consistent_stores_and_the_next_run_completes(tmp_path, point):
    from stage2_assets.config import load_settings
    from stage2_assets.faults import POINTS
    from stage2_assets_tests.test_adaptation_loop import REGIME_FLIP

    assert point in POINTS
    (tmp_path / "adaptation.yaml").write_text(yaml.safe_dump(_merge(SMALL_SIM, REGIME_FLIP)))
    settings = load_settings(tmp_path / "adaptation.yaml")
    home = tmp_path / "dh"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        "DAGSTER_HOME": str(home),
        "GX_ANALYTICS_ENABLED": "False",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PATH": "/usr/bin:/bin",
    }
    command = [
        sys.executable,
        "-m",
        "stage2_assets.cli",
        "--config",
        str(settings.config_path),
        "weekly",
        "--as-of",
        "2024-12-27",
    ]

    crashed = subprocess.run(
        command, env={**env, "STAGE2_FAULT": point}, capture_output=True, text=True, timeout=300
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]  # SIGKILL: no cleanup ran
    KILLED.append(point)

    store = ModelStore(root=str(settings.models_path))
    for version in store.versions():  # no partial version is visible
        store.verify(version)
    assert store.production() is None or store.verify(store.production())
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        raw, logged = conn.execute(
            "SELECT (SELECT count(*) FROM raw_bars), (SELECT count(*) FROM refresh_log)"
        ).fetchall()[0]
    if point == "refresh_insert":
        assert (raw, logged) == (0, 0)  # the open transaction was rolled back whole

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert store.production() is not None and store.verify(store.production())
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        (rows, distinct) = conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, date)) FROM validated_bars"
        ).fetchall()[0]
    assert rows == distinct > 0
    print(f"kill points survived so far: {len(KILLED)} ({', '.join(KILLED)})")
