"""Weekly partitions, and the as-of date each run answers for.

A partition is a week (Sunday to Saturday); its as-of date is the week's last day, or today for
the week in progress. A run may narrow it with the ``stage2/as_of`` tag (``stage2 refresh
--as-of DATE``), never widen it past the week: nothing a run stores is dated after its as-of.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from stage2_assets import clock
from stage2_assets.config import get_settings
from stage2_assets.errors import Stage2Error

AS_OF_TAG = "stage2/as_of"

weekly_partitions = dg.WeeklyPartitionsDefinition(
    start_date=get_settings().first_partition.isoformat(),
    timezone=get_settings().data_refresh.timezone,
    end_offset=1,
)


def week_window(partition_key: str) -> tuple[dt.date, dt.date]:
    """First and last day of the week a partition key names."""
    start = dt.date.fromisoformat(partition_key)
    return start, start + dt.timedelta(days=6)


def partition_key_for(day: dt.date) -> str:
    """The key of the weekly partition that contains ``day``."""
    start = day - dt.timedelta(days=(day.weekday() + 1) % 7)  # back to Sunday
    first = get_settings().first_partition
    if start < first:
        raise Stage2Error(
            f"{day} is before the first weekly partition ({first}, first_partition in the config)"
        )
    return start.isoformat()


def resolve_as_of(partition_key: str, tag: str | None, today: dt.date | None = None) -> dt.date:
    """The as-of date of a run: the tag if given (inside the week), else the week's end, never after today."""
    today = today or clock.today()
    start, end = week_window(partition_key)
    if tag:
        try:
            as_of = dt.date.fromisoformat(tag)
        except ValueError:
            raise Stage2Error(f"tag {AS_OF_TAG}={tag!r} is not a date (YYYY-MM-DD)") from None
        if not start <= as_of <= end:
            raise Stage2Error(
                f"tag {AS_OF_TAG}={tag} lies outside partition {partition_key} ({start}..{end})"
            )
        return min(as_of, today)
    return min(end, today)


def as_of_date(context: dg.AssetExecutionContext) -> dt.date:
    """The as-of date of the running asset."""
    return resolve_as_of(context.partition_key, context.run.tags.get(AS_OF_TAG))
