"""Launching stage2's Dagster jobs in process, against the instance at ``$DAGSTER_HOME``."""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Callable

from stage2_assets import clock
from stage2_assets.processes import HOST_TAG, PID_TAG, reap_orphaned_runs, this_host


def _step_name(step_key: str) -> str:
    """An asset's step is named for the asset; a check's step (``raw_bars_raw_bars_quality_gate``)
    for the check."""
    head, _, rest = step_key.partition("_")
    while rest:
        if rest.startswith(f"{head}_"):
            return f"check {rest}"
        more, _, rest = rest.partition("_")
        head = f"{head}_{more}"
    return step_key


def _follow_steps(run_id: str, emit: Callable[[str], None], done: threading.Event) -> None:
    """Say each step of the run as it ends (its name and seconds), reading the run's event log."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.STEP_SKIPPED,
    }
    cursor = None
    with dg.DagsterInstance.get() as instance:
        while True:
            finished = done.wait(0.5)
            try:
                page = instance.get_records_for_run(run_id, cursor=cursor, of_type=kinds)
            except Exception:  # the run's log may not exist yet; the next poll sees it
                continue
            cursor = page.cursor
            for record in page.records:
                event = record.event_log_entry.dagster_event
                name = _step_name(event.step_key)
                if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                    seconds = event.event_specific_data.duration_ms / 1000
                    emit(f"  {name:<48} {seconds:7.1f} s")
                elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
                    emit(f"  {name:<48}  FAILED")
                else:
                    emit(f"  {name:<48} skipped")
            if finished:
                return


def run_job(
    settings,
    job_name: str,
    as_of: dt.date | None,
    extra_tags: dict | None = None,
    log_level: str = "WARNING",
    run_config: dict | None = None,
    progress: Callable[[str], None] | None = None,
):
    """Run a partitioned job for the week of ``as_of`` (default today) through the instance;
    ``progress`` is told one line per step as each ends."""
    import dagster as dg

    from stage2_assets.definitions import build_definitions
    from stage2_assets.partitions import AS_OF_TAG, partition_key_for

    day = as_of or clock.today()
    key = partition_key_for(day)
    tags = {
        AS_OF_TAG: day.isoformat(),
        PID_TAG: str(os.getpid()),
        HOST_TAG: this_host(),
        **(extra_tags or {}),
    }
    run_id = str(uuid.uuid4())
    done = threading.Event()
    follower = (
        threading.Thread(target=_follow_steps, args=(run_id, progress, done), daemon=True)
        if progress
        else None
    )
    with dg.DagsterInstance.get() as instance:
        reap_orphaned_runs(instance)
        job = build_definitions(settings).resolve_job_def(job_name)
        if follower:
            follower.start()
        try:
            result = job.execute_in_process(
                instance=instance,
                partition_key=key,
                tags=tags,
                raise_on_error=False,
                run_id=run_id,
                run_config={
                    **(run_config or {}),
                    "loggers": {"console": {"config": {"log_level": log_level}}},
                },
            )
        finally:
            done.set()
            if follower:
                follower.join(timeout=10)
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
            if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
                continue  # the failed check says it, with its reason, below
            while (
                error is not None
                and error.cause is not None
                and "Error occurred while executing" in error.message
            ):
                error = error.cause  # Dagster's wrapper: show what our code said
            said = error.message.strip() if error else ""
            # our own errors are for people: drop "stage2_assets.errors.TrainingError: "
            if said.startswith("stage2_assets."):
                said = said.split(": ", 1)[-1]
            lines.append(f"step {event.step_key} failed: {said}")
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
