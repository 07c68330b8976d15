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


@dataclass
class Listing:
    """What a source says it serves: its symbols, and the entries it refused with the reason
    (a file whose name is not a ticker, two files naming one symbol)."""

    symbols: list[str]
    refused: list[dict[str, str]] = field(default_factory=list)


class MarketDataSource(dg.ConfigurableResource, abc.ABC):
    """Daily OHLCV bars for a list of symbols. ``kind`` is recorded on every stored bar."""

    @property
    @abc.abstractmethod
    def kind(self) -> str: ...

    @abc.abstractmethod
    def available_symbols(self) -> list[str]:
        """The symbols this source serves when the config says ``symbols: auto``."""

    @property
    def lists_holdings(self) -> bool:
        """Whether ``listing()`` is what the source holds (a folder, the simulated market), so an
        expected symbol absent from it has vanished. A live provider's listing is our own universe
        file: there a vanished symbol shows as that symbol's failed fetch instead."""
        return True

    def listing(self) -> Listing:
        """The symbols served and, where the source has any, the entries refused with reasons."""
        return Listing(self.available_symbols())

    @abc.abstractmethod
    def fetch(self, starts: Mapping[str, dt.date], end: dt.date) -> FetchResult:
        """Bars of each symbol from its start date up to ``end`` (both included)."""
