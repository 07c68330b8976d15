"""The incremental raw store: only new or revised bars are written, sources never mix."""

import datetime as dt

import pandas as pd
import pytest

from stage2_assets.errors import SourceMismatchError
from stage2_assets.market.refresh import (
    ensure_same_source,
    plan_starts,
    store_fetched,
    summarize_log,
)
from stage2_assets.resources.market_data import CsvSource
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.conftest import write_csv
from stage2_assets_tests.test_market_data_sources import _bars

HISTORY = dt.date(2023, 1, 1)


def _refresh(warehouse: Warehouse, source: CsvSource, as_of: dt.date, run_id: str) -> dict:
    with warehouse.connect() as conn:
        ensure_same_source(conn, source.kind, warehouse.database)
        starts = plan_starts(conn, source.available_symbols(), HISTORY, 5, as_of)
        log = store_fetched(conn, source.fetch(starts, as_of), starts, source.kind, run_id, as_of)
    return summarize_log(log)


def _count(warehouse: Warehouse, sql: str = "SELECT count(*) FROM raw_bars"):
    with warehouse.connect(read_only=True) as conn:
        return conn.execute(sql).fetchone()[0]


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "csv"
    write_csv(folder, "AAA", _bars(30))
    write_csv(folder, "BBB", _bars(30))
    return Warehouse(database=str(tmp_path / "wh.duckdb")), CsvSource(folder=str(folder)), folder


def test_first_refresh_loads_history_up_to_the_as_of_date(store):
    warehouse, source, _ = store
    summary = _refresh(warehouse, source, dt.date(2024, 1, 31), "r1")
    assert summary["new"] == 44  # 22 sessions of January 2024 per symbol, as far as the files go
    assert _count(warehouse, "SELECT max(date) FROM raw_bars") == dt.date(2024, 1, 31)


def test_second_refresh_with_no_new_data_writes_nothing_new(store):
    warehouse, source, _ = store
    _refresh(warehouse, source, dt.date(2024, 2, 12), "r1")
    with warehouse.connect(read_only=True) as conn:
        before = conn.execute("SELECT * FROM raw_bars ORDER BY symbol, date").df()
    summary = _refresh(warehouse, source, dt.date(2024, 2, 12), "r2")
    with warehouse.connect(read_only=True) as conn:
        after = conn.execute("SELECT * FROM raw_bars ORDER BY symbol, date").df()
    assert summary["new"] == 0 and summary["revised"] == 0 and summary["fetched"] > 0
    pd.testing.assert_frame_equal(before, after)  # same rows, same run ids: nothing rewritten
    assert _count(warehouse, "SELECT count(DISTINCT run_id) FROM refresh_log") == 2


def test_five_new_days_fetch_and_insert_only_those(store):
    warehouse, source, _ = store
    _refresh(warehouse, source, dt.date(2024, 2, 5), "r1")
    before = _count(warehouse)
    summary = _refresh(warehouse, source, dt.date(2024, 2, 12), "r2")
    assert summary["new"] == 10  # 5 sessions x 2 symbols
    assert _count(warehouse) == before + 10
    assert _count(warehouse, "SELECT count(*) FROM raw_bars WHERE run_id = 'r2'") == 10
    # the overlap asked for a few days before the last stored bar, not the whole history
    assert _count(
        warehouse, "SELECT min(requested_start) FROM refresh_log WHERE run_id = 'r2'"
    ) == dt.date(2024, 1, 31)


def test_a_revised_bar_is_replaced_and_counted(store):
    warehouse, source, folder = store
    _refresh(warehouse, source, dt.date(2024, 2, 12), "r1")
    revised = _bars(30)
    revised.loc[27, "close"] = 10.9  # the provider corrects 2024-02-08
    write_csv(folder, "AAA", revised)
    summary = _refresh(warehouse, source, dt.date(2024, 2, 12), "r2")
    assert summary["revised"] == 1 and summary["new"] == 0
    assert (
        _count(warehouse, "SELECT close FROM raw_bars WHERE symbol = 'AAA' AND date = '2024-02-08'")
        == 10.9
    )
    assert (
        _count(
            warehouse, "SELECT count(*) FROM raw_bars WHERE symbol = 'AAA' AND date = '2024-02-08'"
        )
        == 1
    )


def test_a_failing_symbol_is_logged_and_the_others_go_on(store):
    warehouse, source, folder = store
    write_csv(folder, "CCC", _bars(30).drop(columns=["volume"]))
    summary = _refresh(warehouse, source, dt.date(2024, 2, 12), "r1")
    assert summary["failed_symbols"] == ["CCC"]
    assert "missing column(s) volume" in summary["errors"]["CCC"]
    assert _count(warehouse, "SELECT count(DISTINCT symbol) FROM raw_bars") == 2


def test_another_source_is_refused_and_nothing_changes(store, tmp_path):
    warehouse, source, _ = store
    _refresh(warehouse, source, dt.date(2024, 2, 12), "r1")
    rows = _count(warehouse)
    with (
        warehouse.connect() as conn,
        pytest.raises(SourceMismatchError, match="holds bars from source 'csv'.*'simulated'"),
    ):
        ensure_same_source(conn, "simulated", warehouse.database)
    assert _count(warehouse) == rows


def test_a_failed_write_leaves_the_store_as_it_was(store, monkeypatch):
    warehouse, source, _ = store
    _refresh(warehouse, source, dt.date(2024, 2, 5), "r1")
    rows = _count(warehouse)
    import stage2_assets.market.refresh as refresh

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(refresh, "_log_rows", broken)
    with pytest.raises(OSError, match="disk full"):
        _refresh(warehouse, source, dt.date(2024, 2, 12), "r2")
    assert _count(warehouse) == rows
    assert _count(warehouse, "SELECT count(*) FROM refresh_log WHERE run_id = 'r2'") == 0


def test_a_quarantined_history_fetched_whole_is_compared_by_its_rows_and_copies(store):
    """A quarantined symbol is fetched whole every run. An unchanged file stores nothing and moves
    nothing (its history is recognised as the stored one, duplicate day included); a file whose
    two copies of a day both changed, to one new value, is a revision of that day: an
    order-free digest that cancels pairs (XOR) would see no change there."""
    warehouse, source, folder = store
    bars = _bars(30)
    twice = pd.concat([bars, bars.iloc[[7]]]).sort_values("date", kind="stable")
    write_csv(folder, "AAA", twice)  # 2024-01-11 delivered twice, as CBS delivers a day
    _refresh(warehouse, source, dt.date(2024, 2, 12), "r1")
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO quarantine (symbol, reasons, since, run_id) "
            "VALUES ('AAA', '[]', TIMESTAMP '2024-02-12 18:00', 'g1')"
        )
        before = conn.execute("SELECT * FROM raw_bars ORDER BY symbol, date, run_id").df()
    summary = _refresh(warehouse, source, dt.date(2024, 2, 12), "r2")
    with warehouse.connect(read_only=True) as conn:
        after = conn.execute("SELECT * FROM raw_bars ORDER BY symbol, date, run_id").df()
        logged = conn.execute(
            "SELECT symbol, requested_start, fetched, new, revised, first_date, last_date "
            "FROM refresh_log WHERE run_id = 'r2' ORDER BY symbol"
        ).fetchall()
    pd.testing.assert_frame_equal(before, after)
    assert summary["new"] == 0 and summary["revised"] == 0
    assert logged[0] == ("AAA", HISTORY, 31, 0, 0, dt.date(2024, 1, 2), dt.date(2024, 2, 12))
    assert logged[1][:2] == ("BBB", dt.date(2024, 2, 7))  # the overlap only
    assert _count(warehouse, "SELECT count(*) FROM raw_bars_replaced") == 0

    changed = twice.copy()
    changed.loc[changed["date"] == "2024-01-11", "close"] = 10.25  # both copies, one new close
    write_csv(folder, "AAA", changed)
    summary = _refresh(warehouse, source, dt.date(2024, 2, 12), "r3")
    assert summary["revised"] == 1 and summary["new"] == 0
    day = "symbol = 'AAA' AND date = '2024-01-11'"
    with warehouse.connect(read_only=True) as conn:
        stored = conn.execute(f"SELECT close, run_id FROM raw_bars WHERE {day}").fetchall()
        moved = conn.execute(f"SELECT close FROM raw_bars_replaced WHERE {day}").fetchall()
    assert stored == [(10.25, "r3"), (10.25, "r3")]
    assert moved == [(pytest.approx(bars.loc[7, "close"]),)] * 2
    assert _count(warehouse, "SELECT count(*) FROM raw_bars WHERE symbol = 'AAA'") == 31
