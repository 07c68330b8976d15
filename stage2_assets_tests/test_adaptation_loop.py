"""The weekly loop end to end on a simulated market with a planted regime change."""

import json

import pytest

from stage2_assets.cli import main
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse

REGIME_FLIP = {
    "data_source": {
        "simulated": {
            "seed": 21,
            "num_symbols": 50,
            "start_date": "2024-01-02",
            "regimes": [
                {"start": "2024-01-02", "drift": 0.0, "volatility": 0.012, "momentum": 0.15},
                {"start": "2025-01-02", "drift": 0.0, "volatility": 0.012, "momentum": -0.15},
            ],
        }
    },
    "retraining": {
        "data_window": "120d",
        "num_models": 3,
        "max_epochs": 15,
        "hidden_units": 16,
        "min_train_rows": 300,
    },
    "ab_testing": {"bootstrap_samples": 500, "shadow_mode_duration": "14d"},
    # a 120-day window on a market with a common factor: the market-neutral label keeps the
    # few validation days from being ruled by the market's direction
    "label": {"kind": "excess_direction"},
}


# Six weeks after the candidate's cut-off: its sequential shadow has about 28 labelled days.
AS_OF = "2025-07-11"


def weekly(settings, as_of: str) -> int:
    return main(["--config", str(settings.config_path), "weekly", "--as-of", as_of])


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Three weekly runs: bootstrap in regime A; five months into regime B a candidate fitted to it is
    trained, and six weeks later its sequential shadow has promoted it."""
    from stage2_assets_tests.conftest import make_project

    settings, home = make_project(tmp_path_factory.mktemp("loop"), REGIME_FLIP)
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(home))
    codes = [weekly(settings, day) for day in ("2024-12-27", "2025-05-30", AS_OF)]
    yield settings, codes
    mp.undo()


def test_first_model_is_promoted_by_the_bootstrap_rule(loop):
    settings, codes = loop
    assert codes == [0, 0, 0]
    events = ModelStore(root=str(settings.models_path)).events()
    first = next(e for e in events if e["event"] == "promoted")
    assert first["reason"].startswith("bootstrap (no production yet): validation accuracy")
    assert first["previous"] is None


def test_candidate_fitted_to_the_new_regime_is_shadowed_compared_and_promoted(loop):
    settings, _ = loop
    store = ModelStore(root=str(settings.models_path))
    bootstrap, candidate, newest = store.versions()[:3]
    assert store.production() == candidate
    story = [(e["event"], e["version"]) for e in store.events() if e["version"] == candidate]
    assert story == [
        ("trained", candidate),
        ("shadowed", candidate),
        ("compared", candidate),
        ("promoted", candidate),
    ]
    promoted = store.events()[-1] if store.events()[-1]["event"] == "promoted" else None
    assert promoted and promoted["previous"] == bootstrap
    assert promoted["lower_bound"] > 0 and promoted["effect"] > promoted["lower_bound"]
    assert 10 <= promoted["days"] <= 40
    assert newest not in {bootstrap, candidate}  # this week's candidate waits in shadow


def test_comparison_uses_the_same_rows_and_is_reproducible(loop):
    from stage2_assets.config import load_settings
    from stage2_assets.promotion.shadow import recompute_comparison

    settings, _ = loop
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        stored = conn.execute(
            "SELECT candidate, as_of, rows, p_mcnemar, accuracy_diff, ci_low, ci_high, decision FROM shadow_comparisons"
        ).fetchall()
        assert len(stored) == 1
        candidate, as_of, rows, p_value, diff, low, high, decision = stored[0]
        assert decision == "promote" and rows >= 100 and diff > 0 and low < diff < high
        again = recompute_comparison(
            conn, candidate, as_of, load_settings(settings.config_path).ab_testing
        )
        # both models predicted exactly these rows, and each prediction was logged once
        (dupes,) = conn.execute(
            "SELECT count(*) - count(DISTINCT (model_version, symbol, date)) FROM predictions"
        ).fetchone()
    assert (again.rows, again.p_mcnemar, again.accuracy_diff, list(again.ci), again.decision) == (
        rows,
        p_value,
        diff,
        [low, high],
        decision,
    )
    assert dupes == 0


def test_rerunning_a_week_neither_duplicates_nor_alters_predictions(loop):
    settings, _ = loop
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        before = conn.execute(
            "SELECT model_version, symbol, date, prob_up, logged_at FROM predictions ORDER BY ALL"
        ).fetchall()
    assert weekly(settings, AS_OF) == 0
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        after = conn.execute(
            "SELECT model_version, symbol, date, prob_up, logged_at FROM predictions ORDER BY ALL"
        ).fetchall()
        (unfilled,) = conn.execute(
            "SELECT count(*) FROM predictions p JOIN features f USING (symbol, date) "
            "WHERE p.label IS NULL AND f.label_date <= ?",
            [AS_OF],
        ).fetchone()
    assert after[: len(before)] == before or set(before) <= set(after)
    assert {r[:3] for r in before} <= {r[:3] for r in after}
    assert unfilled == 0  # every outcome known by the as-of date was filled


def test_status_json_reports_production_shadow_comparison_and_performance(loop, capsys):
    settings, _ = loop
    assert main(["--config", str(settings.config_path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    store = ModelStore(root=str(settings.models_path))
    assert status["production"]["version"] == store.production() and status["production"]["since"]
    last = status["last_comparison"]
    assert last["decision"] == "promote" and set(last["p_values"]) == {"mcnemar", "paired"}
    assert last["metric"] == "log_loss" and 10 <= last["days"] <= 40
    assert last["lower_bound"] > 0 and last["mde"] > 0 and last["p_value"] < 0.01
    assert last["statistic"] > 0
    assert last["ci"][0] < last["accuracy_diff"] < last["ci"][1]
    assert set(status["performance"][store.versions()[0]]) >= {
        "accuracy",
        "ece",
        "brier",
        "sharpe",
        "max_drawdown",
    }
    assert store.versions()[-1] in status["shadow"]


def test_history_status_at_and_predict_at_say_who_served_when(loop, capsys):
    settings, _ = loop
    config = ["--config", str(settings.config_path)]
    store = ModelStore(root=str(settings.models_path))
    first, second = store.production_history()[:2]
    assert main([*config, "history", "--json"]) == 0
    moves = json.loads(capsys.readouterr().out)["moves"]
    assert [(m["date"], m["version"], m["how"]) for m in moves[:2]] == [
        ("2024-12-27", first, "bootstrap"),
        (AS_OF, second, "promote"),
    ]
    assert moves[1]["previous"] == first and moves[1]["lower_bound"] > 0 and moves[1]["days"] >= 10
    # a move dated D serves from the day after D
    for day, version in (
        ("2024-12-27", None),
        ("2024-12-30", first),
        (AS_OF, first),
        ("2025-07-14", second),
    ):
        assert main([*config, "status", "--at", day, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["production"]["version"] == version
    # what the bootstrap model predicted on a day it served, from the log, outcome included
    assert main([*config, "predict", "--at", "2025-05-29", "--json"]) == 0
    served = json.loads(capsys.readouterr().out)
    assert served["version"] == first and len(served["predictions"]) == 50
    assert served["served_since"] == served["moved_on"] == "2024-12-27"  # the README's contract
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        logged = conn.execute(
            "SELECT symbol, prob_up, label FROM predictions WHERE model_version = ? AND date = '2025-05-29' ORDER BY symbol",
            [first],
        ).fetchall()
    assert [(r["symbol"], r["prob_up"], r["label"]) for r in served["predictions"]] == [
        (s, round(p, 6), label) for s, p, label in logged
    ]
    assert main([*config, "predict", "--at", "2024-12-20"]) == 2  # before any move
    assert "the first pointer move was dated 2024-12-27 and a move serves from the day after" in (
        capsys.readouterr().err
    )
    # the last day: its outcome is not known yet
    assert main([*config, "predict", "--at", AS_OF, "--json"]) == 0
    assert {r["label"] for r in json.loads(capsys.readouterr().out)["predictions"]} == {None}
    assert main([*config, "predict", "--at", "2025-05-31"]) == 2  # a Saturday
    assert "not an NYSE session" in capsys.readouterr().err
    assert main([*config, "status", "--at", "2099-01-01"]) == 2
    assert "lies in the future" in capsys.readouterr().err


def test_manual_rollback_and_promote_are_jobs_and_are_logged(loop, capsys):
    settings, _ = loop
    store = ModelStore(root=str(settings.models_path))
    bootstrap, candidate = store.versions()[:2]
    config = str(settings.config_path)
    assert main(["--config", config, "rollback", "--reason", "drill"]) == 0
    assert store.production() == bootstrap
    assert main(["--config", config, "promote", candidate]) == 0
    assert store.production() == candidate
    tail = [(e["event"], e["version"], e["reason"], e["as_of"]) for e in store.events()[-2:]]
    # dated by the newest week the store has run (AS_OF), not by the wall clock
    assert tail == [
        ("rolled_back", bootstrap, "drill", AS_OF),
        ("manual_promote", candidate, "manual override (stage2 promote)", AS_OF),
    ]
    capsys.readouterr()
    never = next(v for v in reversed(store.versions()) if v not in store.production_history())
    for bad in (["rollback", "../x"], ["promote", "v20990101-000000"], ["rollback", never]):
        assert main(["--config", config, *bad]) == 2
        assert store.production() == candidate
    err = capsys.readouterr().err
    assert main(["--config", config, "promote", candidate]) == 0  # already production: logged
    assert store.production() == candidate and store.events()[-1]["event"] == "noted"
    assert "already production" in capsys.readouterr().out
    assert (
        "'../x' is not a model version name" in err
        and "v20990101-000000 is not in the model store" in err
        and f"{never} never served in production" in err
        and f"`stage2 promote {never}`" in err
    )


def test_versions_json_contract(loop, capsys):
    settings, _ = loop
    assert main(["--config", str(settings.config_path), "versions", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [item["production"] for item in listing][:3] == [False, True, False]
    assert {"version", "cutoff", "production", "metrics", "path"} <= set(listing[0])
    assert listing[0]["cutoff"] == "2024-12-27" and listing[0]["path"].startswith("/")
    # trained without recency weights or a refit, on the loop's window
    assert listing[0]["training"] == {
        "window_days": settings.retraining.data_window,
        "recency_half_life_days": None,
        "refit": False,
    }
    assert {"accuracy", "balanced_accuracy", "log_loss", "brier", "ece", "mean_confidence"} <= set(
        listing[0]["metrics"]
    )


def test_predict_gives_probability_and_confidence_per_symbol(loop, capsys):
    settings, _ = loop
    assert (
        main(["--config", str(settings.config_path), "predict", "--as-of", "2025-06-12", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == ModelStore(root=str(settings.models_path)).production()
    assert len(out["predictions"]) == 50
    for row in out["predictions"]:
        assert row["date"] == "2025-06-12"
        assert 0 < row["prob_up"] < 1 and row["confidence"] == pytest.approx(
            max(row["prob_up"], 1 - row["prob_up"]), abs=1e-6
        )


def test_dashboard_is_one_self_contained_page_with_every_section(loop, tmp_path, capsys):
    import re

    settings, _ = loop
    out = tmp_path / "report.html"
    assert main(["--config", str(settings.config_path), "dashboard", "--out", str(out)]) == 0
    page = out.read_text()
    for heading in (
        "Accuracy and calibration over time, per version",
        "Reliability of production",
        "Latest shadow comparison",
        "Production timeline",
        "Data quality per symbol",
        "Refresh history",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("<svg") == 4  # performance, reliability, timeline, refresh charts
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere
    assert 'decision <span class="promote">promote</span>' in page
    assert ModelStore(root=str(settings.models_path)).production() in page


def test_comparisons_command_recomputes_every_stored_decision(loop, capsys):
    """Recomputed a week later, when more outcomes are known, a decision still sees only the rows
    whose outcome was known on its own date."""
    settings, _ = loop
    assert weekly(settings, "2025-07-18") == 0
    capsys.readouterr()
    assert (
        main(["--config", str(settings.config_path), "comparisons", "--recompute", "--json"]) == 0
    )
    listing = json.loads(capsys.readouterr().out)
    first = listing[0]
    assert first["as_of"] == AS_OF and first["decision"] == "promote"
    assert first["recomputed"]["matches"] is True and first["recomputed"]["rows"] == first["rows"]
    assert len(listing) > 1 and all(item["recomputed"]["matches"] for item in listing)


def test_backup_restores_into_an_empty_place_with_the_same_status(loop, tmp_path, capsys):
    import yaml

    settings, _ = loop
    config = str(settings.config_path)
    assert main(["--config", config, "backup", str(tmp_path / "bk")]) == 0
    assert main(["--config", config, "status", "--json"]) == 0
    original = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    raw = yaml.safe_load(settings.config_path.read_text())
    raw["storage"] = {
        "warehouse": str(tmp_path / "new" / "wh.duckdb"),
        "models": str(tmp_path / "new" / "models"),
    }
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--config", str(tmp_path / "new.yaml"), "restore", str(tmp_path / "bk")]) == 0
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "new.yaml"), "status", "--json"]) == 0
    restored = json.loads(capsys.readouterr().out)
    restored.pop("warehouse")
    original.pop("warehouse")
    assert restored == original
    assert (
        main(["--config", str(tmp_path / "new.yaml"), "restore", str(tmp_path / "bk")]) == 2
    )  # never overwrites
    weights = next((tmp_path / "bk" / "models" / "versions").glob("*/weights.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"x")
    raw["storage"] = {
        "warehouse": str(tmp_path / "other" / "wh.duckdb"),
        "models": str(tmp_path / "other" / "models"),
    }
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--config", str(tmp_path / "other.yaml"), "restore", str(tmp_path / "bk")]) == 2
    assert "does not match its checksum; nothing was restored" in capsys.readouterr().err
    assert not (tmp_path / "other" / "wh.duckdb").exists()


def _copy_of_the_loop(settings, tmp_path) -> dict:
    """The loop's settings pointed at a copy of its stores (backed up here, restored by the
    caller's config): returned raw, for the caller to adjust and write."""
    import yaml

    assert main(["--config", str(settings.config_path), "backup", str(tmp_path / "bk")]) == 0
    raw = yaml.safe_load(settings.config_path.read_text())
    raw["storage"] = {
        "warehouse": str(tmp_path / "copy" / "wh.duckdb"),
        "models": str(tmp_path / "copy" / "models"),
    }
    return raw


def test_status_flags_a_production_pointer_that_cannot_be_served(loop, tmp_path, capsys):
    """A copy of the loop's stores; its production weights tampered with, then deleted by hand."""
    import yaml

    settings, _ = loop
    raw = _copy_of_the_loop(settings, tmp_path)
    config = tmp_path / "copy.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(config), "restore", str(tmp_path / "bk")]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["production"]["problem"] is None
    store = ModelStore(root=str(tmp_path / "copy" / "models"))
    version = store.production()
    weights = store.version_path(version) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    assert main(["--config", str(config), "status", "--json"]) == 3
    problem = json.loads(capsys.readouterr().out)["production"]["problem"]
    assert version in problem and "checksum" in problem and "stage2 rollback" in problem
    import shutil

    shutil.rmtree(store.version_path(version))
    assert main(["--config", str(config), "status"]) == 3
    captured = capsys.readouterr()
    assert f"production: {version}" in captured.out
    assert "WARNING" in captured.err and "is not in the model store" in captured.err


def test_manual_approval_holds_a_passing_candidate_until_a_person_decides(loop, tmp_path, capsys):
    """A copy of the loop's stores under `ab_testing.approval: manual`, production set back to
    the bootstrap version: the week's passing candidate waits; reject, then approve."""
    import yaml

    from stage2_assets.config import load_settings
    from stage2_assets.promotion.pointer import decide

    settings, _ = loop
    raw = _copy_of_the_loop(settings, tmp_path)
    raw.setdefault("ab_testing", {})["approval"] = "manual"
    config = tmp_path / "copy.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(config), "restore", str(tmp_path / "bk")]) == 0
    manual = load_settings(config)
    store = ModelStore(root=str(manual.models_path))
    bootstrap, candidate = store.versions()[:2]
    store.set_production(bootstrap, "rolled_back", "test: back to the bootstrap version")

    import datetime as dt

    with Warehouse(database=str(manual.warehouse_path)).connect() as conn:
        outcome = decide(
            conn, store, dt.date.fromisoformat(AS_OF), manual.ab_testing, None, manual.label_rule
        )
        again = decide(
            conn, store, dt.date.fromisoformat(AS_OF), manual.ab_testing, None, manual.label_rule
        )
    assert outcome["action"] == "none" and store.production() == bootstrap
    assert (
        f"stage2 approve {candidate}" in outcome["reason"]
        and "waits for approval" in (outcome["reason"])
    )
    assert again == outcome  # logged once, however often the week is decided
    (pending,) = store.pending_approvals()
    assert pending["version"] == candidate and pending["effect"] > pending["lower_bound"] > 0
    capsys.readouterr()
    assert main(["--config", str(config), "status", "--json"]) == 0
    waiting = json.loads(capsys.readouterr().out)["pending_approvals"]
    assert [w["version"] for w in waiting] == [candidate] and waiting[0]["as_of"] == AS_OF

    # the approval alert, once
    import dagster as dg

    from stage2_assets.definitions import build_definitions
    from stage2_assets.resources.alerts import AlertChannels

    sensor = next(s for s in build_definitions(manual).sensors if s.name == "pointer_events_sensor")
    channels = AlertChannels(jsonl_path=str(tmp_path / "alerts.jsonl"))
    with dg.DagsterInstance.ephemeral() as instance:
        sensor(
            dg.build_sensor_context(
                instance=instance, resources={"model_store": store, "alert_channels": channels}
            )
        )
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    approval = [a for a in alerts if a["kind"] == "approval"]
    assert len(approval) == 1 and approval[0]["title"] == (
        f"{candidate} passed its comparison and waits for approval"
    )

    # approving a version that is not waiting is refused in one line
    capsys.readouterr()
    assert main(["--config", str(config), "approve", bootstrap]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"stage2: {bootstrap} is not waiting for approval (waiting: {candidate})"
    )
    assert main(["--config", str(config), "approve", candidate, "--reason", "looked at it"]) == 0
    assert store.production() == candidate and store.pending_approvals() == []
    moved = store.events()[-1]
    assert moved["event"] == "promoted" and moved["approved"] is True
    assert moved["reason"].startswith("approved: looked at it (comparison: ")
    assert moved["effect"] == pending["effect"] and moved["previous"] == bootstrap


def test_predictions_past_the_retention_move_to_parquet_and_decisions_still_recompute(
    loop, tmp_path, capsys
):
    """Shadow and logged rows before a date leave the table for a Parquet file; what production
    served stays; every stored decision still recomputes, now partly from the archive."""
    import datetime as dt

    import duckdb
    import pandas as pd
    import yaml

    from stage2_assets.config import load_settings
    from stage2_assets.promotion.shadow import archive_predictions

    settings, _ = loop
    raw = _copy_of_the_loop(settings, tmp_path)
    config = tmp_path / "copy.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(config), "restore", str(tmp_path / "bk")]) == 0
    copy = load_settings(config)
    warehouse = Warehouse(database=str(copy.warehouse_path))
    before = dt.date(2025, 7, 1)  # inside the promoted candidate's shadow period
    with warehouse.connect() as conn:
        table = conn.execute("SELECT * FROM predictions ORDER BY model_version, symbol, date").df()
        oldest = table.loc[table["role"] != "production", "date"].min().date()
        assert (before - oldest).days >= 28
        # rows move in monthly batches: 27 days past the retention, nothing moves yet
        early = oldest + dt.timedelta(days=27)
        assert archive_predictions(conn, early, copy.predictions_archive_path, "run-0") == (0, None)
        assert not copy.predictions_archive_path.exists()
        moved, path = archive_predictions(conn, before, copy.predictions_archive_path, "run-one")
        again, none = archive_predictions(conn, before, copy.predictions_archive_path, "run-two")
        left = conn.execute("SELECT * FROM predictions ORDER BY model_version, symbol, date").df()
    expected = table[(table["date"] < pd.Timestamp(before)) & (table["role"] != "production")]
    assert moved == len(expected) > 0 and (again, none) == (0, None)
    assert path.parent == tmp_path / "copy" / "wh.archive" / "predictions"
    archived = duckdb.sql(
        f"SELECT * FROM read_parquet('{path}') ORDER BY model_version, symbol, date"
    ).df()
    assert len(archived) == moved and set(archived["role"]) <= {"shadow", "logged"}
    assert (archived["prob_up"].to_numpy() == expected["prob_up"].to_numpy()).all()
    assert len(left) == len(table) - moved
    kept = left[left["role"] == "production"]
    assert len(kept) == (table["role"] == "production").sum()  # what production served stays
    capsys.readouterr()
    assert main(["--config", str(config), "comparisons", "--recompute", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing and all(item["recomputed"]["matches"] for item in listing)
    assert (
        listing[0]["decision"] == "promote"
        and listing[0]["recomputed"]["rows"] == listing[0]["rows"]
    )
    # a backup carries the archive, and a restore puts it back beside the restored warehouse
    assert main(["--config", str(config), "backup", str(tmp_path / "bk2")]) == 0
    raw["storage"] = {
        "warehouse": str(tmp_path / "third" / "wh.duckdb"),
        "models": str(tmp_path / "third" / "m"),
    }
    (tmp_path / "third.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--config", str(tmp_path / "third.yaml"), "restore", str(tmp_path / "bk2")]) == 0
    restored = tmp_path / "third" / "wh.archive" / "predictions" / path.name
    assert restored.read_bytes() == path.read_bytes()


def test_a_retention_shorter_than_what_comparisons_read_is_refused(write_settings):
    from stage2_assets.errors import ConfigError

    with pytest.raises(ConfigError, match="predictions_retention of 30 days.*at least 126 days"):
        write_settings({"monitoring": {"predictions_retention": "30d"}})
    # a longer maximum shadow needs a longer retention: a comparison reads back to the cut-off
    with pytest.raises(ConfigError, match="predictions_retention of 200 days.*at least 238 days"):
        write_settings(
            {
                "monitoring": {"predictions_retention": "200d"},
                "ab_testing": {"max_shadow_duration": "16w"},
            }
        )
    assert (
        write_settings(
            {"monitoring": {"predictions_retention": None}}
        ).monitoring.predictions_retention
        is None
    )
    assert (
        write_settings(
            {"monitoring": {"predictions_retention": "2y"}}
        ).monitoring.predictions_retention
        == 730
    )
