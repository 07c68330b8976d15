"""Scale benchmark: a simulated universe of N symbols x Y years through the real jobs, then weekly cycles.

Each size runs in its own process (so peak RSS is that size's own), in fresh temporary stores, with
the default simulated market (its market and sector factors) of N symbols starting Y years before
the as-of date. It runs the Dagster job ``refresh_market_data`` as ``stage2 refresh`` does (the
first full load: refresh, Great Expectations gate, validated bars, features) and prints bars,
seconds per step (from the run's event log), microseconds per bar and peak RSS. With ``--cycles``
the largest size then runs that many weekly cycles (``weekly_adaptation`` as ``stage2 weekly``
does, a week apart: refresh of the new sessions, gate, features, predictions, monitoring,
training on the 2-year window, shadow comparison, pointer), each with its seconds per step and
the process's peak RSS after it, and the predictions log's rows.

Targets on this 2-core, 24 GiB machine: the data spine <= 6 GiB peak at 5,000 symbols x 10
years, time linear in bars; a weekly cycle <= 10 minutes with training <= 5.

    python benchmarks/bench_scale.py [--sizes 1000 2500 5000] [--years 10] [--cycles 3]
        [--batch-size 8192] [--max-epochs 20]
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

import yaml
from bench_replay import PARTS  # noqa: E402  (this folder is on the path when run as a script)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2024, 12, 27)  # a Friday: the first cycle's as-of; each next one a week later
# the replay benchmark's parts, with the validated bars apart from the gate (a first load's upsert)
STEPS = {**PARTS, "validated_bars": "validated"}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _part(step: str) -> str:
    part = STEPS.get(step, "monitoring" if step.endswith("not_degraded") else step)
    return "gate" if step.endswith("quality_gate") else part


def _parts(run_id: str, seconds: float, samples: list[tuple[float, float]]) -> dict:
    """Seconds per part, and the highest resident memory sampled during each part's steps."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        stats = [
            s
            for s in instance.get_run_step_stats(run_id)
            if s.start_time is not None and s.end_time is not None
        ]
    parts: dict[str, float] = {}
    peaks: dict[str, float] = {}
    for s in stats:
        part = _part(s.step_key)
        parts[part] = parts.get(part, 0.0) + s.end_time - s.start_time
        during = [rss for at, rss in samples if s.start_time <= at <= s.end_time]
        peaks[part] = max([peaks.get(part, 0.0), *during])
    parts["set-up"] = max(seconds - sum(s.end_time - s.start_time for s in stats), 0.0)
    parts["total"] = seconds
    out = {k: round(v, 2) for k, v in parts.items()}
    out["rss_mib"] = {k: round(v) for k, v in peaks.items()}
    return out


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run(settings, job: str, as_of: dt.date) -> dict:
    import threading

    from stage2_assets.launch import run_failures, run_job

    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            samples.append((time.time(), _rss_mib()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = run_job(settings, job, as_of, log_level="ERROR")
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"{job} as of {as_of} failed: {'; '.join(run_failures(result))}")
    return {"as_of": as_of.isoformat(), **_parts(result.run_id, seconds, samples)}


def one(symbols: int, years: int, cycles: int, batch_size: int, max_epochs: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"stage2-scale-{symbols}-"))
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    raw = yaml.safe_load((ROOT / "config" / "adaptation.yaml").read_text())
    raw["data_source"]["simulated"].update(
        num_symbols=symbols,
        start_date=(AS_OF - dt.timedelta(days=round(365.25 * years))).isoformat(),
    )
    simulated = raw["data_source"]["simulated"]
    start = dt.date.fromisoformat(str(simulated["start_date"]))
    # the default market's regimes, those that begin after the start (the first from the start)
    first, *later = simulated["regimes"]
    later = [r for r in later if dt.date.fromisoformat(str(r["start"])) > start]
    simulated["regimes"] = [{**first, "start": start.isoformat()}, *later]
    raw["data_refresh"]["history_start"] = raw["data_source"]["simulated"]["start_date"]
    raw["retraining"].update(batch_size=batch_size, max_epochs=max_epochs)
    raw["storage"] = {"warehouse": str(folder / "scale.duckdb"), "models": str(folder / "models")}
    raw["alerts"]["jsonl_path"] = str(folder / "alerts.jsonl")
    (folder / "adaptation.yaml").write_text(yaml.safe_dump(raw))

    from stage2_assets.config import load_settings
    from stage2_assets.resources.warehouse import Warehouse

    settings = load_settings(folder / "adaptation.yaml")
    warehouse = Warehouse(database=str(settings.warehouse_path))
    out = {"symbols": symbols, "years": years}
    out["spine"] = _run(settings, "refresh_market_data", AS_OF)
    out["spine_peak_rss_mib"] = round(_peak_mib())
    with warehouse.connect(read_only=True) as conn:
        out["bars"] = conn.execute("SELECT count(*) FROM validated_bars").fetchone()[0]
        out["feature_rows"] = conn.execute("SELECT count(*) FROM features").fetchone()[0]
    out["database_mib"] = round(Path(settings.warehouse_path).stat().st_size / 2**20)
    out["cycles"] = []
    for week in range(cycles):
        cycle = _run(settings, "weekly_adaptation", AS_OF + dt.timedelta(days=7 * week))
        cycle["peak_rss_mib"] = round(_peak_mib())
        with warehouse.connect(read_only=True) as conn:
            cycle["prediction_rows"] = conn.execute("SELECT count(*) FROM predictions").fetchone()[
                0
            ]
            cycle["train_rows"] = conn.execute(
                "SELECT count(*) FROM features WHERE label IS NOT NULL AND date > ? AND date <= ?",
                [
                    AS_OF + dt.timedelta(days=7 * week - settings.retraining.data_window),
                    AS_OF + dt.timedelta(days=7 * week),
                ],
            ).fetchone()[0]
        out["cycles"].append(cycle)
        print(json.dumps({"cycle": cycle}), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000])
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=3, help="weekly cycles at the largest size")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-cycles", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = one(args.one, args.years, args.one_cycles, args.batch_size, args.max_epochs)
        print(json.dumps(result))
        return 0
    print(f"simulated market, {args.years} years to {AS_OF}; one process per size")
    print(
        f"{'symbols':>8} {'bars':>11} {'refresh s':>10} {'gate s':>7} {'valid. s':>9} "
        f"{'features s':>11} {'run s':>7} {'us/bar':>7} {'peak RSS':>10} {'db MiB':>7}"
    )
    results = []
    for size in args.sizes:
        cycles = args.cycles if size == max(args.sizes) else 0
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--years",
                str(args.years),
                "--one-cycles",
                str(cycles),
                "--batch-size",
                str(args.batch_size),
                "--max-epochs",
                str(args.max_epochs),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        s = r["spine"]
        print(
            f"{r['symbols']:>8} {r['bars']:>11,} {s.get('refresh', 0):>10.1f} {s.get('gate', 0):>7.1f} "
            f"{s.get('validated', 0):>9.1f} {s.get('features', 0):>11.1f} {s['total']:>7.1f} "
            f"{1e6 * s['total'] / r['bars']:>7.1f} {r['spine_peak_rss_mib']:>6,} MiB {r['database_mib']:>7,}",
            flush=True,
        )
        print(
            f"{'':>8} resident memory sampled per step (MiB): "
            + ", ".join(f"{k} {v:,}" for k, v in s["rss_mib"].items()),
            flush=True,
        )
    for r in results:
        if not r["cycles"]:
            continue
        print(
            f"\nweekly cycles at {r['symbols']} symbols (batch {args.batch_size}, up to "
            f"{args.max_epochs} epochs), seconds per part:"
        )
        parts = [
            "set-up",
            "refresh",
            "gate",
            "validated",
            "features",
            "predictions",
            "monitoring",
            "training",
            "comparison",
            "pointer",
            "total",
        ]
        print(
            f"{'as of':<11} "
            + " ".join(f"{p:>11}" for p in parts)
            + f" {'peak RSS':>10} {'pred rows':>10} {'train rows':>10}"
        )
        for c in r["cycles"]:
            print(
                f"{c['as_of']:<11} "
                + " ".join(f"{c.get(p, 0.0):>11.1f}" for p in parts)
                + f" {c['peak_rss_mib']:>6,} MiB {c['prediction_rows']:>10,} {c['train_rows']:>10,}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
