"""The market-data interface: a source answers "bars of these symbols from these dates up to
``end``" and reports, per symbol, either a normalized frame or the reason it has none. One failing
symbol never stops the others.
"""

from __future__ import annotations

import abc
import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd


@dataclass
class FetchResult:
    """What a source answered: frames for the symbols it could serve, reasons for the others."""

    bars: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, symbols: list[str], started: float) -> None:
        """Share the wall time since ``started`` among the symbols of one request."""
        share = (time.perf_counter() - started) / max(len(symbols), 1)
        for symbol in symbols:
            self.seconds[symbol] = share


class MarketDataSource(dg.ConfigurableResource, abc.ABC):
    """Daily OHLCV bars for a list of symbols. ``kind`` is recorded on every stored bar."""

    @property
    @abc.abstractmethod
    def kind(self) -> str: ...

    @abc.abstractmethod
    def available_symbols(self) -> list[str]:
        """The symbols this source serves when the config says ``symbols: auto``."""

    @abc.abstractmethod
    def fetch(self, starts: Mapping[str, dt.date], end: dt.date) -> FetchResult:
        """Bars of each symbol from its start date up to ``end`` (both included)."""
