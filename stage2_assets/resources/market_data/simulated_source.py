"""The simulated source: the seeded market of ``market/simulator.py``, offline and deterministic."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping

import dagster as dg
import pandas as pd
from pydantic import Field

from stage2_assets import clock
from stage2_assets.market.simulator import EpisodeSpec, MarketSpec, RegimeSpec, simulate_bars
from stage2_assets.resources.market_data.base import FetchResult, MarketDataSource


class RegimeConfig(dg.Config):
    start: str = Field(description="First session of the regime (YYYY-MM-DD).")
    drift: float
    volatility: float
    momentum: float
    volume_signal: float = 0.0


class EpisodeConfig(dg.Config):
    kind: str
    start: str
    sessions: int
    momentum: float = 0.0
    volume_signal: float = 0.0


class SimulatedSource(MarketDataSource):
    """The seeded simulated market: offline, deterministic, with regime changes."""

    seed: int = 7
    num_symbols: int = 40
    start_date: str = "2019-01-02"
    regimes: list[RegimeConfig]
    warts: list[str] = []
    market_share: float = 0.0
    sector_share: float = 0.0
    num_sectors: int = 1
    episodes: list[EpisodeConfig] = []

    @property
    def kind(self) -> str:
        return "simulated"

    def spec(self) -> MarketSpec:
        return MarketSpec(
            seed=self.seed,
            num_symbols=self.num_symbols,
            start_date=dt.date.fromisoformat(self.start_date),
            regimes=[
                RegimeSpec(
                    dt.date.fromisoformat(r.start),
                    r.drift,
                    r.volatility,
                    r.momentum,
                    r.volume_signal,
                )
                for r in self.regimes
            ],
            warts=tuple(self.warts),
            market_share=self.market_share,
            sector_share=self.sector_share,
            num_sectors=self.num_sectors,
            episodes=tuple(
                EpisodeSpec(
                    e.kind, dt.date.fromisoformat(e.start), e.sessions, e.momentum, e.volume_signal
                )
                for e in self.episodes
            ),
        )

    def available_symbols(self) -> list[str]:
        return self.spec().symbols

    def fetch(self, starts: Mapping[str, dt.date], end: dt.date) -> FetchResult:
        started = time.perf_counter()
        spec = self.spec()
        result = FetchResult()
        known = [s for s in starts if s in spec.symbols]
        for symbol in starts:
            if symbol not in spec.symbols:
                result.errors[symbol] = f"{symbol}: not a symbol of the simulated market"
        # Never simulate past today: a simulated store is as blind to the future as a live one.
        horizon = min(end, clock.today())
        bars = simulate_bars(spec, known, horizon)
        floor = bars["symbol"].map({s: pd.Timestamp(starts[s]) for s in known})
        bars = bars[bars["date"] >= floor]
        for symbol, frame in bars.groupby("symbol", sort=False):
            result.bars[str(symbol)] = frame.reset_index(drop=True)
        for symbol in known:
            result.bars.setdefault(symbol, bars.iloc[0:0])
        result.timed(list(starts), started)
        return result
