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
import json
import os
import sys
import tempfile
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

    from stage2_assets.cli import main as stage2

    out = args.json_out or os.path.join(tempfile.mkdtemp(), "sweep.json")
    began = time.perf_counter()
    # the command itself: it refuses an unfinished replay or a key that is not a gate setting
    code = stage2(
        ["--config", args.config, "replay", "--from", args.start, "--to", args.end]
        + ["--sweep", *args.sweep, "--json-out", out]
    )
    seconds = time.perf_counter() - began
    if code != 0:
        return code
    report = json.loads(Path(out).read_text())
    print(
        f"\n{len(report['sweep'])} settings over {report['weeks']} weeks in {seconds:.1f} s "
        f"({os.cpu_count()} CPUs; the replay's own report and the reproduction check included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
