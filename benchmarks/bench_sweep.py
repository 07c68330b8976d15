"""Sweep benchmark: a finished replay re-decided under 9 gate settings, timed.

Times `stage2 replay --sweep` (no training: the decisions are taken again from the replay's logged
predictions, and the report's figures computed once per setting) over the stores of a finished
replay, e.g. the README's two-regime replay:

    stage2 --config config/replay-two-regimes.yaml replay --from 2024-04-01 --to 2025-06-30
    python benchmarks/bench_sweep.py --config config/replay-two-regimes.yaml --from 2024-04-01 --to 2025-06-30

Default grid: ab_testing.false_promotion_budget 0.05 / 0.10 / 0.20 x ab_testing.spending_rho 1 / 2 / 3.
Prints the wall time of the whole sweep (loading the logs, the check that the replay's own settings
reproduce its recorded decisions, the report of every setting) and one line per setting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = ["ab_testing.false_promotion_budget=0.05,0.1,0.2", "ab_testing.spending_rho=1,2,3"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "replay-two-regimes.yaml"))
    parser.add_argument("--from", dest="start", default="2024-04-01")
    parser.add_argument("--to", dest="end", default="2025-06-30")
    parser.add_argument("--sweep", nargs="+", default=GRID, metavar="KEY=V1,V2")
    parser.add_argument("--json-out", help="write the sweep's report here")
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

    from stage2_assets.config import load_settings
    from stage2_assets.errors import Stage2Error
    from stage2_assets.replay.report import sweep_lines
    from stage2_assets.replay.runner import recorded_weeks, replay_report, replay_weeks
    from stage2_assets.replay.sweep import parse_sweep, sweep
    from stage2_assets.resources.warehouse import Warehouse

    settings = load_settings(args.config)
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    if not settings.warehouse_path.exists():
        print(
            f"no replay in {settings.warehouse_path}: run `stage2 --config {args.config} replay "
            f"--from {args.start} --to {args.end}` first",
            file=sys.stderr,
        )
        return 2
    log = recorded_weeks(Warehouse(database=str(settings.warehouse_path)))
    weeks = replay_weeks(settings, start, end)
    done = {(r.week, str(r.as_of)[:10]) for r in log.itertuples()}
    if any((key, as_of.isoformat()) not in done for key, as_of in weeks):
        print("the replay has not run every week of the range: run it first", file=sys.stderr)
        return 2
    try:
        settings_list = parse_sweep(args.sweep)
    except Stage2Error as exc:
        print(exc, file=sys.stderr)
        return 2
    began = time.perf_counter()
    report = replay_report(settings, log, start, end)
    result = sweep(settings, log, start, end, settings_list)
    seconds = time.perf_counter() - began
    report["sweep"], report["sweep_check"] = result["settings"], result["check"]
    print("\n".join(sweep_lines(report)))
    print(
        f"\n{len(settings_list)} settings over {len(weeks)} weeks in {seconds:.1f} s "
        f"({os.cpu_count()} CPUs; the replay's own report and the reproduction check included)"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
