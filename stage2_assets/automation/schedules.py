"""Schedules from the config's crons and timezone.

Weekly ticks run for the week that just ended (as of the day before the tick); the daily tick runs
as of its own day, after the close. A tick while a stage2 run is still in progress is skipped with
the reason, never run twice; the retraining tick runs only once that week's refresh (and so its
quality gate) has succeeded.
"""

import datetime as dt

import dagster as dg

from stage2_assets.partitions import AS_OF_TAG, partition_key_for
from stage2_assets.processes import reap_orphaned_runs

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def runs_in_progress(instance: dg.DagsterInstance, jobs: list[str]) -> list[str]:
    reap_orphaned_runs(instance)  # a run whose process was killed is not in progress
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS, job_name=None), limit=50)
    return [f"{r.job_name} ({r.run_id[:8]})" for r in runs if r.job_name in jobs]


def tick_date(context: dg.ScheduleEvaluationContext) -> dt.date:
    return context.scheduled_execution_time.date()


def weekly_request(context: dg.ScheduleEvaluationContext, job_name: str, jobs: list[str]):
    busy = runs_in_progress(context.instance, jobs)
    if busy:
        return dg.SkipReason(f"skipped: a previous cycle is still running: {', '.join(busy)}")
    as_of = tick_date(context) - dt.timedelta(days=1)
    key = partition_key_for(as_of)
    return dg.RunRequest(
        run_key=f"{job_name}-{key}", partition_key=key, tags={AS_OF_TAG: as_of.isoformat()}
    )


def build_schedules(
    settings, jobs: dict, default_status: dg.DefaultScheduleStatus
) -> list[dg.ScheduleDefinition]:
    tz = settings.data_refresh.timezone
    names = list(jobs)

    @dg.schedule(
        name="weekly_refresh_schedule",
        job=jobs["refresh_market_data"],
        cron_schedule=settings.data_refresh.schedule,
        execution_timezone=tz,
        default_status=default_status,
        description="Weekly data refresh, quality gate and features.",
    )
    def weekly_refresh_schedule(context: dg.ScheduleEvaluationContext):
        return weekly_request(context, "refresh_market_data", names)

    @dg.schedule(
        name="weekly_retraining_schedule",
        job=jobs["train_ensemble"],
        cron_schedule=settings.retraining.schedule,
        execution_timezone=tz,
        default_status=default_status,
        description="Weekly retraining, only after that week's refresh and quality gate passed.",
    )
    def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext):
        request = weekly_request(context, "train_ensemble", names)
        if isinstance(request, dg.SkipReason):
            return request
        refreshes = context.instance.get_runs(
            filters=dg.RunsFilter(
                job_name="refresh_market_data", tags={"dagster/partition": request.partition_key}
            ),
            limit=1,
        )
        if not refreshes or refreshes[0].status != dg.DagsterRunStatus.SUCCESS:
            state = refreshes[0].status.value if refreshes else "no run"
            return dg.SkipReason(
                f"skipped: the refresh of week {request.partition_key} has not succeeded ({state})"
            )
        return request

    @dg.schedule(
        name="daily_predictions_schedule",
        job=jobs["daily_predictions"],
        cron_schedule=settings.monitoring.predictions_schedule,
        execution_timezone=tz,
        default_status=default_status,
        description="After the close: refresh, predictions of production and shadow models, outcomes, performance.",
    )
    def daily_predictions_schedule(context: dg.ScheduleEvaluationContext):
        busy = runs_in_progress(context.instance, names)
        if busy:
            return dg.SkipReason(f"skipped: a previous cycle is still running: {', '.join(busy)}")
        day = tick_date(context)
        return dg.RunRequest(
            run_key=f"daily_predictions-{day}",
            partition_key=partition_key_for(day),
            tags={AS_OF_TAG: day.isoformat()},
        )

    @dg.schedule(
        name="weekly_decision_schedule",
        job=jobs["shadow_decision"],
        cron_schedule=settings.ab_testing.schedule,
        execution_timezone=tz,
        default_status=default_status,
        description="Weekly shadow comparisons and the production pointer decision.",
    )
    def weekly_decision_schedule(context: dg.ScheduleEvaluationContext):
        return weekly_request(context, "shadow_decision", names)

    return [
        weekly_refresh_schedule,
        weekly_retraining_schedule,
        daily_predictions_schedule,
        weekly_decision_schedule,
    ]
