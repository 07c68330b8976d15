import dataclasses
import datetime as dt
import threading

import numpy as np
import pandas as pd
import pytest

from stage2_assets.market.simulator import EpisodeSpec, MarketSpec, RegimeSpec, simulate_bars
from stage2_assets.resources.market_data import CsvSource, YFinanceSource, split_download
from stage2_assets_tests.conftest import write_csv

START = dt.date(2015, 1, 1)


def _bars(days: int = 5, start: str = "2024-01-02") -> pd.DataFrame:
    dates = pd.bdate_range(start, periods=days)
    close = np.linspace(10, 11, days)
    return pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%d"),
            "open": close,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": 1000,
        }
    )


# --- csv ---------------------------------------------------------------------------------


def test_csv_reads_real_files_in_the_stored_schema(market_data_dir):
    result = CsvSource(folder=str(market_data_dir)).fetch({"AAPL": START}, dt.date(2020, 1, 10))
    aapl = result.bars["AAPL"]
    assert result.errors == {}
    assert len(aapl) == 1259  # every data line of the file
    assert aapl["date"].min() == pd.Timestamp("2015-01-12")
    assert list(aapl.columns) == [
        "symbol",
        "date",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "source",
    ]
    assert set(aapl["source"]) == {"csv"}


def test_csv_auto_lists_every_file(market_data_dir):
    assert len(CsvSource(folder=str(market_data_dir)).available_symbols()) == 150


def test_csv_answers_as_of_a_date(market_data_dir):
    result = CsvSource(folder=str(market_data_dir)).fetch(
        {"AAPL": dt.date(2019, 12, 1)}, dt.date(2019, 12, 31)
    )
    assert result.bars["AAPL"]["date"].max() == pd.Timestamp("2019-12-31")
    assert result.bars["AAPL"]["date"].min() == pd.Timestamp("2019-12-02")


def test_csv_bad_files_name_the_symbol_and_spare_the_others(tmp_path):
    write_csv(tmp_path, "GOOD", _bars())
    write_csv(tmp_path, "NOCLOSE", _bars().drop(columns=["close"]))
    write_csv(tmp_path, "TEXT", _bars().assign(close=["1.0", "2.0", "n/a?", "4", "5"]))
    write_csv(
        tmp_path,
        "BADDATE",
        _bars().assign(date=["2024-01-02", "not a day", "2024-01-04", "2024-01-05", "2024-01-08"]),
    )
    (tmp_path / "EMPTY.csv").write_text("")
    (tmp_path / "LATIN.csv").write_bytes(
        "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,1,\xff\xfe\n".encode("latin-1")
    )
    symbols = ["GOOD", "NOCLOSE", "TEXT", "BADDATE", "EMPTY", "LATIN", "MISSING", "../x"]
    result = CsvSource(folder=str(tmp_path)).fetch(
        dict.fromkeys(symbols, START), dt.date(2024, 12, 31)
    )
    assert list(result.bars) == ["GOOD"]
    assert len(result.bars["GOOD"]) == 5
    assert "missing column(s) close" in result.errors["NOCLOSE"]
    assert (
        "column close holds a non-numeric value 'n/a?' (the row of 2024-01-04)"
        in result.errors["TEXT"]
    )
    assert "date 'not a day' is not a date" in result.errors["BADDATE"]
    assert "EMPTY.csv is empty" in result.errors["EMPTY"]
    assert result.errors["LATIN"].startswith("LATIN:")
    assert "no file MISSING.csv" in result.errors["MISSING"]
    assert "not a valid ticker" in result.errors["../x"]


def test_csv_auto_skips_files_whose_names_are_not_tickers(tmp_path):
    write_csv(tmp_path, "GOOD", _bars())
    (tmp_path / "bad name.csv").write_text("x")
    assert CsvSource(folder=str(tmp_path)).available_symbols() == ["GOOD"]


# --- simulated ---------------------------------------------------------------------------

SPEC = MarketSpec(
    seed=3,
    num_symbols=4,
    start_date=dt.date(2023, 1, 3),
    regimes=[
        RegimeSpec(dt.date(2023, 1, 3), 0.0, 0.01, 0.15),
        RegimeSpec(dt.date(2023, 9, 1), 0.0, 0.03, -0.15),
    ],
)


def test_simulated_bars_up_to_a_date_never_depend_on_the_end_date():
    short = simulate_bars(SPEC, SPEC.symbols, dt.date(2023, 6, 30))
    long = simulate_bars(SPEC, SPEC.symbols, dt.date(2024, 6, 28))
    pd.testing.assert_frame_equal(
        short.reset_index(drop=True), long[long["date"] <= "2023-06-30"].reset_index(drop=True)
    )


def test_simulated_bars_respect_ohlc_and_the_nyse_calendar():
    bars = simulate_bars(SPEC, SPEC.symbols, dt.date(2023, 12, 29))
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["volume"] > 0).all()
    assert pd.Timestamp("2023-07-04") not in set(bars["date"])  # Independence Day
    assert bars.groupby("symbol").size().eq(250).all()


def test_simulated_regime_change_flips_the_momentum():
    bars = simulate_bars(SPEC, SPEC.symbols, dt.date(2024, 6, 28))
    r = np.log(bars["close"]).groupby(bars["symbol"]).diff()
    past5 = r.groupby(bars["symbol"]).transform(lambda s: s.shift(1).rolling(5).sum())
    frame = bars.assign(r=r, past5=past5).dropna()
    before = frame[frame["date"] < "2023-09-01"]
    after = frame[frame["date"] >= "2023-09-12"]
    assert before["r"].corr(before["past5"]) > 0.15
    assert after["r"].corr(after["past5"]) < -0.15


def test_a_volume_regime_moves_the_signal_from_past_prices_to_yesterdays_volume():
    spec = dataclasses.replace(
        SPEC,
        num_symbols=6,
        regimes=[
            RegimeSpec(dt.date(2023, 1, 3), 0.0, 0.012, 0.15),
            RegimeSpec(dt.date(2023, 9, 1), 0.0, 0.012, 0.0, volume_signal=0.4),
        ],
    )
    bars = simulate_bars(spec, spec.symbols, dt.date(2024, 6, 28))
    r = np.log(bars["close"]).groupby(bars["symbol"]).diff()
    past5 = r.groupby(bars["symbol"]).transform(lambda s: s.shift(1).rolling(5).sum())
    log_volume = np.log(bars["volume"])
    log_volume -= log_volume.groupby(bars["symbol"]).transform("mean")  # symbols differ in size
    prev_log_volume = log_volume.groupby(bars["symbol"]).shift(1)
    frame = bars.assign(r=r, past5=past5, prev_log_volume=prev_log_volume).dropna()
    before = frame[frame["date"] < "2023-09-01"]
    after = frame[frame["date"] >= "2023-09-12"]
    assert before["r"].corr(before["past5"]) > 0.15
    assert abs(before["r"].corr(before["prev_log_volume"])) < 0.1
    assert abs(after["r"].corr(after["past5"])) < 0.1
    assert after["r"].corr(after["prev_log_volume"]) > 0.3


def test_planted_warts_land_on_distinct_symbols():
    spec = MarketSpec(**{**SPEC.__dict__, "warts": ("duplicate_day", "zero_price")})
    bars = simulate_bars(spec, spec.symbols, dt.date(2023, 12, 29))
    dup = bars[bars["symbol"] == "SIM000"]
    assert dup["date"].duplicated().sum() == 1
    assert (bars.loc[bars["symbol"] == "SIM001", "close"] == 0).sum() == 1


# --- yfinance, at its boundary: frames shaped as yf.download returns them ------------------


def _yf_frame(symbols: list[str], days: int = 5) -> pd.DataFrame:
    dates = pd.bdate_range("2024-01-02", periods=days, name="Date")
    parts = {}
    for i, symbol in enumerate(symbols):
        close = np.linspace(100 + i, 101 + i, days)
        parts[symbol] = pd.DataFrame(
            {
                "Open": close,
                "High": close + 1,
                "Low": close - 1,
                "Close": close,
                "Adj Close": close * 0.98,
                "Volume": np.full(days, 1e6),
            },
            index=dates,
        )
    return pd.concat(parts, axis=1)


def _source(**kwargs) -> YFinanceSource:
    return YFinanceSource(symbols_file="unused", backoff_seconds=0, **kwargs)


def test_split_download_accepts_both_multiindex_orders_and_single_ticker_frames():
    frame = _yf_frame(["AAA", "BBB"])
    assert set(split_download(frame, ["AAA", "BBB"])) == {"AAA", "BBB"}
    swapped = frame.swaplevel(axis=1)
    assert split_download(swapped, ["AAA", "BBB"])["BBB"]["Close"].iloc[0] == 101
    single = frame["AAA"]
    assert list(split_download(single, ["AAA"])) == ["AAA"]


def test_yfinance_fetch_normalizes_frames_and_reports_missing_symbols():
    calls = []

    def downloader(**kwargs):
        calls.append(kwargs)
        return _yf_frame(["AAA", "BBB"])

    result = (
        _source()
        .with_downloader(downloader)
        .fetch(dict.fromkeys(["AAA", "BBB", "GONE"], dt.date(2024, 1, 1)), dt.date(2024, 1, 31))
    )
    assert calls[0]["auto_adjust"] is False and calls[0]["end"] == "2024-02-01"
    assert len(result.bars["AAA"]) == 5 and result.bars["AAA"]["close"].iloc[0] == 100
    assert "GONE" in result.errors and "no columns" in result.errors["GONE"]


def test_yfinance_retries_a_transient_failure_then_succeeds():
    attempts = []

    def flaky(**kwargs):
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("HTTP Error 429: Too Many Requests")
        return _yf_frame(["AAA"])

    result = (
        _source(max_retries=3)
        .with_downloader(flaky)
        .fetch({"AAA": dt.date(2024, 1, 1)}, dt.date(2024, 1, 31))
    )
    assert len(attempts) == 3
    assert len(result.bars["AAA"]) == 5 and result.errors == {}


def test_yfinance_empty_answers_exhaust_retries_and_name_every_symbol():
    attempts = []

    def empty(**kwargs):
        attempts.append(1)
        return pd.DataFrame()

    result = (
        _source(max_retries=2)
        .with_downloader(empty)
        .fetch(dict.fromkeys(["AAA", "BBB"], dt.date(2024, 1, 1)), dt.date(2024, 1, 31))
    )
    assert len(attempts) == 3
    assert result.bars == {}
    assert set(result.errors) == {"AAA", "BBB"} and "empty frame" in result.errors["AAA"]


def test_yfinance_hung_call_is_cut_by_our_own_timeout():
    release = threading.Event()

    def hangs(**kwargs):
        release.wait(10)
        return _yf_frame(["AAA"])

    result = (
        _source(max_retries=0, timeout_seconds=0.2)
        .with_downloader(hangs)
        .fetch({"AAA": dt.date(2024, 1, 1)}, dt.date(2024, 1, 31))
    )
    release.set()
    assert "did not answer within" in result.errors["AAA"]


def test_yfinance_universe_file_is_validated(tmp_path):
    good = tmp_path / "u.txt"
    good.write_text("# comment\nAAPL\nbrk-b  # Berkshire\n\n")
    assert YFinanceSource(symbols_file=str(good)).available_symbols() == ["AAPL", "BRK-B"]


def test_csv_tail_read_returns_exactly_the_rows_since_start(tmp_path):
    from stage2_assets.resources.market_data import read_tail_rows

    full = _bars(3000, start="2000-01-03")
    path = write_csv(tmp_path, "LONG", full)
    for start in ["2011-06-01", "2000-01-03", "1999-01-01", "2011-07-01", "2030-01-01"]:
        rows = read_tail_rows(path, dt.date.fromisoformat(start))
        assert [r[0] for r in rows] == full.loc[full["date"] >= start, "date"].tolist()
    source = CsvSource(folder=str(tmp_path))
    recent = source.fetch({"LONG": dt.date(2011, 6, 1)}, dt.date(2020, 1, 1)).bars["LONG"]
    assert recent["close"].tolist() == pytest.approx(
        full.loc[full["date"] >= "2011-06-01", "close"].tolist()
    )
    # a quoted field (here the last row's date) is read by the csv module's rules, the same rows
    lines = path.read_text().splitlines()
    day, rest = lines[-1].split(",", 1)
    path.write_text("\n".join([*lines[:-1], f'"{day}",{rest}']) + "\n")
    quoted = read_tail_rows(path, dt.date(2011, 6, 1))
    assert quoted[-1] == [day, *rest.split(",")]
    assert len(quoted) == (full["date"] >= "2011-06-01").sum()


def test_csv_listing_sees_a_file_added_or_removed_after_the_last_listing(tmp_path):
    """The folder's listing is reused while its entries are unchanged, and read again when a file
    is added or removed (the folder's modification time moves)."""
    write_csv(tmp_path, "AAA", _bars(5))
    source = CsvSource(folder=str(tmp_path))
    assert source.listing().symbols == ["AAA"]
    write_csv(tmp_path, "BBB", _bars(5))
    (tmp_path / "b b.csv").write_text("date\n")
    assert source.listing().symbols == ["AAA", "BBB"]
    assert [r["file"] for r in source.listing().refused] == ["b b.csv"]
    (tmp_path / "AAA.csv").unlink()
    fetched = source.fetch(
        {"AAA": dt.date(2024, 1, 1), "BBB": dt.date(2024, 1, 1)}, dt.date(2024, 2, 1)
    )
    assert "no file AAA.csv" in fetched.errors["AAA"] and len(fetched.bars["BBB"]) == 5


def test_a_fetch_delivers_one_long_frame_until_a_frame_is_replaced(tmp_path):
    """The CSV source cuts per-symbol frames only when one is read: the delivery is its long
    frame while no frame with rows is set or removed, and joins the frames again after."""
    for symbol, start in [("AAA", "2024-01-02"), ("BBB", "2024-01-03")]:
        write_csv(tmp_path, symbol, _bars(6, start=start))
    write_csv(tmp_path, "OLD", _bars(3, start="2020-01-02"))
    result = CsvSource(folder=str(tmp_path)).fetch(
        dict.fromkeys(["AAA", "BBB", "OLD"], dt.date(2024, 1, 4)), dt.date(2024, 1, 31)
    )
    joined = result.delivered()
    assert result.row_counts() == {"AAA": 4, "BBB": 5, "OLD": 0}
    assert joined["symbol"].tolist() == ["AAA"] * 4 + ["BBB"] * 5
    assert joined["date"].min() == pd.Timestamp("2024-01-04")  # clipped to the start
    assert joined is result.bars.joined  # the frame the source normalized, not joined again
    result.bars["NEW"] = result.bars["OLD"]  # an empty frame changes nothing delivered
    assert result.delivered() is joined
    pd.testing.assert_frame_equal(result.bars["BBB"], joined.iloc[4:].reset_index(drop=True))
    result.bars["AAA"] = result.bars["AAA"].iloc[:2]  # replaced: joined again from the frames
    assert result.delivered()["symbol"].tolist() == ["AAA"] * 2 + ["BBB"] * 5
    del result.bars["BBB"]
    assert result.delivered()["symbol"].tolist() == ["AAA"] * 2
    assert list(result.bars) == ["AAA", "OLD", "NEW"]


def test_csv_out_of_date_order_is_read_whole(tmp_path):
    from stage2_assets.resources.market_data import read_tail_rows

    full = _bars(3000, start="2000-01-03")
    path = write_csv(tmp_path, "MIXED", full.iloc[::-1])  # newest first
    assert read_tail_rows(path, dt.date(2011, 6, 1)) is None
    result = CsvSource(folder=str(tmp_path)).fetch(
        {"MIXED": dt.date(2011, 6, 1)}, dt.date(2020, 1, 1)
    )
    assert result.bars["MIXED"]["date"].min() == pd.Timestamp("2011-06-01")
    assert len(result.bars["MIXED"]) == (full["date"] >= "2011-06-01").sum()


def test_an_explosive_momentum_is_refused():
    spec = MarketSpec(
        seed=1,
        num_symbols=1,
        start_date=dt.date(2023, 1, 3),
        regimes=[RegimeSpec(dt.date(2023, 1, 3), 0.0, 0.01, 0.4)],
    )
    with pytest.raises(ValueError, match=r"\|momentum\| must stay below 0.2"):
        simulate_bars(spec, spec.symbols, dt.date(2023, 6, 30))


def test_a_row_with_more_fields_than_the_header_is_refused_not_raised(tmp_path):
    """Found by the fuzzed CSV battery: pandas turned the extra fields into an index and normalization raised."""
    (tmp_path / "RAGGED.csv").write_text("date,open,high,low,close,volume\n,0.0,0.0,0.0,,,,\n")
    # valid values with one field too many: refused, not silently truncated
    (tmp_path / "EXTRA.csv").write_text(
        "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,1,100,7\n"
    )
    result = CsvSource(folder=str(tmp_path)).fetch(
        {"RAGGED": START, "EXTRA": START}, dt.date(2024, 12, 31)
    )
    assert result.bars == {}
    assert result.errors["RAGGED"].startswith("RAGGED:")
    assert result.errors["EXTRA"].startswith("EXTRA: EXTRA.csv cannot be parsed")


def test_the_simulated_market_moves_together_by_its_configured_factor_share():
    """Between-day share of the label variance: 2/pi * arcsin(rho) for a pairwise correlation rho
    of the returns, which a market factor carrying 30% of the variance (no sector) puts at 0.19."""
    import numpy as np

    from stage2_assets.stats.streams import between_day_share

    spec = MarketSpec(
        seed=3,
        num_symbols=60,
        start_date=dt.date(2023, 1, 3),
        regimes=[RegimeSpec(dt.date(2023, 1, 3), 0.0, 0.012, 0.0)],
        market_share=0.3,
    )
    bars = simulate_bars(spec, spec.symbols, dt.date(2024, 12, 31)).sort_values(["symbol", "date"])
    ret = np.log(bars["close"]).groupby(bars["symbol"]).diff()
    up = (ret.dropna() > 0).astype(float)
    share = between_day_share(up, bars.loc[up.index, "date"])
    assert share == pytest.approx(2 / np.pi * np.arcsin(0.3), abs=0.04)
    flat = MarketSpec(**{**spec.__dict__, "market_share": 0.0})
    bars0 = simulate_bars(flat, flat.symbols, dt.date(2024, 12, 31)).sort_values(["symbol", "date"])
    ret0 = np.log(bars0["close"]).groupby(bars0["symbol"]).diff().dropna()
    assert between_day_share((ret0 > 0).astype(float), bars0.loc[ret0.index, "date"]) < 0.04


def _momentum_corr(bars: pd.DataFrame, start: str, end: str) -> float:
    r = np.log(bars["close"]).groupby(bars["symbol"]).diff()
    past5 = r.groupby(bars["symbol"]).transform(lambda s: s.shift(1).rolling(5).sum())
    frame = bars.assign(r=r, past5=past5).dropna()
    part = frame[(frame["date"] >= start) & (frame["date"] < end)]
    return part["r"].corr(part["past5"])


def test_episodes_plant_bad_weeks_that_pass_for_normal_bars():
    """A transient flips the signal for its sessions only; label noise removes it; a stale feed
    repeats the previous sessions' bars, re-dated. Before an episode the bars are untouched."""
    steady = dataclasses.replace(
        SPEC,
        num_symbols=40,
        regimes=[RegimeSpec(dt.date(2023, 1, 3), 0.0, 0.012, 0.15)],
    )
    episodes = (
        EpisodeSpec("transient", dt.date(2023, 5, 1), 40, momentum=-0.15),
        EpisodeSpec("label_noise", dt.date(2023, 8, 1), 40),
        EpisodeSpec("stale_feed", dt.date(2023, 11, 1), 5),
    )
    plain = simulate_bars(steady, steady.symbols, dt.date(2023, 12, 29))
    bad = simulate_bars(
        dataclasses.replace(steady, episodes=episodes), steady.symbols, dt.date(2023, 12, 29)
    )
    before = bad["date"] < "2023-05-01"
    pd.testing.assert_frame_equal(
        bad[before].reset_index(drop=True), plain[before].reset_index(drop=True)
    )
    assert _momentum_corr(bad, "2023-01-15", "2023-05-01") > 0.15
    assert _momentum_corr(bad, "2023-05-08", "2023-06-26") < -0.15  # the transient, 40 sessions
    assert abs(_momentum_corr(bad, "2023-08-08", "2023-09-26")) < 0.06  # label noise: no signal
    assert _momentum_corr(bad, "2023-10-01", "2023-10-31") > 0.15  # the regime resumed
    one = bad[bad["symbol"] == steady.symbols[0]].reset_index(drop=True)
    at = int(one.index[one["date"] == pd.Timestamp("2023-11-01")][0])
    columns = ["open", "high", "low", "close", "volume"]
    np.testing.assert_array_equal(
        one.loc[at : at + 4, columns].to_numpy(), one.loc[at - 5 : at - 1, columns].to_numpy()
    )
    assert list(one.loc[at : at + 4, "date"]) == sorted(
        set(one.loc[at : at + 4, "date"])
    )  # re-dated, in order
    assert (one.loc[at + 5 :, "close"] != one.loc[at : at + 4, "close"].iloc[-1]).all()


def test_an_unknown_episode_kind_is_refused():
    spec = dataclasses.replace(SPEC, episodes=(EpisodeSpec("meteor", dt.date(2023, 5, 1), 5),))
    with pytest.raises(
        ValueError, match="unknown episode 'meteor'; known: transient, label_noise, stale_feed"
    ):
        simulate_bars(spec, spec.symbols, dt.date(2023, 6, 30))


def test_csv_text_becomes_the_numbers_and_days_pandas_makes_of_it():
    """Prices and dates read as text are parsed on a fast path where it gives pandas' own values,
    bit for bit: a stored bar parsed by pandas before must compare equal, or every overlap day
    would read as a revision. Long numbers (pandas rounds them in the last place unlike numpy),
    blanks, words, exponents and impossible or out-of-range days take pandas' path."""
    from stage2_assets.market.bars import _iso_days, _numbers

    rng = np.random.default_rng(7)
    digits = rng.integers(0, 10**9, size=20_000)
    short = pd.Series([f"{d / 10 ** (d % 7):.{d % 7}f}" for d in digits], dtype=object)
    assert short.str.len().max() <= 15
    assert np.array_equal(
        _numbers(short).view("int64"),
        pd.to_numeric(short, errors="coerce").to_numpy(dtype="float64").view("int64"),
    )
    # pandas' value, not numpy's correctly rounded one, for a 17-digit price
    odd = pd.Series(["50889957.903289218", "12.5", "", "1_000", "1e3", "-0", "n/a"], dtype=object)
    parsed = _numbers(odd)
    assert parsed[0] == pd.to_numeric(odd, errors="coerce")[0] != float("50889957.903289218")
    assert parsed[1] == 12.5 and parsed[4] == 1000.0
    assert np.isnan(parsed[[2, 3, 6]]).all() and np.signbit(parsed[5])

    days = pd.Series(["2019-12-27", "2020-01-02", "2020-02-28"], dtype=object)
    assert _iso_days(days).tolist() == pd.to_datetime(days, format="ISO8601").tolist()
    for other in ("2019-02-30", "9999-12-31", "2019-1-02", "2019-12-27T10:00", "20191227"):
        assert _iso_days(pd.Series(["2019-12-27", other], dtype=object)) is None


def test_a_first_or_last_day_beyond_pandas_range_keeps_the_days_it_should():
    """Starts and ends far outside pandas' nanosecond range (1677-2262), as a fuzzer or a
    "everything" request gives them, keep exactly the days inside them."""
    from stage2_assets.market.bars import normalize_long

    days = ["1700-01-04", "2000-01-03", "2250-01-04"]
    data = pd.DataFrame({"symbol": "A", "date": days, **{c: "1" for c in _PRICE_AND_VOLUME}})

    def kept(start, end):
        bars, errors = normalize_long(data, "csv", {"A": start}, end)
        assert errors == {}
        return [d.date().isoformat() for d in bars["A"]["date"]]

    assert kept(dt.date(1600, 1, 1), dt.date(2300, 1, 1)) == days
    assert kept(dt.date(1700, 1, 4), dt.date(2000, 1, 3)) == days[:2]
    assert kept(dt.date(2000, 1, 4), None) == days[2:]
    assert kept(dt.date(2270, 1, 1), dt.date(2300, 1, 1)) == []
    assert kept(dt.date(1600, 1, 1), dt.date(1650, 1, 1)) == []


_PRICE_AND_VOLUME = ("open", "high", "low", "close", "volume")
