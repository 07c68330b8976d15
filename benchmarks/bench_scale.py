"""Load benchmark: N simulated symbols x 5 years through refresh, the quality gate and features.

Each size runs in its own process (so peak RSS is that size's own) on a fresh temporary warehouse,
with the same functions the assets run. Prints rows, seconds per step, microseconds per row, and
peak RSS. Target on a 2-core machine: <= 4 GiB at 1,000 symbols, time growing linearly with rows.

    python benchmarks/bench_scale.py [--sizes 250 500 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

START, END = dt.date(2020, 1, 2), dt.date(2024, 12, 31)


def one(symbols: int) -> dict:
    import pandas as pd

    from stage2_assets.config import QualityRules
    from stage2_assets.market.refresh import plan_starts, store_fetched
    from stage2_assets.market.validation import apply_passing, evaluate_quality
    from stage2_assets.ml.features import compute_features
    from stage2_assets.resources.market_data import RegimeConfig, SimulatedSource
    from stage2_assets.resources.warehouse import Warehouse

    source = SimulatedSource(
        seed=1,
        num_symbols=symbols,
        start_date=START.isoformat(),
        regimes=[
            RegimeConfig(start=START.isoformat(), drift=0.0002, volatility=0.015, momentum=0.1)
        ],
    )
    warehouse = Warehouse(database=str(Path(tempfile.mkdtemp()) / "scale.duckdb"))
    seconds = {}
    t = time.perf_counter()
    with warehouse.connect() as conn:
        starts = plan_starts(conn, source.available_symbols(), START, 5, END)
    fetched = source.fetch(starts, END)
    with warehouse.connect() as conn:
        log = store_fetched(conn, fetched, starts, "simulated", "scale", END)
    seconds["refresh"] = time.perf_counter() - t
    t = time.perf_counter()
    with warehouse.connect() as conn:
        report, _ = evaluate_quality(conn, "scale", QualityRules())
        apply_passing(conn, report, "scale")
    seconds["gate"] = time.perf_counter() - t
    t = time.perf_counter()
    bars = warehouse.query_df(
        "SELECT symbol, date, open, high, low, close, volume FROM validated_bars"
    )
    bars["date"] = pd.to_datetime(bars["date"])
    table = compute_features(bars)
    seconds["features"] = time.perf_counter() - t
    return {
        "symbols": symbols,
        "rows": int(log["new"].sum()),
        "feature_rows": len(table),
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    print(
        f"{'symbols':>8} {'rows':>10} {'refresh s':>10} {'gate s':>8} {'features s':>11} {'total s':>8} {'us/row':>7} {'peak RSS':>10}"
    )
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total = sum(r["seconds"].values())
        print(
            f"{r['symbols']:>8} {r['rows']:>10} {r['seconds']['refresh']:>10.1f} {r['seconds']['gate']:>8.1f} "
            f"{r['seconds']['features']:>11.1f} {total:>8.1f} {1e6 * total / r['rows']:>7.1f} {r['peak_rss_mib']:>7.0f} MiB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
