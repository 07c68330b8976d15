"""One refresh of the raw store, end to end: list, plan, fetch, screen, re-adjust, store.

The ``raw_bars`` asset and ``benchmarks/bench_data.py`` both run this, so the benchmark measures
what a refresh really does. A source that reads local files is planned, fetched and stored under
one warehouse connection; any other gets two short ones, one to plan before the fetch and one to
compare and store after it, so a slow provider never holds the file.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from stage2_assets.errors import DataSourceError
from stage2_assets.market.refresh import (
    ensure_same_source,
    failures_by_reason,
    last_stored_dates,
    named,
    plan_starts,
    stage_delivery,
    store_fetched,
    summarize_log,
)
from stage2_assets.market.screening import (
    MISSING,
    READJUSTED,
    REFUSED_FILE,
    Notes,
    missing_symbols,
    readjustment_factors,
    screen_fetched,
)
from stage2_assets.names import validate_symbol
from stage2_assets.resources.market_data import FetchResult, Listing, MarketDataSource
from stage2_assets.resources.warehouse import Warehouse

FULL_TAG = "stage2/full_refresh"  # "*" (every symbol) or a comma-separated list: whole histories


def full_refresh_symbols(tag: str | None, symbols: list[str]) -> list[str]:
    """The symbols a run re-fetches whole (`stage2 refresh --full`); names are checked."""
    if not tag:
        return []
    if tag == "*":
        return list(symbols)
    named = [validate_symbol(s) for s in tag.split(",") if s]
    unknown = sorted(set(named) - set(symbols))
    if unknown:
        raise DataSourceError(
            f"--full names {', '.join(unknown)}, not in this config's universe ({len(symbols)} symbols)"
        )
    return named


def configured_symbols(
    settings, source: MarketDataSource, listing: Listing | None = None
) -> list[str]:
    symbols = settings.data_source.symbols
    if symbols == "auto":
        return (listing or source.listing()).symbols
    return [validate_symbol(s) for s in symbols]


@dataclass
class Intake:
    """What one refresh did: the symbols asked for, what came back, the log and its summary."""

    symbols: list[str]
    fetched: FetchResult
    log: pd.DataFrame
    summary: dict
    fetch_seconds: float


def refresh_bars(
    warehouse: Warehouse,
    source: MarketDataSource,
    settings,
    as_of: dt.date,
    run_id: str,
    full_tag: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> Intake:
    """Fetch what is new (or everything, for ``full_tag``), screen it, fetch back-adjusted
    histories whole, and store it all with the log and notes in one transaction."""
    run = _Refresh(warehouse, source, settings, as_of, run_id, warn)
    run.read_listing(full_tag)
    if source.reads_local_files:  # reading local files is quick: one connection throughout
        with warehouse.connect() as conn:
            run.plan(conn)
            run.fetch()
            return run.store(conn)
    with warehouse.connect() as conn:
        run.plan(conn)
    run.fetch()  # a provider that hangs never holds the file meanwhile
    with warehouse.connect() as conn:
        return run.store(conn)


@dataclass
class _Refresh:
    """One refresh's steps and what each leaves for the next."""

    warehouse: Warehouse
    source: MarketDataSource
    settings: object
    as_of: dt.date
    run_id: str
    warn: Callable[[str], None]
    notes: Notes = field(default_factory=Notes)
    listing: Listing | None = None
    symbols: list[str] = field(default_factory=list)
    full: list[str] = field(default_factory=list)
    starts: dict[str, dt.date] = field(default_factory=dict)
    fetched: FetchResult | None = None
    started: float = 0.0

    def read_listing(self, full_tag: str | None) -> None:
        """What the source serves, the symbols asked for, and those asked for whole."""
        self.listing = self.source.listing()
        self.symbols = configured_symbols(self.settings, self.source, self.listing)
        self.full = full_refresh_symbols(full_tag, self.symbols)
        for refused in self.listing.refused:
            self.notes.add(REFUSED_FILE, refused["file"], reason=refused["reason"])

    def plan(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Refuse a store of another source, report vanished symbols, and plan each symbol's
        first date."""
        source, refresh, as_of, listing = (
            self.source,
            self.settings.data_refresh,
            self.as_of,
            self.listing,
        )
        ensure_same_source(conn, source.kind, self.warehouse.database)
        last = last_stored_dates(conn, as_of)
        # a symbol the store holds (or the config names) that the source no longer lists
        auto = self.settings.data_source.symbols == "auto"
        expected = sorted(last) if auto else self.symbols
        missing = (
            missing_symbols(conn, expected, listing.symbols, as_of, last)
            if source.lists_holdings
            else {}
        )
        self.starts = plan_starts(
            conn, self.symbols, refresh.history_start, refresh.overlap_days, as_of, self.full, last
        )
        if expected and not self.symbols:
            raise DataSourceError(
                f"source '{source.kind}' lists none of the {len(expected)} expected symbols "
                f"(first: {expected[0]}): is data_source.path right? Nothing was stored"
            )
        for symbol, seen in missing.items():
            self.notes.add(MISSING, symbol, **seen)
            self.warn(
                f"{symbol}: expected but no longer listed by source '{source.kind}' "
                f"(missing since {seen['since']}, last bar {seen['last_bar']})"
            )

    def fetch(self) -> None:
        self.started = time.perf_counter()
        self.fetched = self.source.fetch(self.starts, self.as_of)
        screen_fetched(self.fetched, self.settings.data_refresh.max_rows_per_symbol, self.notes)

    def store(self, conn: duckdb.DuckDBPyConnection) -> Intake:
        """Fetch back-adjusted histories again whole, then store everything in one transaction."""
        source, refresh, fetched, starts = (
            self.source,
            self.settings.data_refresh,
            self.fetched,
            self.starts,
        )
        # the delivery, read into the session once for every comparison with the stored bars
        staged = stage_delivery(conn, fetched.delivered())
        factors = readjustment_factors(conn, refresh.readjust_tolerance) if staged else {}
        # a back-adjusted history is fetched whole in this run, so no seam reaches validated_bars
        again = {s: refresh.history_start for s in factors if starts[s] > refresh.history_start}
        if again:
            whole = source.fetch(again, self.as_of)
            screen_fetched(whole, refresh.max_rows_per_symbol, self.notes)
            for symbol in again:
                fetched.bars.pop(symbol, None)
                fetched.errors.pop(symbol, None)
            fetched.bars.update(whole.bars)
            fetched.errors.update(whole.errors)
            starts.update(again)
            stage_delivery(conn, fetched.delivered())
        for symbol, factor in sorted(factors.items()):
            self.notes.add(READJUSTED, symbol, factor=round(factor, 6), refetched=symbol in again)
            self.warn(
                f"{symbol}: the source re-adjusted its history (stored / delivered = "
                f"{factor:.6f}): its whole history was fetched again and goes to the quality gate"
            )
        fetch_seconds = time.perf_counter() - self.started
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        notes = self.notes.frame(self.run_id, self.as_of, now)
        log = store_fetched(
            conn,
            fetched,
            starts,
            source.kind,
            self.run_id,
            self.as_of,
            set(self.full) | set(factors),
            notes,
            staged=True,
        )
        summary = summarize_log(log, notes)
        for reason, failed in failures_by_reason(fetched.errors).items():
            self.warn(f"refresh of {named(failed)} failed: {reason}")
        symbols = self.symbols
        if fetched.errors and len(fetched.errors) == len(symbols):
            raise DataSourceError(
                f"source '{source.kind}' failed for all {len(symbols)} symbols as of {self.as_of} "
                f"(first: {next(iter(fetched.errors.values()))}); nothing was stored"
            )
        return Intake(symbols, fetched, log, summary, fetch_seconds)
