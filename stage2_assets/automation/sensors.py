"""Sensors: degradation, run failure, data quality, promotion and rollback.

Each keeps a cursor and sets a run key, so one event raises one alert (and at most one retrain
request), however often the sensor ticks. A warehouse held by a running job is not an error: the
tick is skipped and the next one catches up.
"""

import datetime as dt
import json

import dagster as dg
import duckdb
import pandas as pd

from stage2_assets.partitions import AS_OF_TAG, partition_key_for
from stage2_assets.resources.alerts import Alert, AlertChannels
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse, WarehouseBusyError

POINTER_EVENTS = {"promoted": "promotion", "manual_promote": "promotion", "rolled_back": "rollback"}


def _read(warehouse: Warehouse, sql: str, params: list, table_may_be_new: bool = False):
    try:
        return warehouse.query_df(sql, params)
    except WarehouseBusyError as exc:
        return exc
    except duckdb.CatalogException:
        if not table_may_be_new:  # a store written before the table existed: nothing to read yet
            raise
        return pd.DataFrame()


def build_sensors(jobs: dict, default_status: dg.DefaultSensorStatus) -> list:
    @dg.sensor(
        name="degradation_sensor",
        job=jobs["train_ensemble"],
        minimum_interval_seconds=60,
        default_status=default_status,
        description="Production degraded: alert, and request a retraining of that week (once per event).",
    )
    def degradation_sensor(
        context: dg.SensorEvaluationContext, warehouse: Warehouse, alert_channels: AlertChannels
    ):
        since = context.cursor or ""
        rows = _read(
            warehouse,
            "SELECT * FROM degradation_log WHERE degraded ORDER BY as_of, model_version",
            [],
        )
        if isinstance(rows, Exception):
            return dg.SkipReason(str(rows))
        requests, cursor = [], since
        for row in rows.itertuples():
            as_of = str(row.as_of)[:10]
            key = f"{as_of}/{row.model_version}"
            if key <= since:
                continue
            alert_channels.send(
                Alert(
                    kind="degradation",
                    severity="critical",
                    title=f"production {row.model_version} degraded as of {as_of}",
                    body=f"{row.reason}. A retraining run was requested; see docs/runbook.md#a-degradation-alert-fires.",
                    details={
                        "model_version": row.model_version,
                        "as_of": as_of,
                        "drop": float(row.drop),
                        "p_value": float(row.p_value),
                    },
                    key=f"degraded-{row.model_version}-{as_of}",
                ),
                context.log,
            )
            day = dt.date.fromisoformat(as_of)
            requests.append(
                dg.RunRequest(
                    run_key=f"degraded-{row.model_version}-{as_of}",
                    partition_key=partition_key_for(day),
                    tags={AS_OF_TAG: as_of, "stage2/trigger": "degradation"},
                )
            )
            cursor = max(cursor, key)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    @dg.sensor(
        name="data_quality_sensor",
        minimum_interval_seconds=60,
        default_status=default_status,
        description="Symbols quarantined by the quality gate, the gate blocking a refresh, or symbols "
        "vanishing from the source: alert with symbols and reasons.",
    )
    def data_quality_sensor(
        context: dg.SensorEvaluationContext, warehouse: Warehouse, alert_channels: AlertChannels
    ):
        # cursor: {"verdicts": last checked_at, "notes": last logged_at}; a bare string is the
        # verdicts cursor of an older release
        cursor = json.loads(context.cursor) if (context.cursor or "").startswith("{") else {}
        if context.cursor and not cursor:
            cursor = {"verdicts": context.cursor}
        rows = _read(
            warehouse,
            "SELECT run_id, symbol, checked_at, passed, errors FROM quality_log WHERE CAST(checked_at AS VARCHAR) > ? ORDER BY checked_at",
            [cursor.get("verdicts", "")],
        )
        if isinstance(rows, Exception):
            return dg.SkipReason(str(rows))
        notes = _read(
            warehouse,
            "SELECT run_id, as_of, subject, detail, logged_at FROM refresh_notes "
            "WHERE kind = 'missing_symbol' AND CAST(logged_at AS VARCHAR) > ? ORDER BY logged_at",
            [cursor.get("notes", "")],
            table_may_be_new=True,
        )
        if isinstance(notes, Exception):
            return dg.SkipReason(str(notes))
        if rows.empty and notes.empty:
            return dg.SkipReason("no new quality verdicts")
        for run_id, verdicts in rows.groupby("run_id", sort=False):
            failed = verdicts[~verdicts["passed"]]
            if failed.empty:
                continue
            lines = [f"{r.symbol}: {'; '.join(json.loads(r.errors))}" for r in failed.itertuples()]
            run = context.instance.get_run_by_id(run_id)
            blocked = run is not None and run.status == dg.DagsterRunStatus.FAILURE
            alert_channels.send(
                Alert(
                    kind="data_quality",
                    severity="critical" if blocked else "warning",
                    title=f"{len(failed)} of {len(verdicts)} symbols quarantined"
                    + (" - the quality gate blocked the refresh" if blocked else ""),
                    body="\n".join(lines[:50]),
                    details={"run_id": run_id, "symbols": failed["symbol"].tolist()},
                    key=f"quality-{run_id}",
                ),
                context.log,
            )
        for run_id, missing in notes.groupby("run_id", sort=False):
            # announced once: in the first run that found each symbol missing
            seen = [(r.subject, json.loads(r.detail)) for r in missing.itertuples()]
            as_of = str(missing["as_of"].iloc[0])[:10]
            new = [(s, d) for s, d in seen if d["since"] == as_of]
            if not new:
                continue
            alert_channels.send(
                Alert(
                    kind="data_quality",
                    severity="warning",
                    title=f"{len(new)} symbol(s) no longer delivered by the source",
                    body="\n".join(
                        f"{s}: not listed by the source as of {as_of} (last stored bar {d['last_bar']})"
                        for s, d in new
                    ),
                    details={"run_id": run_id, "missing_symbols": [s for s, _ in new]},
                    key=f"missing-{run_id}",
                ),
                context.log,
            )
        if not rows.empty:
            cursor["verdicts"] = str(rows["checked_at"].max())
        if not notes.empty:
            cursor["notes"] = str(notes["logged_at"].max())
        return dg.SensorResult(cursor=json.dumps(cursor))

    @dg.sensor(
        name="pointer_events_sensor",
        minimum_interval_seconds=30,
        default_status=default_status,
        description="Promotions and rollbacks of the production pointer (an informational alert "
        "each), and candidates waiting for approval (a warning each).",
    )
    def pointer_events_sensor(
        context: dg.SensorEvaluationContext, model_store: ModelStore, alert_channels: AlertChannels
    ):
        seen = int(context.cursor or 0)
        events = model_store.events()
        for event in events[seen:]:
            if event["event"] == "awaiting_approval":
                version = event["version"]
                alert_channels.send(
                    Alert(
                        kind="approval",
                        severity="warning",
                        title=f"{version} passed its comparison and waits for approval",
                        body=f"{event['reason']}\nproduction: {event.get('production')}\n"
                        f"approve: stage2 approve {version}\nreject: stage2 reject {version}",
                        details=event,
                        key=f"approval-{version}-{event['at']}",
                    ),
                    context.log,
                )
                continue
            kind = POINTER_EVENTS.get(event["event"])
            if kind is None:
                continue
            alert_channels.send(
                Alert(
                    kind=kind,
                    severity="info",
                    title=f"production is now {event['version']} ({event['event'].replace('_', ' ')})",
                    body=f"{event['reason']}\nprevious: {event.get('previous')}",
                    details=event,
                    key=f"{event['event']}-{event['version']}-{event['at']}",
                ),
                context.log,
            )
        return dg.SensorResult(cursor=str(len(events)))

    @dg.run_failure_sensor(
        name="run_failure_sensor",
        default_status=default_status,
        description="Any stage2 job fails: alert naming the job, the step and the error.",
    )
    def run_failure_sensor(context: dg.RunFailureSensorContext, alert_channels: AlertChannels):
        steps = []
        for event in context.get_step_failure_events():
            error = event.event_specific_data.error
            while (
                error is not None
                and error.cause is not None
                and "Error occurred while executing" in error.message
            ):
                error = error.cause
            steps.append(f"{event.step_key}: {error.message.strip() if error else 'unknown error'}")
        run = context.dagster_run
        alert_channels.send(
            Alert(
                kind="run_failure",
                severity="critical",
                title=f"{run.job_name} failed (run {run.run_id[:8]})",
                body="\n".join(steps)
                or context.failure_event.message
                or "no step failed: see the run's log",
                details={
                    "job": run.job_name,
                    "run_id": run.run_id,
                    "partition": run.tags.get("dagster/partition"),
                    "steps": steps,
                },
                key=f"failure-{run.run_id}",
            ),
            context.log,
        )

    return [degradation_sensor, data_quality_sensor, pointer_events_sensor, run_failure_sensor]
