"""raw_bars and validated_bars: the store of daily bars, and the part of it that passed the gate."""

import json

import dagster as dg
import pandas as pd

from stage2_assets.errors import QualityGateError
from stage2_assets.market.intake import FULL_TAG, refresh_bars
from stage2_assets.market.validation import apply_passing, evaluate_quality, load_report
from stage2_assets.partitions import AS_OF_TAG, as_of_date, weekly_partitions
from stage2_assets.resources.market_data import MarketDataSource
from stage2_assets.resources.settings import Stage2Settings
from stage2_assets.resources.warehouse import Warehouse, one

GROUP = "market_data"


def table_summary(warehouse: Warehouse, table: str) -> dict:  # noqa: D103
    """Rows, symbols and date range of one of our tables (name from our own constants only)."""
    assert table in {"raw_bars", "validated_bars", "features"}
    with warehouse.connect(read_only=True) as conn:
        rows, symbols, first, last = one(
            conn, f"SELECT count(*), count(DISTINCT symbol), min(date), max(date) FROM {table}"
        )
    return {
        "rows": int(rows),
        "symbols": int(symbols),
        "first_date": first.isoformat() if first else None,
        "last_date": last.isoformat() if last else None,
    }


def md_table(frame: pd.DataFrame, limit: int = 30) -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_none_")
    shown = frame.head(limit)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)
    ]
    if len(frame) > limit:
        lines.append(f"\n… and {len(frame) - limit} more")
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(partitions_def=weekly_partitions, group_name=GROUP, kinds={"duckdb"})
def raw_bars(
    context: dg.AssetExecutionContext,
    market_data: MarketDataSource,
    warehouse: Warehouse,
    stage2_settings: Stage2Settings,
) -> dg.MaterializeResult:
    """Daily OHLCV bars per symbol as the source gave them, fetched incrementally.

    Holds only bars dated on or before the as-of date of the run that fetched them; every bar
    records its source and run, and a store never mixes sources. Each refresh asks for bars after
    the last stored one less a few days of overlap, writes only new or revised bars, and logs per
    symbol what it fetched in ``refresh_log``. A symbol that fails is logged and the rest go on.
    """
    settings = stage2_settings.get()
    as_of = as_of_date(context)
    intake = refresh_bars(
        warehouse,
        market_data,
        settings,
        as_of,
        context.run.run_id,
        context.run.tags.get(FULL_TAG),
        context.log.warning,
    )
    fetched, symbols, summary = intake.fetched, intake.symbols, intake.summary
    fetch_seconds = intake.fetch_seconds
    failures = pd.DataFrame(sorted(fetched.errors.items()), columns=["symbol", "error"])
    return dg.MaterializeResult(
        metadata={
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
            "source": dg.MetadataValue.text(market_data.kind),
            "symbols_requested": dg.MetadataValue.int(len(symbols)),
            "bars_fetched": dg.MetadataValue.int(summary["fetched"]),
            "bars_new": dg.MetadataValue.int(summary["new"]),
            "bars_revised": dg.MetadataValue.int(summary["revised"]),
            "symbols_failed": dg.MetadataValue.int(len(fetched.errors)),
            "failures": md_table(failures),
            "missing_symbols": dg.MetadataValue.json(summary["missing_symbols"]),
            "readjusted_symbols": dg.MetadataValue.json(summary["readjustment_factors"]),
            "refused_files": dg.MetadataValue.json(summary["refused_files"]),
            "fetch_seconds": dg.MetadataValue.float(round(fetch_seconds, 3)),
            "table": dg.MetadataValue.json(table_summary(warehouse, "raw_bars")),
        }
    )


@dg.asset_check(
    asset=raw_bars,
    blocking=True,
    description=(
        "Great Expectations suite over the bars this refresh changed: quarantines failing symbols "
        "and blocks everything downstream when more than data_refresh.quality.max_failed_symbol_share fail."
    ),
)
def raw_bars_quality_gate(
    context: dg.AssetCheckExecutionContext, warehouse: Warehouse, stage2_settings: Stage2Settings
) -> dg.AssetCheckResult:
    rules = stage2_settings.get().data_refresh.quality
    with warehouse.connect() as conn:
        report, _ = evaluate_quality(conn, context.run.run_id, rules)
        passed = report.failed_share <= rules.max_failed_symbol_share
        # the gate's outcome beside the refresh's notes: the dashboard marks blocked refreshes
        conn.execute(
            "INSERT INTO refresh_notes VALUES (?, ?, 'gate', ?, ?, now())",
            [
                context.run.run_id,
                context.run.tags.get(AS_OF_TAG),
                "passed" if passed else "blocked",
                json.dumps(
                    {
                        "failed_share": round(report.failed_share, 4),
                        "allowed": rules.max_failed_symbol_share,
                        "failing": sorted(report.failing),
                    }
                ),
            ],
        )
    quarantined = pd.DataFrame(
        [(s, "; ".join(r)) for s, r in sorted(report.errors.items())], columns=["symbol", "reasons"]
    )
    flagged = pd.DataFrame(
        [(s, "; ".join(r)) for s, r in sorted(report.warnings.items())],
        columns=["symbol", "warnings"],
    )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            report.blocked_line(rules.max_failed_symbol_share)
            if not passed
            else f"{len(report.failing)} of {report.universe} symbols quarantined "
            f"({report.failed_share:.1%}; the gate allows {rules.max_failed_symbol_share:.0%}): "
            f"{len(report.errors)} failed of {len(report.rows)} judged, {len(report.held)} "
            "unchanged since their quarantine"
        ),
        metadata={
            "symbols_checked": dg.MetadataValue.int(len(report.rows)),
            "bars_checked": dg.MetadataValue.int(sum(report.rows.values())),
            "symbols_failed": dg.MetadataValue.int(len(report.errors)),
            "symbols_quarantined": dg.MetadataValue.int(len(report.failing)),
            "symbols_in_universe": dg.MetadataValue.int(report.universe),
            "still_quarantined_unchanged": dg.MetadataValue.json(sorted(report.held)),
            "failed_share": dg.MetadataValue.float(round(report.failed_share, 4)),
            "expectations": dg.MetadataValue.int(report.expectations),
            "quarantined": md_table(quarantined),
            "flagged": md_table(flagged),
        },
    )


@dg.asset(partitions_def=weekly_partitions, group_name=GROUP, kinds={"duckdb"}, deps=[raw_bars])
def validated_bars(
    context: dg.AssetExecutionContext, warehouse: Warehouse, stage2_settings: Stage2Settings
) -> dg.MaterializeResult:
    """Raw bars that passed the quality suite: one bar per (symbol, date), no quarantined symbol's
    pending bars. Written only after the gate passed, so a blocked refresh leaves it untouched.
    """
    rules = stage2_settings.get().data_refresh.quality
    with warehouse.connect() as conn:
        report = load_report(conn, context.run.run_id)
        if report is None:  # materialized without its gate: judge here, by the same rules
            report, _ = evaluate_quality(conn, context.run.run_id, rules)
        if report.failed_share > rules.max_failed_symbol_share:
            raise QualityGateError(
                f"{report.blocked_line(rules.max_failed_symbol_share)}; validated_bars left untouched"
            )
        written = apply_passing(conn, report, context.run.run_id)
    return dg.MaterializeResult(
        metadata={
            "as_of": dg.MetadataValue.text(as_of_date(context).isoformat()),
            "bars_written": dg.MetadataValue.int(written.bars),
            "symbols_written": dg.MetadataValue.int(written.symbols),
            "symbols_quarantined": dg.MetadataValue.int(len(report.errors)),
            "quarantined": dg.MetadataValue.json(sorted(report.errors)),
            "table": dg.MetadataValue.json(table_summary(warehouse, "validated_bars")),
        }
    )
