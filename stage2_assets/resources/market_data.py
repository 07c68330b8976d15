"""Market data sources: one resource interface, a live yfinance source and offline twins.

A source answers "bars of these symbols from these dates up to ``end``" and reports, per symbol,
either a normalized frame or the reason it has none. One failing symbol never stops the others.
"""

from __future__ import annotations

import abc
import concurrent.futures
import csv
import datetime as dt
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field, PrivateAttr
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from stage2_assets.errors import DataSourceError, InvalidNameError
from stage2_assets.market.bars import BAR_COLUMNS, empty_bars, normalize_frames, normalize_long
from stage2_assets.market.simulator import EpisodeSpec, MarketSpec, RegimeSpec, simulate_bars
from stage2_assets.names import validate_symbol


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


class CsvSource(MarketDataSource):
    """A folder of ``SYMBOL.csv`` files with ``date,open,high,low,close,volume``."""

    folder: str = Field(description="Folder holding one SYMBOL.csv per symbol.")

    @property
    def kind(self) -> str:
        return "csv"

    def _folder(self) -> Path:
        folder = Path(self.folder)
        if not folder.is_dir():
            raise DataSourceError(f"csv folder {folder} does not exist (data_source.path)")
        return folder.resolve()

    def available_symbols(self) -> list[str]:
        symbols = []
        for path in sorted(self._folder().glob("*.csv")):
            try:
                symbols.append(validate_symbol(path.stem))
            except InvalidNameError:
                continue  # a file whose name is not a ticker is not a symbol of ours
        return symbols

    def _path(self, symbol: str) -> Path:
        folder = self._folder()
        path = (folder / f"{validate_symbol(symbol)}.csv").resolve()
        if path.parent != folder:
            raise InvalidNameError(f"symbol {symbol!r} points outside the csv folder {folder}")
        return path

    def fetch(self, starts: Mapping[str, dt.date], end: dt.date) -> FetchResult:
        result = FetchResult()
        started = time.perf_counter()
        rows: list[list[str]] = []
        whole: dict[str, pd.DataFrame] = {}
        for symbol, start in starts.items():
            try:
                path = self._path(symbol)
                if not path.is_file():
                    raise DataSourceError(f"{symbol}: no file {path.name} in {path.parent}")
                tail = read_tail_rows(path, start)
                if tail is None:
                    whole[symbol] = self._read_whole(symbol, path)
                else:
                    rows.extend([symbol, *row] for row in tail)
            except (DataSourceError, InvalidNameError) as exc:
                result.errors[symbol] = str(exc)
        bars, errors = normalize_frames(whole, self.kind, starts, end)
        if rows:
            long = pd.DataFrame(rows, columns=["symbol", *BAR_COLUMNS])
            long_bars, long_errors = normalize_long(long, self.kind, starts, end)
            bars.update(long_bars)
            errors.update(long_errors)
        for symbol in starts:
            if symbol not in errors and symbol not in result.errors and symbol not in bars:
                bars[symbol] = empty_bars()
        result.bars = bars
        result.errors.update(errors)
        result.timed(list(starts), started)
        return result

    def _read_whole(self, symbol: str, path: Path) -> pd.DataFrame:
        try:
            # A row with more fields than the header is refused, neither turned into an index nor truncated.
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(path, index_col=False)
        except pd.errors.EmptyDataError:
            raise DataSourceError(f"{symbol}: {path.name} is empty") from None
        except (
            UnicodeDecodeError,
            pd.errors.ParserError,
            pd.errors.ParserWarning,
            ValueError,
        ) as exc:
            raise DataSourceError(f"{symbol}: {path.name} cannot be parsed: {exc}") from None
        return frame


_TAIL_BYTES = 4_096  # ~90 daily rows; grows x4 until it reaches the start
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def read_tail_rows(path: Path, start: dt.date) -> list[list[str]] | None:
    """Rows (text, in ``date,open,high,low,close,volume`` order) of a chronological CSV dated on or
    after ``start``, reading only as much of the file's end as that needs.

    Vendor files are written in date order, so an incremental refresh needs only their end. Returns
    None when the fast path cannot be trusted (another header, a row of another width, a date that
    is not YYYY-MM-DD, dates out of order, bytes that are not UTF-8): the caller reads it whole.
    """
    size = path.stat().st_size
    floor = start.isoformat()
    with path.open("rb") as handle:
        header = handle.readline()
        try:
            names = [n.strip().lower() for n in header.decode("utf-8").strip().split(",")]
        except UnicodeDecodeError:
            return None
        if names != BAR_COLUMNS:
            return None
        first = handle.readline().split(b",", 1)[0].decode("utf-8", "replace")
        # Asked for the whole file (a first load): one pass, no tail probing.
        chunk = size if first >= floor else _TAIL_BYTES
        while True:
            offset = max(len(header), size - chunk)
            handle.seek(offset)
            body = handle.read()
            if offset > len(header):
                body = body.split(b"\n", 1)[1] if b"\n" in body else b""
            try:
                lines = [line for line in csv.reader(body.decode("utf-8").splitlines()) if line]
            except (UnicodeDecodeError, csv.Error):
                return None
            dates = [line[0] for line in lines]
            if any(len(line) != len(BAR_COLUMNS) for line in lines) or not all(
                _ISO_DAY.match(d) for d in dates
            ):
                return None
            if dates != sorted(dates):
                return None
            if offset == len(header) or (dates and dates[0] < floor):
                return [line for line in lines if line[0] >= floor]
            chunk *= 4


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
        horizon = min(end, dt.date.today())
        bars = simulate_bars(spec, known, horizon)
        floor = bars["symbol"].map({s: pd.Timestamp(starts[s]) for s in known})
        bars = bars[bars["date"] >= floor]
        for symbol, frame in bars.groupby("symbol", sort=False):
            result.bars[str(symbol)] = frame.reset_index(drop=True)
        for symbol in known:
            result.bars.setdefault(symbol, bars.iloc[0:0])
        result.timed(list(starts), started)
        return result


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
    _downloader: Downloader | None = PrivateAttr(default=None)

    @property
    def kind(self) -> str:
        return "yfinance"

    def with_downloader(self, downloader: Downloader) -> YFinanceSource:
        """The same source calling ``downloader`` in place of ``yf.download`` (tests, recordings)."""
        clone = self.model_copy()
        clone._downloader = downloader
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
        future = pool.submit(downloader, **kwargs)
        try:
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


def source_from_settings(settings) -> MarketDataSource:
    """The source named by ``data_source.kind``, configured from the settings."""
    ds = settings.data_source
    if ds.kind == "csv":
        return CsvSource(folder=str(settings.csv_path))
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
