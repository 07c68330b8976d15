"""The market-data interface: a source answers "bars of these symbols from these dates up to
``end``" and reports, per symbol, either a normalized frame or the reason it has none. One failing
symbol never stops the others.
"""

from __future__ import annotations

import abc
import datetime as dt
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from stage2_assets.market.bars import SymbolFrames


@dataclass
class FetchResult:
    """What a source answered: frames for the symbols it could serve, reasons for the others."""

    bars: MutableMapping[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # the frames ``delivered()`` last joined, and the result
    _joined: tuple[list[pd.DataFrame], pd.DataFrame | None] = field(
        default_factory=lambda: ([], None), repr=False, compare=False
    )

    def delivered(self) -> pd.DataFrame | None:
        """Every non-empty frame as one long frame, or None when nothing came back.

        Screening, the re-adjustment check and the store each read the whole delivery: it is
        joined once, and again only when ``bars`` has changed since (a frame added, replaced or
        removed; frames are replaced, never changed in place). Frames a source cut from one long
        frame (``SymbolFrames``) are that frame until one with rows is set or removed."""
        if isinstance(self.bars, SymbolFrames) and self.bars.pristine:
            return self.bars.joined if len(self.bars.joined) else None
        frames = self._frames()
        joined, result = self._joined
        if len(joined) != len(frames) or any(
            a is not b for a, b in zip(joined, frames, strict=True)
        ):
            result = pd.concat(frames, ignore_index=True) if frames else None
            self._joined = (frames, result)
        return result

    def _frames(self) -> list[pd.DataFrame]:
        return [f for f in self.bars.values() if not f.empty]

    def row_counts(self) -> dict[str, int]:
        """{symbol: rows delivered}, without cutting frames a source has not cut yet."""
        if isinstance(self.bars, SymbolFrames):
            return {symbol: self.bars.rows(symbol) for symbol in self.bars}
        return {symbol: len(frame) for symbol, frame in self.bars.items()}

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

    @property
    def reads_local_files(self) -> bool:
        """Whether a fetch only reads files on this machine, so it ends in about the time the
        reads take: a refresh then keeps one warehouse connection open across it. A network
        provider can hang for minutes (and the simulator computes a whole market), so by default a
        refresh never holds the warehouse file while it fetches."""
        return False

    def listing(self) -> Listing:
        """The symbols served and, where the source has any, the entries refused with reasons."""
        return Listing(self.available_symbols())

    @abc.abstractmethod
    def fetch(self, starts: Mapping[str, dt.date], end: dt.date) -> FetchResult:
        """Bars of each symbol from its start date up to ``end`` (both included)."""
