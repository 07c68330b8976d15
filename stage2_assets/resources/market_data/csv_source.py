"""The CSV source: a folder of ``SYMBOL.csv`` files, read incrementally from their end."""

from __future__ import annotations

import csv
import datetime as dt
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from pydantic import Field, PrivateAttr

from stage2_assets.errors import DataSourceError, InvalidNameError
from stage2_assets.market.bars import (
    BAR_COLUMNS,
    empty_bars,
    iso_day_texts,
    normalize_frames,
    normalize_long,
)
from stage2_assets.names import validate_symbol
from stage2_assets.resources.market_data.base import FetchResult, Listing, MarketDataSource


class CsvSource(MarketDataSource):
    """A folder of ``SYMBOL.csv`` files with ``date,open,high,low,close,volume``."""

    folder: str = Field(description="Folder holding one SYMBOL.csv per symbol.")
    max_file_mb: float = Field(
        50.0,
        gt=0,
        description="A file larger than this is refused unread (data_refresh.max_file_mb).",
    )

    @property
    def kind(self) -> str:
        return "csv"

    @property
    def reads_local_files(self) -> bool:
        return True

    def _folder(self) -> Path:
        folder = Path(self.folder)
        if not folder.is_dir():
            raise DataSourceError(f"csv folder {folder} does not exist (data_source.path)")
        return folder.resolve()

    # the folder's last listing and its modification time: a refresh lists the folder and then
    # reads it, and a folder whose entries did not change (same mtime) lists the same files
    _listed: tuple | None = PrivateAttr(default=None)

    def _files(self) -> tuple[dict[str, Path], list[dict[str, str]]]:
        """{symbol: its file} and the refused files, by one rule for listing and reading: a
        ``*.csv`` file (any case) whose name, upper-cased, is a valid ticker; where two files name
        one symbol (``aos.csv`` and ``AOS.csv``) the exact ``SYMBOL.csv`` wins, else neither."""
        folder = self._folder()
        stamp = (folder, folder.stat().st_mtime_ns)
        if self._listed is not None and self._listed[0] == stamp:
            return dict(self._listed[1]), list(self._listed[2])
        files, refused = self._list(folder)
        self._listed = (stamp, files, refused)
        return dict(files), list(refused)

    def _list(self, folder: Path) -> tuple[dict[str, Path], list[dict[str, str]]]:
        named: dict[str, list[Path]] = {}
        refused = []
        with os.scandir(folder) as entries:  # names and kinds in one read of the folder
            listed = sorted((e.name, e.is_file()) for e in entries)
        for name, is_file in listed:
            stem, suffix = os.path.splitext(name)
            if name.startswith(".") or suffix.lower() != ".csv" or not is_file:
                continue  # not a data file (a README, a hidden file)
            try:
                named.setdefault(validate_symbol(stem), []).append(folder / name)
            except InvalidNameError as exc:
                refused.append({"file": name, "reason": str(exc)})
        files = {}
        for symbol, paths in named.items():
            exact = [p for p in paths if p.name == f"{symbol}.csv"]
            chosen = exact[0] if exact else paths[0] if len(paths) == 1 else None
            if chosen is not None:
                files[symbol] = chosen
            refused += [
                {
                    "file": p.name,
                    "reason": f"names the same symbol {symbol} as "
                    + (
                        chosen.name
                        if chosen is not None
                        else ", ".join(o.name for o in paths if o != p)
                    )
                    + (", which is read" if chosen is not None else "; none is read")
                    + ": remove or rename one",
                }
                for p in paths
                if p != chosen
            ]
        return files, sorted(refused, key=lambda r: r["file"])

    def available_symbols(self) -> list[str]:
        return sorted(self._files()[0])

    def listing(self) -> Listing:
        files, refused = self._files()
        return Listing(sorted(files), refused)

    def fetch(self, starts: Mapping[str, dt.date], end: dt.date) -> FetchResult:
        result = FetchResult()
        started = time.perf_counter()
        rows: list[list[str]] = []
        whole: dict[str, pd.DataFrame] = {}
        files, _ = self._files()
        limit = self.max_file_mb * 2**20
        for symbol, start in starts.items():
            try:
                path = files.get(validate_symbol(symbol))
                if path is None:
                    raise DataSourceError(f"{symbol}: no file {symbol}.csv in {self._folder()}")
                size = path.stat().st_size
                if size > limit:
                    raise DataSourceError(
                        f"{symbol}: {path.name} is {size / 2**20:.1f} MB, over "
                        f"data_refresh.max_file_mb ({self.max_file_mb:g} MB): refused unread"
                    )
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
            errors.update(long_errors)
            # files read whole too (rare): one dict of both; else the frames stay uncut until read
            bars = {**bars, **long_bars} if bars else long_bars
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


_TAIL_BYTES = 1_024  # ~22 daily rows, a weekly refresh with its overlap; grows x4 to the start


def read_tail_rows(path: Path, start: dt.date) -> list[list[str]] | None:
    """Rows (text, in ``date,open,high,low,close,volume`` order) of a chronological CSV dated on or
    after ``start``, reading only as much of the file's end as that needs.

    Vendor files are written in date order, so an incremental refresh needs only their end. Returns
    None when the fast path cannot be trusted (another header, a row of another width, a date that
    is not YYYY-MM-DD, dates out of order, bytes that are not UTF-8): the caller reads it whole.
    """
    floor = start.isoformat()
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
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
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if '"' in text or "\x00" in text:  # quoted fields: the csv module's rules
                try:
                    lines = [line for line in csv.reader(text.splitlines()) if line]
                except csv.Error:
                    return None
            else:  # plain fields, as the csv module splits them
                lines = [line.split(",") for line in text.splitlines() if line]
            dates = [line[0] for line in lines]
            if any(len(line) != len(BAR_COLUMNS) for line in lines) or not iso_day_texts(dates):
                return None
            if dates != sorted(dates):
                return None
            if offset == len(header) or (dates and dates[0] < floor):
                return [line for line in lines if line[0] >= floor]
            chunk *= 4
