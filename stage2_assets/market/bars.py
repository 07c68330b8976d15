"""The daily-bar schema and the normalization every source's frames go through.

Normalization runs once over all symbols of a fetch (vectorized), yet a fault in one symbol's
frame (a missing column, a non-numeric price, a bad date) is reported for that symbol alone.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, MutableMapping

import numpy as np
import pandas as pd

PRICE_COLUMNS = ["open", "high", "low", "close"]
BAR_COLUMNS = ["date", *PRICE_COLUMNS, "volume"]
STORED_COLUMNS = ["symbol", *BAR_COLUMNS, "source"]

_ALIASES = {"adj close": "adj_close", "datetime": "date", "timestamp": "date", "index": "date"}
_STORED_DTYPES = {"symbol": "object", "date": "datetime64[ns]", "source": "object"}
# built once: a source answers an empty frame for every symbol with nothing new, and building a
# typed frame costs far more than copying one
_EMPTY = pd.DataFrame(
    {c: pd.Series(dtype=_STORED_DTYPES.get(c, "float64")) for c in STORED_COLUMNS}
)


def empty_bars() -> pd.DataFrame:
    """A zero-row frame in the stored schema."""
    return _EMPTY.copy()


def _shape(frame: pd.DataFrame | None, symbol: str) -> pd.DataFrame | str:
    """The frame with our column names, or the reason it cannot have them."""
    if frame is None or frame.empty:
        return f"{symbol}: the source returned no rows"
    columns = {_ALIASES.get(str(c).strip().lower(), str(c).strip().lower()) for c in frame.columns}
    data = frame if "date" in columns else frame.reset_index()
    data = data.set_axis(
        [_ALIASES.get(str(c).strip().lower(), str(c).strip().lower()) for c in data.columns], axis=1
    )
    missing = [c for c in BAR_COLUMNS if c not in data.columns]
    if missing:
        return f"{symbol}: missing column(s) {', '.join(missing)}; expected {','.join(BAR_COLUMNS)}"
    if data.columns.duplicated().any():
        return f"{symbol}: duplicate column names {sorted(set(data.columns[data.columns.duplicated()]))}"
    return data[BAR_COLUMNS]


def normalize_frames(
    frames: Mapping[str, pd.DataFrame],
    source: str,
    starts: Mapping[str, dt.date] | None = None,
    end: dt.date | None = None,
) -> tuple[MutableMapping[str, pd.DataFrame], dict[str, str]]:
    """Bring each symbol's frame to the stored schema, clipped to [start, end].

    Returns (bars by symbol, error by symbol). Rows whose every value is missing are dropped
    (providers pad calendars that way); partial NaNs and duplicate dates are kept, so the quality
    suite sees and reports them.
    """
    errors: dict[str, str] = {}
    shaped = {}
    for symbol, frame in frames.items():
        try:
            result = _shape(frame, symbol)
        except Exception as exc:  # a frame of a shape nobody foresaw is that symbol's problem only
            result = f"{symbol}: the source's frame cannot be read ({type(exc).__name__}: {exc})"
        if isinstance(result, str):
            errors[symbol] = result
        else:
            shaped[symbol] = result
    if not shaped:
        return {}, errors
    data = pd.concat(shaped, names=["symbol", "_row"]).reset_index(level=0).reset_index(drop=True)
    return normalize_long(data, source, starts, end, errors)


def normalize_long(
    data: pd.DataFrame,
    source: str,
    starts: Mapping[str, dt.date] | None = None,
    end: dt.date | None = None,
    errors: dict[str, str] | None = None,
) -> tuple[SymbolFrames, dict[str, str]]:
    """``normalize_frames`` for one long frame of ``symbol`` plus the bar columns, as raw text or
    numbers; the frames are cut from one long frame of them all (``SymbolFrames.joined``)."""
    errors = {} if errors is None else errors
    shaped = data["symbol"].unique().tolist()
    raw_dates = data["date"]
    dates = _iso_days(raw_dates)
    if dates is None:
        dates = pd.to_datetime(raw_dates, errors="coerce", format="ISO8601")
    if dates.isna().any():
        retry = pd.to_datetime(raw_dates[dates.isna()], errors="coerce", format="mixed")
        dates = dates.fillna(retry)
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)
    bad = dates.isna()
    _record(errors, data, bad, lambda v: f"date {v!r} is not a date", "date")
    days = dates.dt.normalize().astype("datetime64[ns]")
    # Clip before coercing values: an incremental fetch pays for the rows it keeps.
    kept = bad.to_numpy(dtype=bool, copy=True)
    in_range = np.ones(len(data), dtype=bool)
    day_values = days.to_numpy()
    if starts is not None:
        # each row's first date, looked up once per symbol (NaT for a symbol not asked for)
        codes, names = pd.factorize(data["symbol"])
        firsts = _bounds(np.array([starts.get(n) for n in names], dtype="datetime64[D]"))
        in_range &= day_values >= firsts[codes]
    if end is not None:
        in_range &= day_values <= _bounds(np.array([end], dtype="datetime64[D]"), last=True)[0]
    kept |= in_range
    data = data[kept]
    columns = {"symbol": data["symbol"].to_numpy(), "date": day_values[kept]}
    for column in [*PRICE_COLUMNS, "volume"]:
        values = _numbers(data[column])
        not_numeric = np.isnan(values) & data[column].notna().to_numpy(dtype=bool)
        _record(
            errors,
            data,
            not_numeric,
            lambda v, c=column: f"column {c} holds a non-numeric value {v!r}",
            column,
        )
        columns[column] = values
    # one frame of the kept rows, built once (assigning column by column copies the frame each time)
    stored = ~pd.Series(columns["symbol"]).isin(errors).to_numpy(dtype=bool)
    stored &= ~np.isnan(np.column_stack([columns[c] for c in [*PRICE_COLUMNS, "volume"]])).all(
        axis=1
    )
    data = pd.DataFrame({c: v[stored] for c, v in columns.items()}).assign(source=source)
    bars = _split_by_symbol(data[STORED_COLUMNS])
    for symbol in shaped:
        if symbol not in errors and symbol not in bars:
            bars[symbol] = data.iloc[0:0].reset_index(drop=True)
    return bars, errors


_PLAIN_NUMBER = re.compile(r"[0-9.+-]*")


_ISO_DAYS = re.compile(r"(?:\d{4}-\d{2}-\d{2})*")
_FIRST_DAY, _LAST_DAY = np.datetime64("1677-09-22"), np.datetime64("2262-04-11")


def _bounds(days: np.ndarray, last: bool = False) -> np.ndarray:
    """First days (or with ``last``, last days), datetime64[D] with NaT for none, as nanosecond
    datetimes that the days of the data, all inside pandas' nanosecond range, can be compared
    with: a day outside the range is clipped to it where that keeps every comparison, and is NaT
    (which no comparison passes) where no day can pass it."""
    bounds = np.clip(days, _FIRST_DAY, _LAST_DAY).astype("datetime64[ns]")
    bounds[np.isnat(days) | ((days < _FIRST_DAY) if last else (days > _LAST_DAY))] = np.datetime64(
        "NaT"
    )
    return bounds


def _joined_text(values: np.ndarray) -> str | None:
    """The values joined, where every one is text (str.join refuses anything else)."""
    try:
        return "".join(values)
    except TypeError:
        return None


def iso_day_texts(values) -> bool:
    """Whether every value is text of the form ``YYYY-MM-DD``: ten characters each, and all of
    them joined matched at once (one match, not one a value)."""
    joined = _joined_text(values)
    if joined is None:
        return False
    if len(values) and not min(map(len, values)) == max(map(len, values)) == 10:
        return False
    return _ISO_DAYS.fullmatch(joined) is not None


def _iso_days(column: pd.Series) -> pd.Series | None:
    """The dates of a column of ``YYYY-MM-DD`` text (a CSV's), parsed by numpy: the days pandas'
    ISO 8601 parser gives them, at a tenth of its cost; None for any other column (another
    format, a time of day, a day that does not exist), which pandas parses."""
    if column.dtype != object or not len(column):
        return None
    text = column.to_numpy()
    if not iso_day_texts(text):
        return None
    try:
        days = text.astype("datetime64[D]")
    except ValueError:  # 2019-02-30
        return None
    if days.min() < _FIRST_DAY or days.max() > _LAST_DAY:  # beyond pandas' nanosecond range
        return None
    return pd.Series(days.astype("datetime64[ns]"), index=column.index)


def _numbers(column: pd.Series) -> np.ndarray:
    """``pd.to_numeric(column, errors="coerce")`` as float64, faster for a column of short plain
    decimal text (a CSV's prices). Text of at most 15 characters of digits, points and signs is
    parsed by numpy to the same doubles, bit for bit (pandas rounds longer text differently in the
    last place, which would read as a revision of every stored bar); anything else (a blank, a
    word, an exponent, a long number) takes pandas' path."""
    if column.dtype == object and len(column):
        text = column.to_numpy()
        joined = _joined_text(text)
        if (
            joined is not None
            and max(map(len, text)) <= 15
            and _PLAIN_NUMBER.fullmatch(joined) is not None
        ):
            try:
                return text.astype("float64")
            except ValueError:  # a blank, a lone sign or point, two points
                pass
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64")


class SymbolFrames(MutableMapping):
    """{symbol: its date-ordered frame}, cut from one long frame sorted by symbol and date (in
    order of the symbols' first rows) only when a symbol's frame is read.

    A fetch normalizes every symbol at once, and most readers want the whole delivery
    (``FetchResult.delivered``) or a symbol's row count: slicing 150 frames that nobody reads
    cost an incremental refresh as much as reading the files. ``joined`` is the long frame;
    ``pristine`` says it is still every non-empty frame joined in order: no frame with rows has
    been set or removed since (frames are replaced, never changed in place)."""

    def __init__(self, joined: pd.DataFrame, spans: dict[str, tuple[int, int]]):
        self.joined = joined
        self._spans: dict[str, tuple[int, int] | None] = dict(spans)  # None: set, not cut
        self._frames: dict[str, pd.DataFrame] = {}
        self.pristine = True

    def __getitem__(self, symbol: str) -> pd.DataFrame:
        frame = self._frames.get(symbol)
        if frame is None:
            span = self._spans[symbol]
            if span is None:
                raise KeyError(symbol)
            frame = self.joined.iloc[span[0] : span[1]].reset_index(drop=True)
            self._frames[symbol] = frame
        return frame

    def __setitem__(self, symbol: str, frame: pd.DataFrame) -> None:
        if self.rows(symbol) or len(frame):
            self.pristine = False
        self._spans.setdefault(symbol, None)
        self._frames[symbol] = frame

    def __delitem__(self, symbol: str) -> None:
        if self.rows(symbol):
            self.pristine = False
        del self._spans[symbol]
        self._frames.pop(symbol, None)

    def __contains__(self, symbol: object) -> bool:  # without cutting the frame
        return symbol in self._spans

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def __repr__(self) -> str:
        return f"SymbolFrames({len(self)} symbols, {len(self.joined)} rows joined)"

    def rows(self, symbol: str) -> int:
        """The symbol's row count, without cutting its frame (0 for a symbol not held)."""
        if symbol in self._frames:
            return len(self._frames[symbol])
        span = self._spans.get(symbol)
        return span[1] - span[0] if span else 0


def _split_by_symbol(data: pd.DataFrame) -> SymbolFrames:
    """The symbols' frames, in order of their first rows, over the long frame sorted by symbol
    and date.

    One stable sort of the long frame, then contiguous spans: sorting each symbol's group on its
    own costs a fixed pandas overhead per symbol that an incremental fetch of a few rows feels.
    """
    if data.empty:
        return SymbolFrames(data.reset_index(drop=True), {})
    codes, symbols = pd.factorize(data["symbol"])
    order = np.lexsort((data["date"].to_numpy(), codes))  # stable: same-day rows keep their order
    data = data.take(order).reset_index(drop=True)
    codes = codes[order]
    cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    first = np.r_[0, cuts]
    last = np.r_[cuts, len(codes)]
    return SymbolFrames(
        data,
        {str(symbol): (int(a), int(b)) for symbol, a, b in zip(symbols, first, last, strict=True)},
    )


def _record(
    errors: dict[str, str], data: pd.DataFrame, mask: pd.Series, describe, column: str
) -> None:
    """The symbol's error, once: ``describe`` of its first row's value that ``mask`` marks, and
    that row's date where the date is not what is wrong."""
    if not mask.any():
        return
    firsts = data.loc[mask].groupby("symbol", sort=False).head(1)
    for symbol, value, day in zip(firsts["symbol"], firsts[column], firsts["date"], strict=True):
        where = "" if column == "date" else f" (the row of {_day_text(day)})"
        errors.setdefault(str(symbol), f"{symbol}: {describe(value)}{where}")


def _day_text(day) -> str:
    """A row's date as the file or the provider gave it, a timestamp as its day."""
    if isinstance(day, dt.datetime) and not pd.isna(day):  # a pandas Timestamp is one too
        stamp = pd.Timestamp(day)
        return stamp.date().isoformat() if stamp == stamp.normalize() else str(stamp)
    return str(day)
