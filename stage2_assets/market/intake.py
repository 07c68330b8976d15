"""One refresh of the raw store, end to end: list, plan, fetch, screen, re-adjust, store.

The ``raw_bars`` asset and ``benchmarks/bench_data.py`` both run this, so the benchmark measures
what a refresh really does. Two short warehouse connections: one to plan before the fetch, one to
compare and store after it (a slow provider never holds the file).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from stage2_assets.errors import DataSourceError
from stage2_assets.market.refresh import (
    ensure_same_source,
    failures_by_reason,
    named,
    plan_starts,
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
    stored_symbols,
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
    refresh = settings.data_refresh
    listing = source.listing()
    symbols = configured_symbols(settings, source, listing)
    full = full_refresh_symbols(full_tag, symbols)
    notes = Notes()
    for refused in listing.refused:
        notes.add(REFUSED_FILE, refused["file"], reason=refused["reason"])
    with warehouse.connect() as conn:
        ensure_same_source(conn, source.kind, warehouse.database)
        # a symbol the store holds (or the config names) that the source no longer lists
        expected = (
            stored_symbols(conn, as_of) if settings.data_source.symbols == "auto" else symbols
        )
        missing = (
            missing_symbols(conn, expected, listing.symbols, as_of) if source.lists_holdings else {}
        )
        starts = plan_starts(
            conn, symbols, refresh.history_start, refresh.overlap_days, as_of, full
        )
    if expected and not symbols:
        raise DataSourceError(
            f"source '{source.kind}' lists none of the {len(expected)} expected symbols "
            f"(first: {expected[0]}): is data_source.path right? Nothing was stored"
        )
    for symbol, seen in missing.items():
        notes.add(MISSING, symbol, **seen)
        warn(
            f"{symbol}: expected but no longer listed by source '{source.kind}' "
            f"(missing since {seen['since']}, last bar {seen['last_bar']})"
        )
    started = time.perf_counter()
    fetched = source.fetch(starts, as_of)
    screen_fetched(fetched, refresh.max_rows_per_symbol, notes)
    with warehouse.connect() as conn:
        factors = readjustment_factors(conn, fetched, refresh.readjust_tolerance)
        # a back-adjusted history is fetched whole in this run, so no seam reaches validated_bars
        again = {s: refresh.history_start for s in factors if starts[s] > refresh.history_start}
        if again:
            whole = source.fetch(again, as_of)
            screen_fetched(whole, refresh.max_rows_per_symbol, notes)
            for symbol in again:
                fetched.bars.pop(symbol, None)
                fetched.errors.pop(symbol, None)
            fetched.bars.update(whole.bars)
            fetched.errors.update(whole.errors)
            starts.update(again)
        for symbol, factor in sorted(factors.items()):
            notes.add(READJUSTED, symbol, factor=round(factor, 6), refetched=symbol in again)
            warn(
                f"{symbol}: the source re-adjusted its history (stored / delivered = "
                f"{factor:.6f}): its whole history was fetched again and goes to the quality gate"
            )
        fetch_seconds = time.perf_counter() - started
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        log = store_fetched(
            conn,
            fetched,
            starts,
            source.kind,
            run_id,
            as_of,
            set(full) | set(factors),
            notes.frame(run_id, as_of, now),
        )
    summary = summarize_log(log, notes.frame(run_id, as_of, now))
    for reason, failed in failures_by_reason(fetched.errors).items():
        warn(f"refresh of {named(failed)} failed: {reason}")
    if fetched.errors and len(fetched.errors) == len(symbols):
        raise DataSourceError(
            f"source '{source.kind}' failed for all {len(symbols)} symbols as of {as_of} "
            f"(first: {next(iter(fetched.errors.values()))}); nothing was stored"
        )
    return Intake(symbols, fetched, log, summary, fetch_seconds)
