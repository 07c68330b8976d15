"""The data-quality suite over daily bars, run by Great Expectations 1.x in an ephemeral context
built once per process.

Errors quarantine a symbol: missing fields, non-positive prices, negative volume, a high below
the open or close, a low above them, a duplicate (symbol, date), a bar after the as-of date.
Warnings are flagged and let through: a one-day move beyond the configured bound (a split shows
as one) and a gap of more NYSE sessions than allowed.

Cross-row rules (moves, gaps, copies of a day) are computed as columns first, so Great
Expectations judges every rule and every failure is traced to the rows and symbols that caused it.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from stage2_assets.faults import fault_point
from stage2_assets.market.calendar import sessions_between
from stage2_assets.resources.warehouse import symbol_ranges

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
    expectations: int = 0  # rules judged, each by Great Expectations
    # symbols the run is about (every symbol the store holds); the failed share is over them
    universe: int = 0
    # quarantined symbols whose raw bars did not change since their verdict: not judged again
    held: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def merged(cls, parts: list[QualityReport]) -> QualityReport:
        """One report of the verdicts of disjoint groups of symbols."""
        report = cls()
        for part in parts:
            report.errors.update(part.errors)
            report.warnings.update(part.warnings)
            report.rows.update(part.rows)
            report.date_range.update(part.date_range)
            report.expectations = max(report.expectations, part.expectations)
        return report

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
    # by symbol, date, context first; stable (a day's copies keep their order); in numpy, as
    # pandas' multi-key sort and group-wise shift cost an incremental run more than its rules
    codes = pd.factorize(rows["symbol"], sort=True)[0]
    order = np.lexsort((~rows["_context"].to_numpy(dtype=bool), rows["date"].to_numpy(), codes))
    rows = rows.take(order).reset_index(drop=True)
    codes = codes[order]
    follows = np.r_[False, codes[1:] == codes[:-1]]  # the row before is of the same symbol
    close = rows["close"].to_numpy(dtype="float64")
    previous = np.where(follows, np.r_[np.nan, close[:-1]], np.nan)
    dates = rows["date"].to_numpy()
    previous_date = np.where(follows, np.r_[dates[:1], dates[:-1]], dates)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = close / previous
        move = np.abs(ratio - 1.0)
        scale = np.maximum(ratio, 1 / ratio)
    rows["abs_move"] = np.where(previous > 0, move, np.nan)
    rows["price_ratio"] = np.where((previous > 0) & (close > 0), scale, np.nan)
    gaps = sessions_between(pd.Series(previous_date), rows["date"]).to_numpy(dtype="float64")
    rows["missing_sessions"] = np.where(follows, gaps, np.nan)
    rows["days_after_as_of"] = (rows["date"] - pd.Timestamp(as_of)).dt.days
    # copies of a (symbol, date), adjacent in this order: a context row never shares a day with a
    # pending one (it is the validated bar before a stretch of pending days)
    day = np.cumsum(~(follows & (dates == previous_date))) - 1
    rows["day_copies"] = np.bincount(day)[day].astype("float64")
    return rows


# Great Expectations' cost is mostly per expectation and per frame validated, whatever the row
# count (about 5 ms and 10 ms on this machine), so an incremental refresh of a few hundred bars
# feels every one of them. The rules are therefore judged on one stacked frame, a row per bar and
# rule (its slot): two expectations judge the nineteen rules, and a failing stacked row names its
# rule through its slot. Each expectation's description states its rules and bounds.
_PRICES = ("open", "high", "low", "close")
_VALUES = (*_PRICES, "volume")
# the smallest positive double: a price is above zero exactly when it is at least this
_ABOVE_ZERO = float(np.nextafter(0.0, 1.0))


@dataclass(frozen=True)
class _Order:
    """One rule ``upper >= lower`` (``or_equal``) on a bar; each side a column of the prepared
    rows or a constant (a configured bound)."""

    upper: str | float
    lower: str | float
    rule: Rule

    def statement(self) -> str:
        lower = "the smallest positive double" if self.lower == _ABOVE_ZERO else self.lower
        return f"{self.upper} >= {lower}" + (
            f" ({self.rule.severity})" if self.rule.severity != "error" else ""
        )


def _orders(
    max_abs_move: float, max_missing_sessions: int, max_price_ratio: float
) -> tuple[_Order, ...]:
    """Every rule that compares two values of a bar, or a value with its bound. A missing value is
    not judged by them (the presence rules report it), as Great Expectations' bound expectations
    pass over missing values. Each of the five values is the upper side of some rule: the
    presence rules judge that side."""
    error, warning = "error", "warning"
    return (
        *(
            _Order(c, _ABOVE_ZERO, Rule(f"{c}_positive", error, f"{c} is zero or negative"))
            for c in _PRICES
        ),
        _Order("high", "open", Rule("high_above_open", error, "high is below open")),
        _Order("high", "close", Rule("high_above_close", error, "high is below close")),
        _Order("open", "low", Rule("low_below_open", error, "low is above open")),
        _Order("close", "low", Rule("low_below_close", error, "low is above close")),
        _Order("volume", 0.0, Rule("volume_not_negative", error, "volume is negative")),
        _Order(1.0, "day_copies", Rule("unique_days", error, "date appears more than once")),
        _Order(
            0.0, "days_after_as_of", Rule("no_future_dates", error, "date is after the as-of date")
        ),
        _Order(
            float(max_price_ratio),
            "price_ratio",
            Rule(
                "price_scale_consistent",
                error,
                f"close changed more than {max_price_ratio:g}x in a day (a unit error)",
            ),
        ),
        _Order(
            float(max_abs_move),
            "abs_move",
            Rule(
                "daily_move_bounded",
                warning,
                f"one-day move above {max_abs_move:.0%} (split or bad print)",
            ),
        ),
        _Order(
            float(max_missing_sessions),
            "missing_sessions",
            Rule(
                "no_long_gaps",
                warning,
                f"more than {max_missing_sessions} NYSE sessions missing before it",
            ),
        ),
    )


def stack_orders(rows: pd.DataFrame, orders: tuple[_Order, ...]) -> pd.DataFrame:
    """Row ``len(orders) * i + slot`` holds the two sides of ``orders[slot]`` for bar ``i``."""

    def side(value: str | float) -> np.ndarray:
        if isinstance(value, str):
            return rows[value].to_numpy(dtype="float64")
        return np.full(len(rows), value, dtype="float64")

    return pd.DataFrame(
        {
            "upper": np.column_stack([side(o.upper) for o in orders]).ravel(),
            "lower": np.column_stack([side(o.lower) for o in orders]).ravel(),
        }
    )


@dataclass(frozen=True)
class _Check:
    """One expectation and the rule of each slot of its stacked frame (None: a slot it never
    fails, such as the volume's for the price bound)."""

    expectation: object
    rules: tuple[Rule | None, ...]


@lru_cache(maxsize=1)
def _expectation_classes() -> tuple[type, type]:
    """Great Expectations' two expectations the suite uses, each building its configuration once.

    Great Expectations rebuilds an expectation's configuration from its fields each time it reads
    it, about 290 times in one validation of these two (a third of their cost on a weekly gate).
    These subclasses (custom expectations, registered by their own names) build it when first
    read and again only after a field is set anew, as the suite does once with ``meta`` and
    ``id``; every field is set by assignment, never changed in place."""
    from typing import Any

    import great_expectations.expectations as gxe
    from great_expectations.compatibility.pydantic import PrivateAttr
    from great_expectations.expectations.expectation import Expectation

    def built_once(self):
        if self._configured is None:
            Expectation.__setattr__(self, "_configured", Expectation.configuration.fget(self))
        return self._configured

    def setattr_(self, name: str, value) -> None:
        Expectation.__setattr__(self, name, value)
        if name != "_configured":
            Expectation.__setattr__(self, "_configured", None)

    class ExpectStackedSidesInOrder(gxe.ExpectColumnPairValuesAToBeGreaterThanB):
        """Slot by slot, the upper side is at least the lower side (a missing side: not judged)."""

        _configured: Any = PrivateAttr(default=None)
        configuration = property(built_once)
        __setattr__ = setattr_

    class ExpectStackedSidesPresent(gxe.ExpectColumnValuesToNotBeNull):
        """Slot by slot, the upper side is present."""

        _configured: Any = PrivateAttr(default=None)
        configuration = property(built_once)
        __setattr__ = setattr_

    return ExpectStackedSidesInOrder, ExpectStackedSidesPresent


def _checks(orders: tuple[_Order, ...]) -> dict[str, list[_Check]]:
    """The suite: the expectations over the stacked orders, each slot's two sides."""
    in_order, present_sides = _expectation_classes()

    present = {c: Rule(f"{c}_present", "error", f"{c} is missing") for c in _VALUES}
    ordered = [
        _Check(
            in_order(
                column_A="upper",
                column_B="lower",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
                description="slot by slot: " + "; ".join(o.statement() for o in orders),
            ),
            tuple(o.rule for o in orders),
        ),
        _Check(
            present_sides(
                column="upper",
                description="present, the upper side of each slot that holds " + ", ".join(_VALUES),
            ),
            tuple(present.get(o.upper) if isinstance(o.upper, str) else None for o in orders),
        ),
    ]
    return {"orders": ordered}


# The order in which a symbol's failures are listed: each column's rules, then the pairs, then the
# rules over whole bars (the order Great Expectations returned them when each rule had its own).
RULE_ORDER = (
    *(f"{c}_{kind}" for c in _PRICES for kind in ("present", "positive")),
    "volume_present",
    "volume_not_negative",
    "high_above_open",
    "high_above_close",
    "low_below_open",
    "low_below_close",
    "unique_days",
    "no_future_dates",
    "price_scale_consistent",
    "daily_move_bounded",
    "no_long_gaps",
)


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


# The failing rows' indices, and none of the values and counts COMPLETE adds (a fifth of its cost).
_ROWS_ONLY = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 0,
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}


@dataclass
class _Judge:
    """The suite of one set of rule parameters, in an ephemeral GX context built once per process:
    building the context and the suites costs about as much as validating a week of bars."""

    batches: dict[str, object]  # frame name -> batch definition over a whole dataframe
    suites: dict[str, object]  # frame name -> expectation suite
    checks: dict[str, list[_Check]]
    orders: tuple[_Order, ...]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def frames(self, rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The frames the suite judges, from the prepared rows."""
        return {"orders": stack_orders(rows, self.orders)}

    def failures(self, frames: dict[str, pd.DataFrame]) -> list[tuple[int, Rule]]:
        """(bar row, the rule it fails) for every failure.

        Each frame is judged with its failing rows in one pass: it holds the warnings (a move
        beyond the bound, a gap), which some symbol of a universe trips on most runs, a first load
        always."""
        from great_expectations.validator.v1_validator import Validator

        found = []
        with self.lock:
            for name, frame in frames.items():
                validator = Validator(
                    batch_definition=self.batches[name],
                    batch_parameters={"dataframe": frame},
                    result_format=_ROWS_ONLY,
                )
                for outcome in validator.validate_expectation_suite(self.suites[name]).results:
                    rules = self.checks[name][outcome.expectation_config.meta["check"]].rules
                    for i in outcome.result.get("unexpected_index_list") or []:
                        rule = rules[int(i) % len(rules)]  # a row per bar and slot
                        if rule is not None:
                            found.append((int(i) // len(rules), rule))
        return found


@lru_cache(maxsize=8)
def _judge(max_abs_move: float, max_missing_sessions: int, max_price_ratio: float) -> _Judge:
    import great_expectations as gx

    source = _context().data_sources.add_pandas("bars")
    orders = _orders(max_abs_move, max_missing_sessions, max_price_ratio)
    checks = _checks(orders)
    batches, suites = {}, {}
    for name, frame_checks in checks.items():
        batches[name] = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suites[name] = gx.ExpectationSuite(name=f"daily_{name}")
        for position, check in enumerate(frame_checks):
            check.expectation.meta = {"check": position}
            suites[name].add_expectation(check.expectation)
    return _Judge(batches=batches, suites=suites, checks=checks, orders=orders)


def validate_bars(
    pending: pd.DataFrame,
    context_rows: pd.DataFrame,
    as_of: dt.date,
    max_abs_move: float,
    max_missing_sessions: int,
    max_price_ratio: float = 25.0,
) -> QualityReport:
    """Run the suite over the pending bars and return per-symbol errors and warnings."""
    import great_expectations  # noqa: F401  (up front: a first call with nothing pending warms it)

    report = QualityReport()
    if pending.empty:
        return report
    rows = prepare(pending, context_rows, as_of)
    judged = ~rows["_context"].to_numpy(dtype=bool)
    symbols, dates = rows["symbol"].to_numpy()[judged], rows["date"].to_numpy()[judged]
    for symbol, count, first, last in _spans(symbols, dates):
        report.rows[symbol] = count
        report.date_range[symbol] = (first, last)

    judge = _judge(float(max_abs_move), int(max_missing_sessions), float(max_price_ratio))
    report.expectations = len(
        {rule.name for checks in judge.checks.values() for c in checks for rule in c.rules if rule}
    )
    fault_point("gx_validation")
    listed = {name: position for position, name in enumerate(RULE_ORDER)}
    # Every rule judges a symbol's rows by themselves, so a large load (a first refresh of thousands
    # of symbols) is judged in groups of whole symbols, bounding the frames Great Expectations
    # holds; a weekly refresh is one group.
    for chunk in _symbol_chunks(rows, JUDGE_CHUNK_ROWS):
        by_rule: dict[str, tuple[Rule, list[int]]] = {}
        for row, rule in judge.failures(judge.frames(chunk)):
            by_rule.setdefault(rule.name, (rule, []))[1].append(row)
        context, chunk_symbols = chunk["_context"].to_numpy(dtype=bool), chunk["symbol"].to_numpy()
        chunk_dates = chunk["date"].to_numpy()
        for name in sorted(by_rule, key=lambda n: listed.get(n, len(listed))):
            rule, index = by_rule[name]
            bad = np.asarray(index, dtype=np.int64)
            bad = np.unique(bad[~context[bad]])  # rows, each once, in order (symbol, date)
            target = report.errors if rule.severity == "error" else report.warnings
            for symbol, count, first, _ in _spans(chunk_symbols[bad], chunk_dates[bad]):
                target.setdefault(symbol, []).append(
                    f"{rule.describe}: {count} row(s), first {first.isoformat()} [{rule.name}]"
                )
    return report


def _spans(symbols: np.ndarray, dates: np.ndarray):
    """(symbol, rows, first day, last day) per symbol of rows sorted by symbol and date, in
    symbol order."""
    if not len(symbols):
        return
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    ends = np.r_[starts[1:], len(symbols)]
    days = dates.astype("datetime64[D]")
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield str(symbols[start]), end - start, days[start].item(), days[end - 1].item()


JUDGE_CHUNK_ROWS = 500_000  # bars Great Expectations judges at once (28 stacked values a bar)


def _symbol_chunks(rows: pd.DataFrame, limit: int):
    """``rows`` (sorted by symbol) in consecutive groups of whole symbols of about ``limit`` rows
    (the ranges the gate reads pending bars in), each indexed from 0."""
    if len(rows) <= limit:
        yield rows
        return
    sizes = rows.groupby("symbol", sort=False).size()
    ends = dict(zip(sizes.index, sizes.cumsum(), strict=True))
    start = 0
    for _, last in symbol_ranges(list(sizes.items()), limit):
        yield rows.iloc[start : ends[last]].reset_index(drop=True)
        start = ends[last]
