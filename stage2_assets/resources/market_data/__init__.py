"""Market data sources: one resource interface (``base``), a live yfinance source and two offline
twins (a CSV folder, the simulated market), each in a module of its own; the config picks one."""

from __future__ import annotations

from stage2_assets.resources.market_data.base import FetchResult, Listing, MarketDataSource
from stage2_assets.resources.market_data.csv_source import CsvSource, read_tail_rows
from stage2_assets.resources.market_data.simulated_source import (
    EpisodeConfig,
    RegimeConfig,
    SimulatedSource,
)
from stage2_assets.resources.market_data.yfinance_source import (
    TransientProviderError,
    YFinanceSource,
    split_download,
)

__all__ = [
    "CsvSource",
    "EpisodeConfig",
    "FetchResult",
    "Listing",
    "MarketDataSource",
    "RegimeConfig",
    "SimulatedSource",
    "TransientProviderError",
    "YFinanceSource",
    "read_tail_rows",
    "source_from_settings",
    "split_download",
]


def source_from_settings(settings) -> MarketDataSource:
    """The source named by ``data_source.kind``, configured from the settings."""
    ds = settings.data_source
    if ds.kind == "csv":
        return CsvSource(
            folder=str(settings.csv_path), max_file_mb=settings.data_refresh.max_file_mb
        )
    if ds.kind == "yfinance":
        refresh = settings.data_refresh
        return YFinanceSource(
            symbols_file=str(settings.resolve(ds.universe_file)),
            timeout_seconds=refresh.provider_timeout_seconds,
            max_retries=refresh.max_retries,
            backoff_seconds=refresh.retry_backoff_seconds,
            batch_size=refresh.batch_size,
        )
    sim = ds.simulated
    return SimulatedSource(
        seed=sim.seed,
        num_symbols=sim.num_symbols,
        start_date=sim.start_date.isoformat(),
        regimes=[
            RegimeConfig(
                start=r.start.isoformat(),
                drift=r.drift,
                volatility=r.volatility,
                momentum=r.momentum,
                volume_signal=r.volume_signal,
            )
            for r in sim.regimes
        ],
        warts=list(sim.warts),
        market_share=sim.market_share,
        sector_share=sim.sector_share,
        num_sectors=sim.num_sectors,
        episodes=[
            EpisodeConfig(
                kind=e.kind,
                start=e.start.isoformat(),
                sessions=e.sessions,
                momentum=e.momentum,
                volume_signal=e.volume_signal,
            )
            for e in sim.episodes
        ],
    )
