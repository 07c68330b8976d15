"""The Great Expectations suite finds every wart the real data is documented to have."""

import datetime as dt

import pandas as pd
import pytest

from stage2_assets.checks.quality_suite import validate_bars
from stage2_assets.resources.market_data import CsvSource
from stage2_assets_tests.test_market_data_sources import _bars

TODAY = dt.date(2026, 1, 1)


def _frame(days=10, symbol="AAA"):
    bars = _bars(days).assign(symbol=symbol, source="csv")
    bars["date"] = pd.to_datetime(bars["date"])
    return bars


def _validate(pending, context=None):
    return validate_bars(
        pending, context if context is not None else pending.iloc[0:0], TODAY, 0.4, 5
    )


@pytest.fixture(scope="module")
def real_report(request):
    from stage2_assets_tests.conftest import MARKET_DATA

    if not MARKET_DATA.is_dir():
        pytest.skip(f"real market data not found at {MARKET_DATA}")
    source = CsvSource(folder=str(MARKET_DATA))
    fetched = source.fetch(
        dict.fromkeys(source.available_symbols(), dt.date(2015, 1, 1)), dt.date(2020, 1, 10)
    )
    bars = pd.concat(fetched.bars.values(), ignore_index=True)
    return validate_bars(bars, bars.iloc[0:0], TODAY, 0.4, 5)


def test_real_data_errors_are_the_documented_warts(real_report):
    # One duplicate date with a zero-price row (CBS) and one open outside [low, high] (DIS).
    assert real_report.failed == ["CBS", "DIS"]
    assert any("[unique_days]" in r for r in real_report.errors["CBS"])
    assert any("[close_positive]" in r for r in real_report.errors["CBS"])
    assert real_report.errors["DIS"] == [
        "high is below open: 1 row(s), first 2020-01-10 [high_above_open]"
    ]
    assert len(real_report.rows) == 150
    assert real_report.expectations == 19  # rules judged, each once


def test_real_data_warnings_flag_splits_and_gaps(real_report):
    moves = {
        s for s, w in real_report.warnings.items() if any("[daily_move_bounded]" in x for x in w)
    }
    gaps = {s for s, w in real_report.warnings.items() if any("[no_long_gaps]" in x for x in w)}
    assert moves == {"CA", "UA", "CBS"}  # the three moves above 40%
    assert {"ANDV", "CA", "SNI", "SCG"} <= gaps
    gap_rows = sum(
        int(x.split(": ")[1].split(" ")[0])
        for w in real_report.warnings.values()
        for x in w
        if "[no_long_gaps]" in x
    )
    assert (
        gap_rows == 6
    )  # ANDV, CA and SNI miss Jan-Mar 2018 once each; SCG is sparse (3 gaps over 5 sessions)


@pytest.mark.parametrize(
    ("fault", "rule"),
    [
        (lambda b: b.assign(close=b["close"].where(b.index != 3)), "[close_present]"),
        (lambda b: b.assign(low=b["low"].where(b.index != 3, -1.0)), "[low_positive]"),
        (lambda b: b.assign(volume=b["volume"].where(b.index != 3, -5)), "[volume_not_negative]"),
        (lambda b: b.assign(high=b["high"].where(b.index != 3, 1.0)), "[high_above_close]"),
        (lambda b: b.assign(low=b["low"].where(b.index != 3, 99.0)), "[low_below_open]"),
        (lambda b: pd.concat([b, b.iloc[[4]]], ignore_index=True), "[unique_days]"),
        (
            lambda b: b.assign(date=b["date"].where(b.index != 9, pd.Timestamp("2030-01-02"))),
            "[no_future_dates]",
        ),
    ],
)
def test_each_error_rule_quarantines_the_symbol(fault, rule):
    good = _frame(symbol="GOOD")
    report = _validate(pd.concat([good, fault(_frame(symbol="BAD"))], ignore_index=True))
    assert report.failed == ["BAD"]
    assert any(rule in reason for reason in report.errors["BAD"])


def test_zero_volume_is_normal_life_not_an_error():
    report = _validate(_frame().assign(volume=0.0))
    assert report.errors == {} and report.warnings == {}


def test_context_row_anchors_moves_but_is_never_judged():
    history = _frame(20)
    context = history.iloc[[9]].assign(
        high=0.0
    )  # a bad row already validated earlier: not re-judged
    pending = history.iloc[10:].copy()
    pending.loc[pending.index[0], ["open", "high", "low", "close"]] = [
        4.0,
        4.2,
        3.9,
        4.0,
    ]  # -60% vs context
    report = _validate(pending, context)
    assert report.errors == {}
    assert report.rows == {"AAA": 10}
    assert report.warnings["AAA"] == [
        "one-day move above 40% (split or bad print): 2 row(s), first 2024-01-16 [daily_move_bounded]"
    ]


def test_a_missing_value_is_reported_missing_and_never_out_of_bounds():
    """The bounded and ordering rules (volume, moves, price scale, gaps, high and low against open
    and close) pass over a value that is missing, as Great Expectations' bound expectations do:
    the presence rules report it, once."""
    bars = _frame(symbol="AAA")
    bars.loc[3, "volume"] = float("nan")
    bars.loc[5, "close"] = float("nan")  # no move nor price ratio into bar 5, nor out of it
    report = _validate(bars)
    assert report.errors["AAA"] == [
        "close is missing: 1 row(s), first 2024-01-09 [close_present]",
        "volume is missing: 1 row(s), first 2024-01-05 [volume_present]",
    ]
    assert report.warnings == {}


def test_a_large_load_judged_in_groups_of_symbols_gives_the_same_verdicts(real_report, monkeypatch):
    """The real data judged about 20 symbols at a time: the same errors, warnings and spans."""
    from stage2_assets.checks import quality_suite
    from stage2_assets_tests.conftest import MARKET_DATA

    source = CsvSource(folder=str(MARKET_DATA))
    fetched = source.fetch(
        dict.fromkeys(source.available_symbols(), dt.date(2015, 1, 1)), dt.date(2020, 1, 10)
    )
    bars = pd.concat(fetched.bars.values(), ignore_index=True)
    monkeypatch.setattr(quality_suite, "JUDGE_CHUNK_ROWS", 25_000)
    groups = list(
        quality_suite._symbol_chunks(quality_suite.prepare(bars, bars.iloc[0:0], TODAY), 25_000)
    )
    assert len(groups) > 5  # it did judge in groups, each of whole symbols
    assert all(len(g) <= 25_000 for g in groups)
    assert sum(len(g) for g in groups) == len(bars)
    assert len({s for g in groups for s in g["symbol"].unique()}) == bars["symbol"].nunique()
    grouped = validate_bars(bars, bars.iloc[0:0], TODAY, 0.4, 5)
    assert grouped.errors == real_report.errors
    assert grouped.warnings == real_report.warnings
    assert grouped.rows == real_report.rows and grouped.date_range == real_report.date_range


def test_a_price_is_positive_from_the_smallest_positive_double_and_zero_of_either_sign_is_not():
    """The positivity rules are judged as ``price >= the smallest positive double`` beside the
    other order rules: exactly ``price > 0`` for every double, signed zeros, infinity included."""
    bars = _frame(symbol="AAA")
    bars.loc[2, "low"] = 5e-324  # the smallest positive double: positive
    bars.loc[4, "low"] = 0.0
    bars.loc[6, "low"] = -0.0
    bars.loc[8, "high"] = float("inf")  # positive (and above every other price)
    errors = _validate(bars).errors["AAA"]
    assert [e for e in errors if "_positive]" in e] == [
        "low is zero or negative: 2 row(s), first 2024-01-08 [low_positive]"
    ]
    assert not any("high_positive" in e for e in errors)


def test_an_expectation_built_once_is_configured_again_when_a_field_is_set():
    """The suite's expectations build their configuration once (Great Expectations reads it
    about 290 times a validation), and anew after a field is set: the suite sets meta and id
    after building them, and a stale configuration would drop them."""
    from stage2_assets.checks.quality_suite import _expectation_classes

    in_order, present = _expectation_classes()
    expectation = in_order(column_A="upper", column_B="lower", or_equal=True)
    first = expectation.configuration
    assert expectation.configuration is first  # built once
    assert first.type == "expect_stacked_sides_in_order" and first.kwargs["or_equal"] is True
    expectation.meta = {"check": 3}
    expectation.id = "abc"
    again = expectation.configuration
    assert again is not first and again.meta == {"check": 3} and again.id == "abc"
    assert "_configured" not in expectation.dict()  # not a field of the expectation
    assert present(column="upper").configuration.kwargs == {"column": "upper"}
