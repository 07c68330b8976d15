"""Data-spine benchmark: full load of ../shared/market-data, a 5-day incremental refresh, features.

Runs the same functions the assets run (fetch, store, GX gate, validated upsert, features) on a
temporary copy of the data whose last 5 sessions are held back, then released. Prints wall time and
the peak resident memory after each step, and the ratio incremental / full.

The full load and the incremental run are each repeated (``--repeats``, default 5), each time on a
fresh copy of the store they start from, and the median is what the ratio uses: one run of each
moves by a third on this 2-core machine, more than the changes it is meant to show. The runs
alternate (a full load, then an incremental run), so both medians are taken over the same minutes.

    python benchmarks/bench_data.py [--data ../shared/market-data] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

from stage2_assets.checks.quality_suite import validate_bars  # noqa: E402
from stage2_assets.config import QualityRules, load_settings  # noqa: E402
from stage2_assets.market.intake import refresh_bars  # noqa: E402
from stage2_assets.market.validation import apply_passing, evaluate_quality  # noqa: E402
from stage2_assets.ml.features import compute_features  # noqa: E402
from stage2_assets.resources.market_data import source_from_settings  # noqa: E402
from stage2_assets.resources.warehouse import Warehouse  # noqa: E402

HELD_BACK_SESSIONS = 5


def measure(name: str, fn, results: list):
    """Wall time of one step, and the process's peak resident memory when it ends."""
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.append((name, seconds, peak))
    print(f"{name:<32} {seconds:8.2f} s   peak RSS so far {peak:8.1f} MiB", flush=True)
    return value


def repeated(name: str, runs: list[float]) -> float:
    """The median of a step's repeats, printed with their range."""
    median = statistics.median(runs)
    print(
        f"{name:<32} {median:8.3f} s   median of {len(runs)} ({min(runs):.3f}-{max(runs):.3f})",
        flush=True,
    )
    return median


def refresh(warehouse: Warehouse, settings, as_of: dt.date, run_id: str) -> dict:
    """What raw_bars does (the same function): list, plan, fetch, screen, re-adjust, store."""
    intake = refresh_bars(warehouse, source_from_settings(settings), settings, as_of, run_id)
    return {"fetched": intake.summary["fetched"], "new": intake.summary["new"]}


def gate(warehouse: Warehouse, run_id: str) -> dict:
    """What the quality gate and validated_bars do: GX over pending bars, upsert the passing ones."""
    with warehouse.connect() as conn:
        report, pending = evaluate_quality(conn, run_id, QualityRules())
        written = apply_passing(conn, report, run_id)
    return {
        "judged": pending,
        "validated": written.bars,
        "quarantined": report.failed,
    }


def warm_up(as_of: dt.date) -> None:
    """One-time costs of a process (imports, the NYSE calendar, Great Expectations' first run) paid
    before timing starts, so neither load is charged for them. An empty frame would not do: the
    suite returns before building the calendar or running Great Expectations."""
    day = pd.Timestamp(as_of)
    bar = pd.DataFrame(
        {
            "symbol": ["WARM"],
            "date": [day],
            "open": [1.0],
            "high": [1.0],
            "low": [1.0],
            "close": [1.0],
            "volume": [1.0],
            "source": ["warm"],
        }
    )
    validate_bars(bar, bar.iloc[0:0], as_of, 0.4, 5)
    # What the imports left on the heap is there for the process's life: frozen, a full garbage
    # collection no longer walks it, so its ~0.3 s pause does not land at random in one step.
    gc.collect()
    gc.freeze()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "market-data"),
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of each load (median)")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"market data not found at {data}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "csv"
        shutil.copytree(data, copy)
        last_sessions = sorted(pd.read_csv(copy / "AAPL.csv", usecols=["date"])["date"])[
            -HELD_BACK_SESSIONS:
        ]
        cut = dt.date.fromisoformat(last_sessions[0]) - dt.timedelta(days=1)
        final = dt.date.fromisoformat(last_sessions[-1])
        warehouse = Warehouse(database=str(Path(tmp) / "bench.duckdb"))
        (Path(tmp) / "bench.yaml").write_text(
            yaml.safe_dump(
                {
                    "data_source": {"kind": "csv", "path": str(copy), "symbols": "auto"},
                    "data_refresh": {"history_start": "2015-01-01", "overlap_days": 5},
                    "storage": {"warehouse": str(Path(tmp) / "bench.duckdb")},
                }
            )
        )
        settings = load_settings(Path(tmp) / "bench.yaml")
        results: list = []
        warm_up(final)
        loaded = Path(tmp) / "loaded.duckdb"  # the store after the full load and its gate
        full_name, full_gate_name = f"raw_bars full load to {cut}", "quality gate, full load"
        incr_name, incr_gate_name = (
            f"raw_bars +{HELD_BACK_SESSIONS} sessions",
            "quality gate, incremental",
        )
        # each full load is followed by an incremental run, so the two loads of a pair meet the
        # same machine (its speed drifts by a third over minutes here)
        for repeat in range(args.repeats):
            Path(warehouse.database).unlink(missing_ok=True)
            full = measure(full_name, lambda: refresh(warehouse, settings, cut, "full"), results)
            full_gate = measure(full_gate_name, lambda: gate(warehouse, "full"), results)
            if repeat == 0:
                shutil.copy(warehouse.database, loaded)
            shutil.copy(loaded, warehouse.database)
            incr = measure(incr_name, lambda: refresh(warehouse, settings, final, "incr"), results)
            incr_gate = measure(incr_gate_name, lambda: gate(warehouse, "incr"), results)
        bars = warehouse.query_df(
            "SELECT symbol, date, open, high, low, close, volume FROM validated_bars"
        )
        bars["date"] = pd.to_datetime(bars["date"])
        table = measure("features (all symbols)", lambda: compute_features(bars), results)
        print(f"full load: {full} / gate {full_gate}")
        print(f"incremental: {incr} / gate {incr_gate}")
        print(f"features: {len(table)} rows, {table['symbol'].nunique()} symbols")
        seconds = {
            name: [seconds for step, seconds, _ in results if step == name]
            for name in (full_name, full_gate_name, incr_name, incr_gate_name)
        }
        median = {name: repeated(name, runs) for name, runs in seconds.items()}
        print(
            f"ratio incremental/full, raw_bars refresh: {median[incr_name] / median[full_name]:.3f}"
        )
        print(
            "ratio incremental/full, refresh + quality gate: "
            f"{(median[incr_name] + median[incr_gate_name]) / (median[full_name] + median[full_gate_name]):.3f}"
        )
        pairs = [
            (a + b) / (c + d)
            for a, b, c, d in zip(
                seconds[incr_name],
                seconds[incr_gate_name],
                seconds[full_name],
                seconds[full_gate_name],
                strict=True,
            )
        ]
        print(
            "  each pair's ratio (a full load and the incremental run after it): "
            + ", ".join(f"{r:.3f}" for r in pairs)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
