"""`stage2 weekly` tells the week's story: a line per step as it runs (standard error), then the
bars, the gate, the candidate beside its baselines, the shadow decisions and the pointer with its
reason; `--quiet` prints only that, `--json` prints it as JSON and nothing else on standard output."""

from __future__ import annotations

import json

import pytest

from stage2_assets.cli import main
from stage2_assets.resources.model_store import ModelStore
from stage2_assets_tests.conftest import make_project

TINY = {
    "retraining": {
        "data_window": "200d",
        "num_models": 2,
        "max_epochs": 3,
        "hidden_units": 8,
        "min_train_rows": 200,
    },
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    settings, home = make_project(tmp_path / "project", TINY)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return settings


def test_weekly_json_is_the_story_and_nothing_else(project, capsys):
    config = ["--config", str(project.config_path)]
    assert main([*config, "weekly", "--as-of", "2024-12-27", "--json"]) == 0
    captured = capsys.readouterr()
    story = json.loads(captured.out)  # standard output holds only the JSON
    store = ModelStore(root=str(project.models_path))
    (version,) = store.versions()
    assert story["as_of"] == "2024-12-27" and story["status"] == "succeeded"
    assert set(story) == {
        "as_of",
        "run_id",
        "status",
        "refresh",
        "gate",
        "candidate",
        "decisions",
        "pointer",
        "alerts",
        "failures",
    }
    assert story["failures"] == [] and story["refresh"]["stale_sessions"] == 0
    assert story["refresh"]["new"] == story["refresh"]["fetched"] > 0
    assert story["refresh"]["failed_symbols"] == [] and story["refresh"]["missing_symbols"] == []
    assert story["gate"] == {"passed": True, "quarantined": {}, "flagged": {}, "released": []}
    assert story["candidate"]["version"] == version
    assert story["candidate"]["cutoff"] == "2024-12-27"
    assert set(story["candidate"]["baselines"]) >= {"majority", "always_up"}
    assert 0 < story["candidate"]["metrics"]["accuracy"] < 1
    assert story["decisions"] == []  # nothing was in shadow yet
    pointer = story["pointer"]
    # promoted by the bootstrap rule, or refused by it with the figures: either way, said
    assert "bootstrap" in pointer["reason"] and "baselines (majority" in pointer["reason"]
    assert pointer["moved"] == (store.production() == version)
    assert pointer["version"] == store.production()
    # without --json the steps are told as they end, on standard error
    assert "steps:" not in captured.err


def test_weekly_tells_each_step_and_why_the_pointer_stayed(project, capsys):
    config = ["--config", str(project.config_path)]
    assert main([*config, "weekly", "--as-of", "2024-12-27", "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.out.splitlines()[0].startswith("week of 2024-12-27: run ")
    assert "steps:" not in quiet.err and "GPU available" not in quiet.err + quiet.out
    assert main([*config, "weekly", "--as-of", "2025-01-03"]) == 0
    loud = capsys.readouterr()
    steps = [line.split()[0:2] for line in loud.err.splitlines()[1:] if line.startswith("  ")]
    names = [s[1] if s[0] == "check" else s[0] for s in steps]
    assert names[:4] == ["raw_bars", "raw_bars_quality_gate", "validated_bars", "features"]
    assert "ensemble_vN" in names and names[-1] == "production_pointer"
    out = loud.out.splitlines()
    assert out[0].startswith("weekly_adaptation run ") and out[0].endswith(" succeeded")
    assert out[-1].startswith("production: ")
    pointer = next(line for line in out if line.startswith("pointer: "))
    store = ModelStore(root=str(project.models_path))
    # the second week's candidate is in shadow: the pointer stays, and says why
    assert pointer.startswith(f"pointer: stays at {store.production() or 'none'}: ")
    shadow = [line for line in out if line.startswith("shadow: ")]
    assert all("vs" in line for line in shadow)
    unchanged = [e for e in store.events() if e["event"] == "pointer_unchanged"]
    assert unchanged and unchanged[-1]["as_of"] == "2025-01-03"
    assert pointer.endswith(unchanged[-1]["reason"])
