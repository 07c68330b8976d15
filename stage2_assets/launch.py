"""Launching stage2's Dagster jobs in process, against the instance at ``$DAGSTER_HOME``."""

from __future__ import annotations

import datetime as dt
import os

# Every run launched by this process carries its pid and host, so a run left STARTED by a killed
# process can be told from one still running.
PID_TAG = "stage2/pid"
HOST_TAG = "stage2/host"


def reap_orphaned_runs(instance) -> list[str]:
    """Mark failed the runs left in progress by a stage2 process on this host that is gone (a kill
    mid-run leaves them STARTED forever, and the schedules would wait on them). Returns their ids."""
    import dagster as dg

    from stage2_assets.processes import pid_alive, this_host

    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
            tags={HOST_TAG: this_host()},
        ),
        limit=200,
    )
    reaped = []
    for run in runs:
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and not pid_alive(int(pid)):
            instance.report_run_failed(
                run,
                message=f"the stage2 process (pid {pid}) running it is gone, killed or crashed; "
                "marked failed so that later runs and schedules do not wait on it",
            )
            reaped.append(run.run_id)
    return reaped


def run_job(
    settings,
    job_name: str,
    as_of: dt.date | None,
    extra_tags: dict | None = None,
    log_level: str = "WARNING",
    run_config: dict | None = None,
):
    """Run a partitioned job for the week of ``as_of`` (default today) through the instance."""
    import dagster as dg

    from stage2_assets.definitions import build_definitions
    from stage2_assets.partitions import AS_OF_TAG, partition_key_for
    from stage2_assets.processes import this_host

    day = as_of or dt.date.today()
    key = partition_key_for(day)
    tags = {
        AS_OF_TAG: day.isoformat(),
        PID_TAG: str(os.getpid()),
        HOST_TAG: this_host(),
        **(extra_tags or {}),
    }
    with dg.DagsterInstance.get() as instance:
        reap_orphaned_runs(instance)
        result = (
            build_definitions(settings)
            .resolve_job_def(job_name)
            .execute_in_process(
                instance=instance,
                partition_key=key,
                tags=tags,
                raise_on_error=False,
                run_config={
                    **(run_config or {}),
                    "loggers": {"console": {"config": {"log_level": log_level}}},
                },
            )
        )
    return result


def error_message(error) -> str:
    """What our code said, under Dagster's "Error occurred while executing" wrappers."""
    while (
        error is not None
        and error.cause is not None
        and "Error occurred while executing" in error.message
    ):
        error = error.cause
    return error.message.strip() if error else "unknown error"


def run_failures(result) -> list[str]:
    """What went wrong in a run, one line each: failed steps with our error, failed checks, skipped steps."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while (
                error is not None
                and error.cause is not None
                and "Error occurred while executing" in error.message
            ):
                error = error.cause  # Dagster's wrapper: show what our code said
            lines.append(f"step {event.step_key} failed: {error.message.strip() if error else ''}")
        elif (
            event.event_type_value == "ASSET_CHECK_EVALUATION"
            and not event.event_specific_data.passed
        ):
            evaluation = event.event_specific_data
            lines.append(f"check {evaluation.check_name} failed: {evaluation.description}")
    skipped = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    if skipped:
        lines.append(
            f"skipped because an upstream step or blocking check failed: {', '.join(skipped)}"
        )
    return lines
