"""The live source: Yahoo Finance through yfinance, batched, retried, under a hard timeout.

Before any download one TCP probe checks that Yahoo can be reached at all, so an offline run fails
in seconds with a message that says so, instead of minutes of retries. yfinance's own chatter (its
``yfinance`` logger, anything it prints) goes to the ``stage2.yfinance`` logger at DEBUG.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
from pydantic import Field, PrivateAttr
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from stage2_assets.errors import DataSourceError
from stage2_assets.market.bars import normalize_frames
from stage2_assets.names import validate_symbol
from stage2_assets.resources.market_data.base import FetchResult, MarketDataSource
from stage2_assets.resources.market_data.network import (
    NetworkUnreachableError,
    probe_network,
    yfinance_quietly,
)

YAHOO_HOST = "query2.finance.yahoo.com"  # where yfinance (1.x) asks for price history


class TransientProviderError(DataSourceError):
    """A provider failure worth retrying (timeout, throttling, empty answer)."""


Downloader = Callable[..., pd.DataFrame]


def split_download(frame: pd.DataFrame, symbols: list[str]) -> dict[str, pd.DataFrame]:
    """Split a ``yf.download(group_by='ticker')`` frame into one raw frame per symbol.

    yfinance returns columns (ticker, field) for several tickers and plain fields for one, or
    (field, ticker) when grouped by column; every shape is accepted. A symbol whose columns are
    absent is left out, and the caller reports it.
    """
    if frame is None or frame.empty:
        return {}
    if not isinstance(frame.columns, pd.MultiIndex):
        return {symbols[0]: frame} if len(symbols) == 1 else {}
    level0 = {str(v) for v in frame.columns.get_level_values(0)}
    ticker_level = 0 if any(s in level0 for s in symbols) else 1
    out = {}
    for symbol in symbols:
        if symbol in set(frame.columns.get_level_values(ticker_level)):
            out[symbol] = frame.xs(symbol, axis=1, level=ticker_level)
    return out


class YFinanceSource(MarketDataSource):
    """Yahoo Finance through yfinance: batched, retried with back-off, under a hard timeout.

    Prices are as traded (``auto_adjust=False``): adjusted history is rewritten at every dividend,
    which would turn each refresh into a revision of the whole store. Splits show as one-day moves
    and the quality suite flags them.
    """

    symbols_file: str = Field(description="Default universe, one symbol per line.")
    timeout_seconds: float = 60.0
    max_retries: int = 3
    backoff_seconds: float = 2.0
    batch_size: int = 50
    probe_host: str = Field(
        YAHOO_HOST, description="Host probed once per fetch before any download."
    )
    probe_port: int = Field(443, description="TCP port of the probe.")
    probe_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest wait for the probe (name lookup and connection)."
    )
    _downloader: Downloader | None = PrivateAttr(default=None)
    _probe: bool = PrivateAttr(default=True)

    @property
    def kind(self) -> str:
        return "yfinance"

    @property
    def lists_holdings(self) -> bool:
        return False  # the listing is our universe file; a delisted ticker fails its fetch

    def with_downloader(self, downloader: Downloader, probe: bool = False) -> YFinanceSource:
        """The same source calling ``downloader`` in place of ``yf.download`` (tests, recordings).

        A recorded downloader needs no network, so the probe is skipped unless ``probe`` asks
        for it (a test pointing ``probe_host``/``probe_port`` at a target it controls).
        """
        clone = self.model_copy()
        clone._downloader = downloader
        clone._probe = probe
        return clone

    def available_symbols(self) -> list[str]:
        path = Path(self.symbols_file)
        if not path.is_file():
            raise DataSourceError(
                f"universe file {path} does not exist (data_source.universe_file)"
            )
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return [validate_symbol(line) for line in lines if line]

    def _download_once(self, symbols: list[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        downloader = self._downloader
        if downloader is None:
            import yfinance as yf

            downloader = yf.download
        kwargs = dict(
            tickers=symbols,
            start=start.isoformat(),
            end=(end + dt.timedelta(days=1)).isoformat(),
            group_by="ticker",
            auto_adjust=False,
            actions=False,
            progress=False,
            threads=False,
            timeout=self.timeout_seconds,
        )
        # yfinance's own timeout does not bound a hung connection: bound the call ourselves.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            with yfinance_quietly():
                future = pool.submit(downloader, **kwargs)
                frame = future.result(timeout=self.timeout_seconds)
        except concurrent.futures.TimeoutError:
            raise TransientProviderError(
                f"yfinance did not answer within {self.timeout_seconds:.0f} s for {len(symbols)} symbol(s)"
            ) from None
        except Exception as exc:  # the provider's own failure types are many and undocumented
            raise TransientProviderError(f"yfinance failed: {type(exc).__name__}: {exc}") from exc
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if frame is None or frame.empty:
            raise TransientProviderError(
                f"yfinance returned an empty frame for {', '.join(symbols[:5])}..."
            )
        return frame

    def _download(self, symbols: list[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        attempt = retry(
            retry=retry_if_exception_type(TransientProviderError),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential(multiplier=self.backoff_seconds, max=60),
            reraise=True,
        )(self._download_once)
        return attempt(symbols, start, end)

    def fetch(self, starts: Mapping[str, dt.date], end: dt.date) -> FetchResult:
        result = FetchResult()
        if self._probe and starts:
            started = time.perf_counter()
            try:
                probe_network(self.probe_host, self.probe_port, self.probe_timeout_seconds)
            except NetworkUnreachableError as exc:
                result.errors.update({s: f"{s}: {exc}" for s in starts})
                result.timed(list(starts), started)
                return result
        by_start: dict[dt.date, list[str]] = {}
        for symbol, start in starts.items():
            by_start.setdefault(start, []).append(symbol)
        for start, group in sorted(by_start.items()):
            for batch in _batches(group, self.batch_size):
                started = time.perf_counter()
                try:
                    frames = split_download(self._download(batch, start, end), batch)
                except DataSourceError as exc:
                    result.errors.update({s: f"{s}: {exc}" for s in batch})
                    result.timed(batch, started)
                    continue
                for symbol in batch:
                    if symbol not in frames:
                        result.errors[symbol] = f"{symbol}: yfinance returned no columns for it"
                bars, errors = normalize_frames(
                    frames, self.kind, dict.fromkeys(frames, start), end
                )
                for symbol, frame in bars.items():
                    if frame.empty:
                        errors.setdefault(symbol, f"{symbol}: yfinance returned only empty rows")
                    else:
                        result.bars[symbol] = frame
                result.errors.update(errors)
                result.timed(batch, started)
        return result


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
