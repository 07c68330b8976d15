"""Schedules and sensors on a real instance, alerts reaching real local servers."""

import datetime as dt
import json
import zoneinfo

import dagster as dg
import pytest

from stage2_assets.cli import main
from stage2_assets.definitions import build_definitions
from stage2_assets.partitions import AS_OF_TAG
from stage2_assets.resources.alerts import AlertChannels
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.alert_servers import smtp_server, webhook_server
from stage2_assets_tests.conftest import make_project
from stage2_assets_tests.test_adaptation_loop import REGIME_FLIP

NY = zoneinfo.ZoneInfo("America/New_York")
SUNDAY = dt.datetime(2025, 6, 15, 0, 0, tzinfo=NY)


def _schedule(defs, name):
    return next(s for s in defs.schedules if s.name == name)


def _sensor(defs, name):
    return next(s for s in defs.sensors if s.name == name)


def test_weekly_refresh_tick_asks_for_the_week_that_ended(write_settings, instance):
    defs = build_definitions(write_settings())
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=SUNDAY, repository_def=defs.get_repository_def()
    )
    request = _schedule(defs, "weekly_refresh_schedule").evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2025-06-08"
    assert request.tags[AS_OF_TAG] == "2025-06-14"
    assert request.run_key == "refresh_market_data-2025-06-08"


def test_a_tick_while_a_cycle_runs_is_skipped_with_a_reason(write_settings, instance):
    defs = build_definitions(write_settings())
    job = defs.resolve_job_def("weekly_adaptation")
    instance.add_run(
        dg.DagsterRun(job_name=job.name, run_id="a" * 36, status=dg.DagsterRunStatus.STARTED)
    )
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=SUNDAY)
    result = _schedule(defs, "weekly_refresh_schedule").evaluate_tick(context)
    assert (
        result.run_requests == []
        and "still running: weekly_adaptation (aaaaaaaa)" in result.skip_message
    )


def test_a_run_whose_process_was_killed_does_not_block_the_schedules(write_settings, instance):
    import os
    import subprocess
    import sys

    from stage2_assets.processes import HOST_TAG, PID_TAG, this_host

    defs = build_definitions(write_settings())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    for run_id, pid in (("d" * 36, dead.stdout.strip()), ("e" * 36, str(os.getpid()))):
        instance.add_run(
            dg.DagsterRun(
                job_name="weekly_adaptation",
                run_id=run_id,
                status=dg.DagsterRunStatus.STARTED,
                tags={PID_TAG: pid, HOST_TAG: this_host()},
            )
        )
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=SUNDAY)
    result = _schedule(defs, "weekly_refresh_schedule").evaluate_tick(context)
    assert "weekly_adaptation (eeeeeeee)" in result.skip_message  # its process is alive: busy
    assert "dddddddd" not in result.skip_message
    assert instance.get_run_by_id("d" * 36).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id("e" * 36).status == dg.DagsterRunStatus.STARTED


def test_retraining_waits_for_a_successful_refresh_of_the_same_week(write_settings, instance):
    settings = write_settings()
    defs = build_definitions(settings)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=SUNDAY.replace(hour=2)
    )
    result = _schedule(defs, "weekly_retraining_schedule").evaluate_tick(context)
    assert "refresh of week 2025-06-08 has not succeeded (no run)" in result.skip_message
    refresh = defs.resolve_job_def("refresh_market_data")
    assert refresh.execute_in_process(
        instance=instance, partition_key="2025-06-08", tags={AS_OF_TAG: "2025-06-14"}
    ).success
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=SUNDAY.replace(hour=2),
        repository_def=defs.get_repository_def(),
    )
    request = _schedule(defs, "weekly_retraining_schedule").evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2025-06-08"


def test_schedules_follow_the_config_and_sensors_can_be_switched_off(write_settings):
    settings = write_settings(
        {"retraining": {"schedule": "15 3 * * 1"}, "monitoring": {"sensors_enabled": False}}
    )
    defs = build_definitions(settings)
    assert _schedule(defs, "weekly_retraining_schedule").cron_schedule == "15 3 * * 1"
    assert {s.name: s.default_status for s in defs.sensors} == {
        name: dg.DefaultSensorStatus.STOPPED
        for name in (
            "degradation_sensor",
            "data_quality_sensor",
            "pointer_events_sensor",
            "run_failure_sensor",
        )
    }
    shipped = build_definitions(write_settings())
    assert {s.default_status for s in shipped.sensors} == {dg.DefaultSensorStatus.RUNNING}


@pytest.fixture(scope="module")
def degraded(tmp_path_factory):
    """Bootstrap a month before regime B, then two months into it: production has degraded
    against its own first live month (spent in regime A)."""
    settings, home = make_project(tmp_path_factory.mktemp("degraded"), REGIME_FLIP)
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(home))
    for day in ("2024-11-29", "2025-02-28"):
        assert main(["--config", str(settings.config_path), "weekly", "--as-of", day]) == 0
    yield settings
    mp.undo()


def test_planted_degradation_is_detected_by_the_check(degraded):
    with Warehouse(database=str(degraded.warehouse_path)).connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT as_of, degraded, recent_accuracy, baseline_accuracy, p_value FROM degradation_log"
        ).fetchall()
    assert len(rows) == 1
    as_of, is_degraded, recent, baseline, p_value = rows[0]
    assert as_of == dt.date(2025, 2, 28) and is_degraded
    assert baseline - recent > 0.05 and p_value < 0.05


def test_degradation_makes_exactly_one_alert_reach_smtp_and_webhook(
    degraded, tmp_path, monkeypatch
):
    monkeypatch.setenv("STAGE2_SMTP_USER", "ops")
    monkeypatch.setenv("STAGE2_SMTP_PASSWORD", "s3cret")
    defs = build_definitions(degraded)
    sensor = _sensor(defs, "degradation_sensor")
    with (
        dg.DagsterInstance.get() as instance,
        smtp_server(tmp_path) as (port, ca, mails),
        webhook_server() as (url, posts),
    ):
        monkeypatch.setenv("STAGE2_WEBHOOK_URL", url)
        resources = {
            "warehouse": Warehouse(database=str(degraded.warehouse_path)),
            "alert_channels": AlertChannels(
                webhook_url_env="STAGE2_WEBHOOK_URL",
                smtp_host="127.0.0.1",
                smtp_port=port,
                smtp_to=["quant@example.com"],
                smtp_ca_file=ca,
                jsonl_path=str(tmp_path / "a.jsonl"),
            ),
        }
        cursor, requests = None, []
        for _ in range(3):  # the sensor ticks again and again: one event, one alert
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            result = sensor(context)
            requests += result.run_requests or []
            cursor = result.cursor
    assert len(mails) == 1 and len(posts) == 1
    assert "degraded as of 2025-02-28" in posts[0]["text"]
    assert [(r.partition_key, r.tags["stage2/trigger"]) for r in requests] == [
        ("2025-02-23", "degradation")
    ]
    assert requests[0].run_key.startswith("degraded-v")


def test_promotion_and_rollback_raise_one_informational_alert_each(degraded, tmp_path):
    store = ModelStore(root=str(degraded.models_path))
    defs = build_definitions(degraded)
    channels = AlertChannels(jsonl_path=str(tmp_path / "alerts.jsonl"))
    sensor = _sensor(defs, "pointer_events_sensor")
    with dg.DagsterInstance.get() as instance:
        result = sensor(
            dg.build_sensor_context(
                instance=instance, resources={"model_store": store, "alert_channels": channels}
            )
        )
        bootstrap, candidate = store.versions()[:2]
        store.set_production(candidate, "manual_promote", "drill")
        store.set_production(bootstrap, "rolled_back", "drill")
        sensor(
            dg.build_sensor_context(
                instance=instance,
                cursor=result.cursor,
                resources={"model_store": store, "alert_channels": channels},
            )
        )
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["severity"]) for a in alerts] == [
        ("promotion", "info"),
        ("promotion", "info"),
        ("rollback", "info"),
    ]
    assert alerts[-1]["title"] == f"production is now {bootstrap} (rolled back)"


def test_quarantine_and_a_blocked_gate_alert_with_symbols_and_reasons(
    write_settings, instance, tmp_path
):
    from stage2_assets_tests.test_data_pipeline import run_refresh

    bad = write_settings({"data_source": {"simulated": {"warts": ["zero_price", "nan_close"]}}})
    assert not run_refresh(bad, instance, dt.date(2024, 12, 27)).success  # 2 of 6 > 20%: blocked
    channels = AlertChannels(jsonl_path=str(tmp_path / "alerts.jsonl"))
    sensor = _sensor(build_definitions(bad), "data_quality_sensor")
    resources = {
        "warehouse": Warehouse(database=str(bad.warehouse_path)),
        "alert_channels": channels,
    }
    result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    again = sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources=resources)
    )
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == 1 and again.skip_message == "no new quality verdicts"
    assert (
        alerts[0]["severity"] == "critical"
        and "the quality gate blocked the refresh" in alerts[0]["title"]
    )
    assert alerts[0]["details"]["symbols"] == ["SIM000", "SIM001"]
    assert (
        "close is zero or negative" in alerts[0]["body"] and "close is missing" in alerts[0]["body"]
    )


def test_a_failed_run_alerts_with_job_step_and_error(write_settings, instance, tmp_path):
    settings = write_settings({"data_source": {"kind": "csv", "path": "no-such-folder"}})
    defs = build_definitions(settings)
    result = defs.resolve_job_def("refresh_market_data").execute_in_process(
        instance=instance, partition_key="2025-06-08", raise_on_error=False
    )
    assert not result.success
    (record,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    failure = record.dagster_event
    channels = AlertChannels(jsonl_path=str(tmp_path / "alerts.jsonl"))
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_sensor",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"alert_channels": channels},
    ).for_run_failure()
    _sensor(defs, "run_failure_sensor")(context)
    alert = json.loads((tmp_path / "alerts.jsonl").read_text())
    assert alert["title"].startswith("refresh_market_data failed")
    assert (
        alert["body"].startswith("raw_bars: stage2_assets.errors.DataSourceError: csv folder")
        and "does not exist (data_source.path)" in alert["body"]
    )
