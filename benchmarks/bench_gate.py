"""Gate benchmark: the promotion rule's error and power on markets with a common factor.

(a) The decision layer, through the same function the live loop calls (``stats.gate``):
  - null streams: two models of equal skill, outcomes with a daily market factor, models with
    their own day-level views; several factor and view shares, 50 and 150 symbols. False
    promotions per test against the per-test level, with exact binomial intervals, at the shipped
    level and at 0.05 (where a thousand streams can resolve the rate);
  - simulated years: 52 weekly candidates no better than production, their shadows overlapping on
    the same market days, each tested as the live loop tests it: P(any promotion in the year)
    against the yearly budget;
  - power: P(promotion within the maximum shadow) and the median days to it, by accuracy edge.
(b) The whole pipeline: ``--pipeline-years N`` seeded simulated years with no regime change through
  ``stage2 replay`` (a check, not a target: 10 years cannot confirm a 10% budget).

    python benchmarks/bench_gate.py [--streams 500] [--years 200] [--power-streams 300]
                                    [--pipeline-years 0] [--json-out gate.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stage2_assets.config import load_settings  # noqa: E402
from stage2_assets.stats.gate import PROMOTE, GateRule, evaluate_gate  # noqa: E402
from stage2_assets.stats.streams import (  # noqa: E402
    market_days,
    model_logits,
    paired_streams,
    signal_loading,
)


def interval(hits: int, trials: int) -> tuple[float, float]:
    ci = stats.binomtest(hits, trials).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def decisions(frame: pd.DataFrame, rule: GateRule) -> list:
    return [evaluate_gate(stream, rule) for _, stream in frame.groupby("comparison", sort=False)]


def null_table(rule: GateRule, streams: int, seed: int) -> list[dict]:
    rows = []
    loose = GateRule(**{**rule.__dict__, "alpha": 0.05})
    grid = [(m, v, n) for m in (0.2, 0.3) for v in (0.05, 0.12, 0.2) for n in (50, 150)]
    for i, (market, views, symbols) in enumerate(grid):
        frame = paired_streams(
            streams, rule.max_looks, symbols, market_share=market, view_share=views, seed=seed + i
        )
        for level_rule in (rule, loose):
            hits = sum(r.decision == PROMOTE for r in decisions(frame, level_rule))
            rows.append(
                {
                    "market_share": market,
                    "view_share": views,
                    "symbols": symbols,
                    "alpha": level_rule.alpha,
                    "streams": streams,
                    "promoted": hits,
                    "rate": hits / streams,
                    "ci": interval(hits, streams),
                }
            )
    return rows


def simulated_years(rule: GateRule, years: int, seed: int, symbols: int = 50) -> dict:
    """Years of weekly candidates, all of production's skill, tested on the same market days."""
    market, views = 0.3, 0.12
    kappa = signal_loading(0.06, market, views)
    weeks, days_per_week = 52, 5
    total_days = weeks * days_per_week + rule.max_looks
    dates = pd.bdate_range("2030-01-01", periods=total_days)
    symbols_ix = [f"S{i:03d}" for i in range(symbols)]
    any_promotion, promotions, tests = 0, 0, 0
    for year in range(years):
        rng = np.random.default_rng([seed, year])
        signal, returns = market_days(rng, (total_days, symbols), market, kappa)
        label = (returns > 0).astype(float)
        production = special.expit(model_logits(rng, (total_days, symbols), signal, 1.0, views))
        promoted_this_year = 0
        for week in range(weeks):
            start = week * days_per_week
            span = slice(start, start + rule.max_looks)
            candidate = special.expit(
                model_logits(rng, (rule.max_looks, symbols), signal[span], 1.0, views)
            )
            frame = pd.DataFrame(
                {
                    "date": np.repeat(dates[span], symbols),
                    "symbol": np.tile(symbols_ix, rule.max_looks),
                    "label": label[span].ravel(),
                    "fwd_return": 0.01 * returns[span].ravel(),
                    "prob_candidate": candidate.ravel(),
                    "prob_production": production[span].ravel(),
                }
            )
            tests += 1
            if evaluate_gate(frame, rule).decision == PROMOTE:
                promotions += 1
                promoted_this_year += 1
        any_promotion += promoted_this_year > 0
    return {
        "years": years,
        "tests": tests,
        "promotions": promotions,
        "per_test_rate": promotions / tests,
        "per_test_ci": interval(promotions, tests),
        "years_with_a_promotion": any_promotion,
        "per_year_rate": any_promotion / years,
        "per_year_ci": interval(any_promotion, years),
    }


def power_table(rule: GateRule, streams: int, seed: int) -> list[dict]:
    rows = []
    for i, edge in enumerate((0.03, 0.06, 0.09, 0.12, 0.14)):
        frame = paired_streams(
            streams,
            rule.max_looks,
            50,
            accuracy_edge=edge,
            market_share=0.3,
            view_share=0.12,
            seed=seed + 100 + i,
        )
        results = decisions(frame, rule)
        days = [r.days for r in results if r.decision == PROMOTE]
        hits = len(days)
        rows.append(
            {
                "accuracy_edge": edge,
                "streams": streams,
                "promoted": hits,
                "power": hits / streams,
                "ci": interval(hits, streams),
                "median_days": float(np.median(days)) if days else None,
                "rejected": sum(r.decision == "reject" for r in results),
                "mean_daily_gain": float(np.mean([r.effect for r in results])),
            }
        )
    return rows


def pipeline_years(years: int, out: Path, first: int = 0) -> dict:
    """Seeded simulated years with one regime through `stage2 replay` (small, fast training:
    20 symbols, a 6-month window, 2 members, 4 epochs; the shipped gate settings)."""
    import os

    import yaml

    promotions, weeks = 0, 0
    per_year = []
    for year in range(first, first + years):
        folder = out / f"year{year}"
        folder.mkdir(parents=True, exist_ok=True)
        raw = {
            "data_source": {
                "kind": "simulated",
                "simulated": {
                    "seed": 1000 + year,
                    "num_symbols": 20,
                    "start_date": "2021-01-04",
                    "regimes": [
                        {
                            "start": "2021-01-04",
                            "drift": 0.0003,
                            "volatility": 0.014,
                            "momentum": 0.1,
                        }
                    ],
                },
            },
            "storage": {
                "warehouse": str(folder / "warehouse.duckdb"),
                "models": str(folder / "models"),
            },
            "retraining": {
                "data_window": "6m",
                "num_models": 2,
                "max_epochs": 4,
                "batch_size": 512,
                "min_train_rows": 300,
            },
            # market-neutral, so the first model beats its baselines and production exists
            "label": {"kind": "excess_direction"},
            "alerts": {"jsonl_path": str(folder / "alerts.jsonl")},
        }
        (folder / "adaptation.yaml").write_text(yaml.safe_dump(raw))
        home = folder / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        from stage2_assets.replay.runner import run_replay
        from stage2_assets.resources.model_store import ModelStore

        settings = load_settings(folder / "adaptation.yaml")
        import datetime as dt

        log = run_replay(settings, dt.date(2022, 7, 4), dt.date(2023, 7, 1))
        events = ModelStore(root=str(settings.models_path)).events()
        moved = [
            e
            for e in events
            if e["event"] == "promoted" and not e["reason"].startswith("bootstrap")
        ]
        boot = next((e["as_of"] for e in events if e["event"] == "promoted"), None)
        compared = sum(e["event"] == "compared" for e in events)
        promotions += len(moved)
        weeks += len(log)
        per_year.append(
            {
                "seed": 1000 + year,
                "weeks": len(log),
                "bootstrapped_on": boot,
                "comparisons": compared,
                "promotions": len(moved),
            }
        )
        print(
            f"  pipeline year {year + 1} (seed {1000 + year}): production from {boot}, {compared} comparison "
            f"looks, {len(moved)} promotions",
            flush=True,
        )
    with_one = sum(y["promotions"] > 0 for y in per_year)
    return {
        "years": years,
        "weeks": weeks,
        "promotions": promotions,
        "years_with_a_promotion": with_one,
        "per_year_ci": interval(with_one, years) if years else None,
        "by_year": per_year,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "adaptation.yaml"))
    parser.add_argument("--streams", type=int, default=500, help="null streams per setting")
    parser.add_argument("--years", type=int, default=200, help="simulated years of candidates")
    parser.add_argument("--power-streams", type=int, default=300)
    parser.add_argument("--pipeline-years", type=int, default=0)
    parser.add_argument(
        "--pipeline-first-year",
        type=int,
        default=0,
        help="start at this year (seed 1000 + it), to split the years over processes",
    )
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    ab = load_settings(args.config).ab_testing
    rule = GateRule.from_settings(ab)
    print(
        f"rule: per-test level {rule.alpha:.5f} (yearly budget {ab.false_promotion_budget} / 52), "
        f"{rule.metric}, looks from day {rule.first_look} to day {rule.max_looks}, "
        f"spending alpha*t^{rule.spending_rho:g}, min_improvement {rule.min_improvement:g}"
    )
    report: dict = {"rule": rule.__dict__, "false_promotion_budget": ab.false_promotion_budget}
    started = time.perf_counter()

    nulls = null_table(rule, args.streams, args.seed) if args.streams else []
    report["null"] = nulls
    print("\n(a) null streams: equal skill, market factor, model day views")
    print("market  views  symbols  level    promoted/streams  rate     95% interval")
    for r in nulls:
        print(
            f"{r['market_share']:<7} {r['view_share']:<6} {r['symbols']:<8} {r['alpha']:<8.5f} "
            f"{r['promoted']:>5}/{r['streams']:<10} {r['rate']:<8.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]"
        )
    for level in sorted({r["alpha"] for r in nulls}):
        hits = sum(r["promoted"] for r in nulls if r["alpha"] == level)
        trials = sum(r["streams"] for r in nulls if r["alpha"] == level)
        low, high = interval(hits, trials)
        verdict = "within" if low <= level else "ABOVE"
        print(
            f"pooled at level {level:.5f}: {hits}/{trials} = {hits / trials:.5f} "
            f"[{low:.5f}, {high:.5f}], {verdict} the level"
        )
        report.setdefault("null_pooled", []).append(
            {"alpha": level, "promoted": hits, "streams": trials, "ci": [low, high]}
        )

    years = simulated_years(rule, args.years, args.seed) if args.years else None
    report["years"] = years
    if years:
        print(
            f"\nsimulated years of 52 weekly no-better candidates: {years['years_with_a_promotion']}/"
            f"{years['years']} years with a promotion = {years['per_year_rate']:.3f} "
            f"[{years['per_year_ci'][0]:.3f}, {years['per_year_ci'][1]:.3f}] against the budget "
            f"{ab.false_promotion_budget}; per test {years['promotions']}/{years['tests']} = "
            f"{years['per_test_rate']:.5f} [{years['per_test_ci'][0]:.5f}, {years['per_test_ci'][1]:.5f}]"
        )

    power = power_table(rule, args.power_streams, args.seed) if args.power_streams else []
    report["power"] = power
    print("\npower: 50 symbols, market 0.3, model views 0.12 of logit variance")
    print(
        "edge   P(promote within 40 days)  95% interval     median days  rejected  mean daily gain"
    )
    for r in power:
        print(
            f"{r['accuracy_edge']:<6} {r['power']:<26.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]   "
            f"{r['median_days'] if r['median_days'] is not None else '-':<12} {r['rejected']:<9} "
            f"{r['mean_daily_gain']:+.5f}"
        )
    if args.pipeline_years:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="stage2-gate-pipeline-"))
        print(f"\n(b) {args.pipeline_years} simulated years through stage2 replay in {out}")
        report["pipeline"] = pipeline_years(args.pipeline_years, out, args.pipeline_first_year)
        p = report["pipeline"]
        print(
            f"pipeline: {p['promotions']} promotions in {p['weeks']} weeks; "
            f"{p['years_with_a_promotion']}/{p['years']} years with one "
            f"[{p['per_year_ci'][0]:.3f}, {p['per_year_ci'][1]:.3f}]"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
