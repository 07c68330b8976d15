"""Walk-forward replay: the weekly loop over history, week after week, resumable.

Each week runs ``weekly_adaptation`` for its partition, as of the week's last day, exactly as the
schedule would have run it live. Every finished week is recorded in ``replay_log`` (done, or failed
with the reason: that week production stays, and the replay goes on); a restarted replay skips the
recorded weeks, and a week cut short by a crash is run again. Re-running a week is idempotent: stored
bars and predictions are not duplicated, and the week's candidate is reused, not trained twice.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from stage2_assets import clock
from stage2_assets.assets.training import REPLAY_TAG, REUSE_TAG
from stage2_assets.errors import Stage2Error
from stage2_assets.launch import run_failures, run_job
from stage2_assets.partitions import partition_key_for, week_window
from stage2_assets.resources.warehouse import Warehouse

REPLAY_LOG = """
CREATE TABLE IF NOT EXISTS replay_log (
    week VARCHAR PRIMARY KEY, as_of DATE, status VARCHAR, run_id VARCHAR, seconds DOUBLE, reason VARCHAR
);
ALTER TABLE replay_log ADD COLUMN IF NOT EXISTS steps VARCHAR;
"""


def step_seconds(run_id: str) -> dict[str, float]:
    """{step: seconds} of a finished run, from the instance's event log (a step's start to end)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        stats = instance.get_run_step_stats(run_id)
    return {
        s.step_key: round(s.end_time - s.start_time, 3)
        for s in stats
        if s.start_time is not None and s.end_time is not None
    }


def _first_and_last_day(path: Path) -> tuple[dt.date, dt.date] | None:
    """Dates of a CSV's first and last data lines, reading only its head and tail."""
    with path.open("rb") as handle:
        handle.readline()
        first = handle.readline()
        handle.seek(max(0, path.stat().st_size - 4096))
        lines = [line for line in handle.read().splitlines() if line.strip()]
    try:
        return (
            dt.date.fromisoformat(first.split(b",", 1)[0].decode()),
            dt.date.fromisoformat(lines[-1].split(b",", 1)[0].decode()),
        )
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def source_coverage(settings) -> tuple[dt.date, dt.date] | None:
    """First and last date the configured source can answer for (None: unknown, as for yfinance)."""
    ds = settings.data_source
    if ds.kind == "simulated":
        return ds.simulated.start_date, clock.today()
    if ds.kind == "csv":
        spans = [
            span
            for path in sorted(Path(settings.csv_path).glob("*.csv"))
            if (span := _first_and_last_day(path))
        ]
        if not spans:
            raise Stage2Error(f"no readable SYMBOL.csv in {settings.csv_path}")
        return min(s[0] for s in spans), max(s[1] for s in spans)
    return None


def replay_weeks(settings, start: dt.date, end: dt.date) -> list[tuple[str, dt.date]]:
    """(partition key, as-of date) of every week from ``start`` to ``end``, checked against the data."""
    if end < start:
        raise Stage2Error(f"--to {end} is before --from {start}")
    end = min(end, clock.today())
    coverage = source_coverage(settings)
    if coverage is not None:
        first, last = coverage
        if start > last or end < first:
            raise Stage2Error(
                f"the range {start}..{end} lies outside the data of source '{settings.data_source.kind}' ({first}..{last})"
            )
        if start < first:
            raise Stage2Error(
                f"--from {start} is before the first bar of the data ({first}); start on or after it"
            )
        end = min(end, last)
    weeks = []
    key = partition_key_for(start)
    while dt.date.fromisoformat(key) <= end:
        weeks.append((key, min(week_window(key)[1], end)))
        key = (dt.date.fromisoformat(key) + dt.timedelta(days=7)).isoformat()
    return weeks


def refuse_later_history(settings, first: dt.date) -> None:
    """A replay walks forward from ``first``: stores that already hold a later candidate or pointer
    move (weekly runs past that date, another replay) would be read as if they were its past."""
    from stage2_assets.promotion.history import pointer_history
    from stage2_assets.resources.model_store import ModelStore

    store = ModelStore(root=str(settings.models_path))
    cutoffs = [dt.date.fromisoformat(c) for c in store.trained_cutoffs().values()]
    moves = [dt.date.fromisoformat(m["date"]) for m in pointer_history(store)]
    later = [d for d in cutoffs + moves if d > first]
    if later:
        raise Stage2Error(
            f"the stores of this config ({settings.models_path}) already hold history up to {max(later)}, "
            f"after the replay's first week to run (as of {first}); a replay needs stores of its own: "
            "copy the config and point storage.warehouse and storage.models at new paths"
        )


def recorded_weeks(warehouse: Warehouse) -> pd.DataFrame:
    with warehouse.connect() as conn:
        conn.execute(REPLAY_LOG)
        return conn.execute("SELECT * FROM replay_log ORDER BY week").df()


def run_replay(
    settings,
    start: dt.date,
    end: dt.date,
    log_level: str = "ERROR",
    on_week: Callable[[str, dt.date, str, float], None] | None = None,
) -> pd.DataFrame:
    """Run every week not yet recorded; return the whole replay_log."""
    warehouse = Warehouse(database=str(settings.warehouse_path))
    weeks = replay_weeks(settings, start, end)
    log = recorded_weeks(warehouse)
    # a week counts as done only for the as-of it ran with (a replay that ended mid-week and is
    # extended later runs that week again, as of its end)
    done = {(row.week, pd.Timestamp(row.as_of).date()) for row in log.itertuples()}
    pending = [as_of for key, as_of in weeks if (key, as_of) not in done]
    if pending:
        refuse_later_history(settings, pending[0])
    for key, as_of in weeks:
        if (key, as_of) in done:
            continue
        started = time.perf_counter()
        result = run_job(
            settings,
            "weekly_adaptation",
            as_of,
            extra_tags={REUSE_TAG: "true", REPLAY_TAG: "true"},
            log_level=log_level,
        )
        seconds = time.perf_counter() - started
        problems = run_failures(result)
        skipped = any(e.event_type_value == "STEP_SKIPPED" for e in result.all_events)
        status = "done" if result.success and not skipped else "failed"
        reason = "; ".join(
            problems
        )  # for a done week, a failed non-blocking check (degradation) is kept as a note
        steps = step_seconds(result.run_id)
        with warehouse.connect() as conn:
            conn.execute(REPLAY_LOG)
            conn.execute(
                "INSERT OR REPLACE INTO replay_log (week, as_of, status, run_id, seconds, reason, steps) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    key,
                    as_of,
                    status,
                    result.run_id,
                    seconds,
                    reason[:2000] or None,
                    json.dumps(steps),
                ],
            )
        if on_week:
            on_week(key, as_of, status, seconds)
    return recorded_weeks(warehouse)


def regime_starts(settings) -> list[dt.date]:
    ds = settings.data_source
    return [r.start for r in ds.simulated.regimes[1:]] if ds.kind == "simulated" else []


def replay_report(settings, log: pd.DataFrame, start: dt.date, end: dt.date, **decided) -> dict:
    """The report's figures for the weeks of ``log`` between ``start`` and ``end`` (``decided``:
    the serving rules, comparisons and rollbacks of a sweep, instead of the stores')."""
    from stage2_assets.replay.evaluation import evaluate
    from stage2_assets.resources.model_store import ModelStore

    weeks = log[
        (log["week"] >= partition_key_for(start)) & (pd.to_datetime(log["as_of"]).dt.date <= end)
    ]
    return evaluate(
        Warehouse(database=str(settings.warehouse_path)),
        ModelStore(root=str(settings.models_path)),
        weeks,
        settings.monitoring.transaction_cost_bps,
        settings.ab_testing.bootstrap_samples,
        seed=0,
        regime_starts=regime_starts(settings),
        data_window_days=settings.retraining.data_window,
        half_life_days=settings.retraining.recency_half_life,
        # the validation slice and the embargo before the cut-off carry no training weight, unless
        # the model is refitted on the whole window
        untrained_days=0.0
        if settings.retraining.refit
        else settings.retraining.validation_split * settings.retraining.data_window
        + settings.label_rule.embargo_days * 7 / 5,
        horizon=settings.label_rule.horizon_days,
        book_fraction=settings.monitoring.book_fraction,
        **decided,
    )
