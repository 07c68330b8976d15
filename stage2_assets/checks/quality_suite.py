"""The data-quality suite over daily bars, run by Great Expectations 1.x in an ephemeral context.

Errors quarantine a symbol: missing fields, non-positive prices, negative volume, a high below
the open or close, a low above them, a duplicate (symbol, date), a bar after the as-of date.
Warnings are flagged and let through: a one-day move beyond the configured bound (a split shows
as one) and a gap of more NYSE sessions than allowed.

Cross-row rules (moves, gaps) are computed as columns first, so Great Expectations judges every
rule and every failure is traced to the rows and symbols that caused it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stage2_assets.faults import fault_point
from stage2_assets.market.calendar import sessions_between

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str  # "error" quarantines the symbol, "warning" only flags it
    describe: str


@dataclass
class QualityReport:
    """Per-symbol verdicts of one validation."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    date_range: dict[str, tuple[dt.date, dt.date]] = field(default_factory=dict)
    expectations: int = 0
    # symbols the run is about (every symbol the store holds); the failed share is over them
    universe: int = 0
    # quarantined symbols whose raw bars did not change since their verdict: not judged again
    held: dict[str, list[str]] = field(default_factory=dict)

    @property
    def symbols(self) -> list[str]:
        return sorted(self.rows)

    @property
    def failed(self) -> list[str]:
        return sorted(self.errors)

    @property
    def failing(self) -> dict[str, list[str]]:
        """Every symbol quarantined after this run: failed now, or held from before (unchanged)."""
        return {**self.held, **self.errors}

    @property
    def failed_share(self) -> float:
        """Failing symbols (held ones included) over the universe (over the judged symbols when no
        universe is known): a rerun or a quiet week is not blocked by one bad symbol, and a
        blocked gate stays blocked when it is run again on the same data."""
        base = max(self.universe, len(self.rows))
        return len(self.failing) / base if base else 0.0

    def blocked_line(self, allowed: float) -> str:
        """The one line a blocked gate says first: how many, of how many, which and why."""
        failing = sorted(self.failing.items())
        named = "; ".join(
            f"{s}: {', '.join(r)}{' (unchanged since its quarantine)' if s in self.held and s not in self.errors else ''}"
            for s, r in failing[:10]
        )
        more = f" (and {len(failing) - 10} more)" if len(failing) > 10 else ""
        return (
            f"{len(failing)} of {max(self.universe, len(self.rows))} symbols failed the quality "
            f"suite ({self.failed_share:.1%}; the gate allows {allowed:.0%}): {named}{more}"
        )


def prepare(pending: pd.DataFrame, context: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """The rows to judge, with the derived columns the cross-row rules need.

    ``context`` holds, per symbol, the last bar already validated before the pending rows: it
    anchors the move and gap of the first pending bar and is never judged itself.
    """
    ctx = context.assign(_context=True)
    rows = pd.concat([ctx, pending.assign(_context=False)], ignore_index=True)
    rows = rows.sort_values(
        ["symbol", "date", "_context"], ascending=[True, True, False], kind="stable"
    )
    rows = rows.reset_index(drop=True)
    previous = rows.groupby("symbol", sort=False)[["close", "date"]].shift(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        move = (rows["close"] / previous["close"] - 1.0).abs()
    rows["abs_move"] = move.where(previous["close"] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = rows["close"] / previous["close"]
    rows["price_ratio"] = np.maximum(ratio, 1 / ratio).where(
        (previous["close"] > 0) & (rows["close"] > 0)
    )
    gaps = sessions_between(previous["date"].fillna(rows["date"]), rows["date"])
    rows["missing_sessions"] = gaps.where(previous["date"].notna())
    rows["days_after_as_of"] = (rows["date"] - pd.Timestamp(as_of)).dt.days
    return rows


def _suite(max_abs_move: float, max_missing_sessions: int, max_price_ratio: float):
    import great_expectations.expectations as gxe

    error = "error"
    warning = "warning"
    rules: list[tuple[object, Rule]] = []
    for column in ("open", "high", "low", "close", "volume"):
        rules.append(
            (
                gxe.ExpectColumnValuesToNotBeNull(column=column),
                Rule(f"{column}_present", error, f"{column} is missing"),
            )
        )
    for column in ("open", "high", "low", "close"):
        rules.append(
            (
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, strict_min=True),
                Rule(f"{column}_positive", error, f"{column} is zero or negative"),
            )
        )
    rules += [
        (
            gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
            Rule("volume_not_negative", error, "volume is negative"),
        ),
        (
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="high", column_B="open", or_equal=True
            ),
            Rule("high_above_open", error, "high is below open"),
        ),
        (
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="high", column_B="close", or_equal=True
            ),
            Rule("high_above_close", error, "high is below close"),
        ),
        (
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="open", column_B="low", or_equal=True
            ),
            Rule("low_below_open", error, "low is above open"),
        ),
        (
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="close", column_B="low", or_equal=True
            ),
            Rule("low_below_close", error, "low is above close"),
        ),
        (
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "date"]),
            Rule("unique_days", error, "date appears more than once"),
        ),
        (
            gxe.ExpectColumnValuesToBeBetween(column="days_after_as_of", max_value=0),
            Rule("no_future_dates", error, "date is after the as-of date"),
        ),
        (
            gxe.ExpectColumnValuesToBeBetween(column="price_ratio", max_value=max_price_ratio),
            Rule(
                "price_scale_consistent",
                error,
                f"close changed more than {max_price_ratio:g}x in a day (a unit error)",
            ),
        ),
        (
            gxe.ExpectColumnValuesToBeBetween(column="abs_move", max_value=max_abs_move),
            Rule(
                "daily_move_bounded",
                warning,
                f"one-day move above {max_abs_move:.0%} (split or bad print)",
            ),
        ),
        (
            gxe.ExpectColumnValuesToBeBetween(
                column="missing_sessions", max_value=max_missing_sessions
            ),
            Rule(
                "no_long_gaps",
                warning,
                f"more than {max_missing_sessions} NYSE sessions missing before it",
            ),
        ),
    ]
    return rules


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def validate_bars(
    pending: pd.DataFrame,
    context_rows: pd.DataFrame,
    as_of: dt.date,
    max_abs_move: float,
    max_missing_sessions: int,
    max_price_ratio: float = 25.0,
) -> QualityReport:
    """Run the suite over the pending bars and return per-symbol errors and warnings."""
    import great_expectations as gx

    report = QualityReport()
    if pending.empty:
        return report
    rows = prepare(pending, context_rows, as_of)
    judged = ~rows["_context"]
    for symbol, group in rows[judged].groupby("symbol"):
        report.rows[str(symbol)] = len(group)
        report.date_range[str(symbol)] = (group["date"].min().date(), group["date"].max().date())

    gx_context = _context()
    batch = (
        gx_context.data_sources.add_pandas("bars")
        .add_dataframe_asset("pending")
        .add_batch_definition_whole_dataframe("all")
    )
    rules = _suite(max_abs_move, max_missing_sessions, max_price_ratio)
    suite = gx.ExpectationSuite(name="daily_bars")
    by_name = {}
    for expectation, rule in rules:
        expectation.meta = {"rule": rule.name}
        by_name[rule.name] = rule
        suite.add_expectation(expectation)
    suite = gx_context.suites.add(suite)
    definition = gx_context.validation_definitions.add(
        gx.ValidationDefinition(name="daily_bars", data=batch, suite=suite)
    )
    fault_point("gx_validation")
    result = definition.run(batch_parameters={"dataframe": rows}, result_format="COMPLETE")
    report.expectations = len(result.results)
    # Results do not come back in suite order: each names its rule through ``meta``.
    for outcome in result.results:
        if outcome.success:
            continue
        rule = by_name[outcome.expectation_config.meta["rule"]]
        index = outcome.result.get("unexpected_index_list") or []
        bad = rows.loc[[i for i in index if isinstance(i, (int, np.integer))]]
        bad = bad[~bad["_context"]]
        target = report.errors if rule.severity == "error" else report.warnings
        for symbol, group in bad.groupby("symbol"):
            first = group["date"].min().date().isoformat()
            target.setdefault(str(symbol), []).append(
                f"{rule.describe}: {len(group)} row(s), first {first} [{rule.name}]"
            )
    return report
