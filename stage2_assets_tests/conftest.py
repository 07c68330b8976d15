"""Shared fixtures: settings files in a temp folder, a temp Dagster instance, the real market data."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

MARKET_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "market-data"
# A fixed as-of date keeps tests independent of the day they run.
AS_OF = dt.date(2025, 6, 27)


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


SMALL_SIM = {
    "data_source": {
        "kind": "simulated",
        "simulated": {
            "seed": 11,
            "num_symbols": 6,
            "start_date": "2024-01-02",
            "regimes": [
                {
                    "start": "2024-01-02",
                    "drift": 0.0003,
                    "volatility": 0.012,
                    "momentum": 0.12,
                },
                {
                    "start": "2025-03-03",
                    "drift": -0.0002,
                    "volatility": 0.02,
                    "momentum": -0.12,
                },
            ],
        },
    },
    "storage": {"warehouse": "data/stage2.duckdb", "models": "models"},
    "data_refresh": {"history_start": "2024-01-01"},
}


def make_dagster_home(home: Path) -> Path:
    """A Dagster instance folder with telemetry off."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def make_project(folder: Path, overrides: dict | None = None):
    """A project in ``folder``: adaptation.yaml (the small simulated market plus overrides) and a
    Dagster home. Returns the loaded settings and the home, for DAGSTER_HOME."""
    from stage2_assets.config import load_settings

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adaptation.yaml").write_text(yaml.safe_dump(_merge(SMALL_SIM, overrides or {})))
    return load_settings(folder / "adaptation.yaml"), make_dagster_home(folder / "dagster_home")


def subprocess_env(home: Path) -> dict[str, str]:
    """The environment of a ``stage2`` child process: its own Dagster home, nothing phones home."""
    return {
        "DAGSTER_HOME": str(home),
        "GX_ANALYTICS_ENABLED": "False",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PATH": "/usr/bin:/bin",
    }


@pytest.fixture
def write_settings(tmp_path):
    """Write a settings file (the small simulated market plus overrides) and load it."""
    from stage2_assets.config import load_settings

    def make(overrides: dict | None = None, name: str = "adaptation.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(_merge(SMALL_SIM, overrides or {})))
        return load_settings(path)

    return make


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    home = make_dagster_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def instance(dagster_home):
    import dagster as dg

    with dg.DagsterInstance.get() as inst:
        yield inst


@pytest.fixture
def market_data_dir() -> Path:
    if not MARKET_DATA.is_dir():
        pytest.skip(
            f"real market data not found at {MARKET_DATA} (shared/market-data beside the repo)"
        )
    return MARKET_DATA


def write_csv(folder: Path, symbol: str, frame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{symbol}.csv"
    frame.to_csv(path, index=False)
    return path


# Counts of the reliability battery, printed at the end of every run (CI shows them).
RELIABILITY_COUNTS: dict[str, int] = {}


def count(name: str, n: int = 1) -> None:
    RELIABILITY_COUNTS[name] = RELIABILITY_COUNTS.get(name, 0) + n


def pytest_terminal_summary(terminalreporter):
    if RELIABILITY_COUNTS:
        terminalreporter.write_sep("-", "reliability battery")
        for name, n in sorted(RELIABILITY_COUNTS.items()):
            terminalreporter.write_line(f"{name}: {n}")
