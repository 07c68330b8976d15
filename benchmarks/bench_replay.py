"""Replay benchmark: a 52-week walk-forward replay, per-week time printed as it goes.

Default: all of ../shared/market-data with the default training settings (2-year window, 5 members,
up to 20 epochs, batch 1,024 in config/market-data.yaml), weeks of 2019, in fresh temporary stores. Prints each week's time, the
mean of the first and last 13 weeks (is the cost flat?), the total, peak RSS, and the arms; then where a
week goes: per part (Dagster run set-up, refresh, gate, features, predictions, monitoring, training,
comparison, pointer), the seconds per week in the first and last quarter, the total and the share.
A part's time is its Dagster step's, from the run's event log; set-up is the rest of the run.

    python benchmarks/bench_replay.py [--config config/market-data.yaml] [--from 2019-01-05] [--to 2019-12-31]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


PARTS = {
    "raw_bars": "refresh",
    "validated_bars": "gate",
    "features": "features",
    "predictions": "predictions",
    "model_performance": "monitoring",
    "ensemble_vN": "training",
    "shadow_comparison": "comparison",
    "production_pointer": "pointer",
}


def parts_table(log) -> list[dict]:
    """Per recorded week: seconds per part, and the run's set-up (the run's time outside its steps)."""
    weeks = []
    for row in log.itertuples():
        steps = json.loads(row.steps) if isinstance(row.steps, str) else {}
        week = {part: 0.0 for part in ["set-up", *PARTS.values(), "other steps"]}
        for step, seconds in steps.items():
            part = PARTS.get(step, "other steps")
            if step.endswith("quality_gate"):
                part = "gate"  # the blocking asset check on raw_bars
            elif step.endswith("not_degraded"):
                part = "monitoring"  # the degradation check on model_performance
            week[part] += seconds
        week["set-up"] = max(row.seconds - sum(steps.values()), 0.0)
        week["total"] = row.seconds
        weeks.append(week)
    return weeks


def print_parts(log) -> None:
    weeks = parts_table(log)
    if not weeks:
        return
    quarter = max(len(weeks) // 4, 1)
    total = sum(w["total"] for w in weeks)
    print(f"\n{'part':<16} {'first q s/wk':>12} {'last q s/wk':>12} {'total s':>9} {'share':>7}")
    for part in weeks[0]:
        if part == "total":
            continue
        first = sum(w[part] for w in weeks[:quarter]) / quarter
        last = sum(w[part] for w in weeks[-quarter:]) / quarter
        whole = sum(w[part] for w in weeks)
        if whole == 0 and part == "other steps":
            continue
        print(f"{part:<16} {first:>12.2f} {last:>12.2f} {whole:>9.1f} {whole / total:>7.1%}")
    print(
        f"{'week':<16} {sum(w['total'] for w in weeks[:quarter]) / quarter:>12.2f} "
        f"{sum(w['total'] for w in weeks[-quarter:]) / quarter:>12.2f} {total:>9.1f} {1:>7.1%}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "market-data.yaml"))
    parser.add_argument("--from", dest="start", default="2019-01-05")
    parser.add_argument("--to", dest="end", default="2019-12-31")
    parser.add_argument(
        "--out", help="folder to keep the report and stores in (default: a temporary one)"
    )
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="stage2-replay-"))
    out.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(Path(args.config).read_text())
    raw.setdefault("data_source", {})
    if raw["data_source"].get("path"):
        raw["data_source"]["path"] = str(
            (Path(args.config).parent / raw["data_source"]["path"]).resolve()
        )
    raw["storage"] = {"warehouse": str(out / "warehouse.duckdb"), "models": str(out / "models")}
    raw.setdefault("alerts", {})["jsonl_path"] = str(out / "alerts.jsonl")
    (out / "adaptation.yaml").write_text(yaml.safe_dump(raw))
    home = out / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

    from stage2_assets.config import load_settings
    from stage2_assets.replay.report import render_replay, replay_title, summary_lines
    from stage2_assets.replay.runner import replay_report, run_replay

    settings = load_settings(out / "adaptation.yaml")
    times: list[float] = []

    def progress(week, as_of, status, seconds):
        times.append(seconds)
        print(
            f"week {len(times):>2} {week} as of {as_of}: {status:<6} {seconds:6.1f} s", flush=True
        )

    started = time.perf_counter()
    log = run_replay(
        settings,
        dt.date.fromisoformat(args.start),
        dt.date.fromisoformat(args.end),
        on_week=progress,
    )
    total = time.perf_counter() - started
    report = replay_report(
        settings, log, dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    )
    (out / "replay.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "replay.html").write_text(render_replay(report, replay_title(report)))
    quarter = max(len(times) // 4, 1)
    print(
        f"weeks {len(times)}, total {total / 60:.1f} min, mean {sum(times) / max(len(times), 1):.1f} s/week"
    )
    print(
        f"first {quarter} weeks (after the first) mean {sum(times[1 : quarter + 1]) / quarter:.1f} s; "
        f"last {quarter} weeks mean {sum(times[-quarter:]) / quarter:.1f} s"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print_parts(log)
    print("\n".join(summary_lines(report)))
    print(f"report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
