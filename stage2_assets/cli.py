"""The ``stage2`` command: a thin layer that launches Dagster jobs and reads the stores.

Every command that changes state runs a Dagster job in the instance at ``$DAGSTER_HOME`` (created
next to the config, telemetry off, when unset), so its runs show in the UI like scheduled ones.
Errors a person can act on print one line and exit 2; a failed run exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from stage2_assets.errors import Stage2Error

_INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def _prepare_instance(settings) -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.resolve(Path("../.dagster")))
        os.environ["DAGSTER_HOME"] = home
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "dagster.yaml").exists():
        (path / "dagster.yaml").write_text(_INSTANCE_YAML)
    return path


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def run_job(
    settings,
    job_name: str,
    as_of: dt.date | None,
    extra_tags: dict | None = None,
    log_level: str = "WARNING",
):
    """Run a partitioned job for the week of ``as_of`` (default today) through the instance."""
    import dagster as dg

    from stage2_assets.definitions import build_definitions
    from stage2_assets.partitions import AS_OF_TAG, partition_key_for

    day = as_of or dt.date.today()
    key = partition_key_for(day)
    tags = {AS_OF_TAG: day.isoformat(), **(extra_tags or {})}
    with dg.DagsterInstance.get() as instance:
        result = (
            build_definitions(settings)
            .resolve_job_def(job_name)
            .execute_in_process(
                instance=instance,
                partition_key=key,
                tags=tags,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            )
        )
    return result


def _report_run(result, job_name: str) -> int:
    failed = [
        e
        for e in result.all_events
        if e.event_type_value in ("STEP_FAILURE", "ASSET_CHECK_EVALUATION")
    ]
    for event in failed:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            print(
                f"stage2: step {event.step_key} failed: {error.message.strip() if error else ''}",
                file=sys.stderr,
            )
        else:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                print(
                    f"stage2: check {evaluation.check_name} failed: {evaluation.description}",
                    file=sys.stderr,
                )
    skipped = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    if skipped:
        print(
            f"stage2: skipped because an upstream step or blocking check failed: {', '.join(skipped)}",
            file=sys.stderr,
        )
    status = "succeeded" if result.success and not skipped else "failed"
    print(f"{job_name} run {result.run_id} {status}")
    return 0 if status == "succeeded" else 1


def cmd_refresh(args, settings) -> int:
    result = run_job(settings, "refresh_market_data", args.as_of, log_level=args.log_level)
    return _report_run(result, "refresh_market_data")


def cmd_status(args, settings) -> int:
    from stage2_assets.status import collect_status

    status = collect_status(settings)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(f"source: {status['source']}")
        for name, table in status["tables"].items():
            print(
                f"{name:16} {table['rows']:>9} rows {table['symbols']:>5} symbols  {table['first_date']} .. {table['last_date']}"
            )
        last = status["last_refresh"]
        print(
            f"last refresh: fetched {last['fetched']}, new {last['new']}, revised {last['revised']}, failed {last['failed_symbols']}"
        )
        for item in status["quarantine"]:
            print(f"quarantined {item['symbol']}: {'; '.join(item['reasons'])}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stage2", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="settings file (default: $STAGE2_CONFIG or config/adaptation.yaml)"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="Dagster console log level of runs (default WARNING)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    refresh = sub.add_parser(
        "refresh", help="fetch new bars, gate them, recompute features (refresh_market_data)"
    )
    refresh.add_argument("--as-of", type=_date, help="answer as of this date (default: today)")
    refresh.set_defaults(func=cmd_refresh)
    status = sub.add_parser("status", help="what the stores hold")
    status.add_argument("--json", action="store_true", help="machine-readable output (a contract)")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from stage2_assets.config import load_settings

        settings = load_settings(args.config)
        _prepare_instance(settings)
        return args.func(args, settings)
    except Stage2Error as exc:
        print(f"stage2: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
