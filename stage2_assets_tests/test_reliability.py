"""Hardening: concurrent cycles (more of the battery in later work)."""

import subprocess
import sys
import time

import pandas as pd
import pytest

from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.conftest import count, make_project, subprocess_env

pytestmark = pytest.mark.reliability

TINY = {"retraining": {"num_models": 2, "max_epochs": 3, "hidden_units": 8, "min_train_rows": 200}}


def _weekly_command(settings, as_of: str) -> list[str]:
    """``stage2 weekly`` as a child process, so that it can be raced or killed."""
    config = str(settings.config_path)
    return [
        sys.executable,
        "-m",
        "stage2_assets.cli",
        "--config",
        config,
        "weekly",
        "--as-of",
        as_of,
    ]


def test_two_weekly_cycles_at_once_one_runs_one_is_refused(tmp_path):
    settings, home = make_project(tmp_path, TINY)
    env = subprocess_env(home)
    command = _weekly_command(settings, "2025-06-27")
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    second = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    results = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "another stage2 command is changing" in refused and "nothing changed" in refused
    store = ModelStore(root=str(settings.models_path))
    assert len(store.versions()) == 1  # one version per cut-off
    assert store.production() in (
        None,
        store.versions()[0],
    )  # the pointer names a complete version or none
    store.verify(store.versions()[0])
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        (rows, distinct) = conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, date)) FROM raw_bars"
        ).fetchall()[0]
    count("concurrent weekly cycles raced (one refused)")
    assert rows == distinct == 6 * 373  # 373 NYSE sessions 2024-01-02..2025-06-27, each stored once


KILLED = []


@pytest.mark.parametrize(
    "point", ["refresh_insert", "gx_validation", "training", "version_write", "pointer_swap"]
)
def test_a_kill_at_each_stage_leaves_consistent_stores_and_the_next_run_completes(tmp_path, point):
    from stage2_assets.faults import POINTS
    from stage2_assets_tests.test_adaptation_loop import REGIME_FLIP

    assert point in POINTS
    settings, home = make_project(tmp_path, REGIME_FLIP)
    env = subprocess_env(home)
    command = _weekly_command(settings, "2024-12-27")

    crashed = subprocess.run(
        command, env={**env, "STAGE2_FAULT": point}, capture_output=True, text=True, timeout=300
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]  # SIGKILL: no cleanup ran
    KILLED.append(point)
    count("kill points survived (SIGKILL, then a clean run)")

    store = ModelStore(root=str(settings.models_path))
    for version in store.versions():  # no partial version is visible
        store.verify(version)
    assert store.production() is None or store.verify(store.production())
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        raw, logged = conn.execute(
            "SELECT (SELECT count(*) FROM raw_bars), (SELECT count(*) FROM refresh_log)"
        ).fetchall()[0]
    if point == "refresh_insert":
        assert (raw, logged) == (0, 0)  # the open transaction was rolled back whole

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert store.production() is not None and store.verify(store.production())
    # the killed run no longer looks in progress, to the schedules or anyone
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = [r.status for r in instance.get_runs()]
    assert dg.DagsterRunStatus.STARTED not in statuses
    assert dg.DagsterRunStatus.FAILURE in statuses
    # a dead writer's half-written version or pointer link is swept by the next write
    leftovers = [
        p.name for p in store.path.rglob(".*") if p.name.startswith((".tmp-", ".production-"))
    ]
    assert leftovers == []
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        (rows, distinct) = conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, date)) FROM validated_bars"
        ).fetchall()[0]
    assert rows == distinct > 0
    print(f"kill points survived so far: {len(KILLED)} ({', '.join(KILLED)})")


def test_provider_faults_are_quarantined_or_reported_and_the_rest_advances(tmp_path):
    import datetime as dt

    from stage2_assets.config import QualityRules
    from stage2_assets.market.refresh import plan_starts, store_fetched
    from stage2_assets.market.validation import apply_passing, evaluate_quality
    from stage2_assets.resources.market_data import YFinanceSource
    from stage2_assets_tests.test_market_data_sources import _yf_frame

    symbols = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "JJJ"]
    full = _yf_frame(symbols, days=30)  # 2024-01-02 .. 2024-02-12
    faulty = {"on": False}

    def downloader(tickers, start, end, **kwargs):
        frame = full[(full.index >= start) & (full.index < end)]
        if faulty["on"]:
            frame = frame.copy()
            frame[("AAA", "Close")] *= 100  # prices in cents
            frame[("AAA", "Open")] *= 100
            frame[("AAA", "High")] *= 100
            frame[("AAA", "Low")] *= 100
            frame.columns = pd.MultiIndex.from_tuples(  # CCC's close arrives under another name
                [("CCC", "Last") if col == ("CCC", "Close") else col for col in frame.columns]
            )
            frame = frame.drop(columns="DDD", level=0)  # a partial answer
            bbb = (
                frame["BBB"][["Volume", "Low", "Open", "Close", "High", "Adj Close"]]
                if "Close" in frame["BBB"]
                else None
            )
            if bbb is not None:
                frame = frame.drop(columns="BBB", level=0).join(pd.concat({"BBB": bbb}, axis=1))
        return frame

    source = YFinanceSource(
        symbols_file="unused", backoff_seconds=0, max_retries=0
    ).with_downloader(downloader)
    warehouse = Warehouse(database=str(tmp_path / "wh.duckdb"))

    def refresh(as_of, run_id):
        with warehouse.connect() as conn:
            starts = plan_starts(conn, symbols, dt.date(2024, 1, 1), 5, as_of)
            log = store_fetched(
                conn, source.fetch(starts, as_of), starts, "yfinance", run_id, as_of
            )
            report, _ = evaluate_quality(conn, run_id, QualityRules())
            apply_passing(conn, report, run_id)
        return log, report

    refresh(dt.date(2024, 1, 31), "r1")
    with warehouse.connect(read_only=True) as conn:
        before = dict(
            conn.execute("SELECT symbol, max(date) FROM validated_bars GROUP BY symbol").fetchall()
        )
    faulty["on"] = True
    log, report = refresh(dt.date(2024, 2, 12), "r2")
    with warehouse.connect(read_only=True) as conn:
        after = dict(
            conn.execute("SELECT symbol, max(date) FROM validated_bars GROUP BY symbol").fetchall()
        )
    errors = dict(zip(log["symbol"], log["error"], strict=True))
    assert "missing column(s) close" in errors["CCC"]
    assert "no columns" in errors["DDD"]
    assert report.failed == ["AAA"] and any(
        "[price_scale_consistent]" in r for r in report.errors["AAA"]
    )
    for symbol in ("AAA", "CCC", "DDD"):  # the store is unchanged for the affected symbols
        assert after[symbol] == before[symbol] == dt.date(2024, 1, 31)
    for symbol in ("BBB", "EEE", "JJJ"):  # shuffled columns are read by name; the rest advance
        assert after[symbol] == dt.date(2024, 2, 12)
    count("provider faults injected in one refresh (x100, shuffled, renamed, missing)", 4)


FUZZ_CASES = []


def _csv_texts():
    """Half garbage files, half well-formed files with hostile values (the ones that reach the gate)."""
    import datetime as dt

    from hypothesis import strategies as st

    day = st.dates(min_value=dt.date(1800, 1, 1), max_value=dt.date(2200, 12, 31)).map(str)
    value = st.one_of(
        st.floats(min_value=-1e12, max_value=1e300, allow_nan=False).map(repr),
        st.integers(-(10**15), 10**15).map(str),
        st.just(""),
    )
    garbage = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=6),
        st.sampled_from(["n/a", "1,5", "\x00", "1e309"]),
    )
    good_row = st.tuples(day, value, value, value, value, value).map(",".join)
    bad_row = st.tuples(
        st.one_of(day, st.text(max_size=12)), garbage, garbage, garbage, garbage, garbage
    ).map(",".join)
    header = st.sampled_from(
        [
            "date,open,high,low,close,volume",
            "Date,Open,High,Low,Close,Volume",
            "close,volume,date,high,low,open",
            "date,close,open",
            "",
        ]
    )
    good = st.tuples(
        st.sampled_from(["date,open,high,low,close,volume", "Date,Open,High,Low,Close,Volume"]),
        st.lists(good_row, min_size=1, max_size=25),
        st.sampled_from(["utf-8", "latin-1"]),
    )
    bad = st.tuples(
        header, st.lists(bad_row, max_size=25), st.sampled_from(["utf-8", "latin-1", "utf-16"])
    )
    return st.one_of(good, bad)


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_csv_files_never_crash_the_source_and_bad_bars_never_pass(tmp_path_factory):
    import datetime as dt

    from hypothesis import HealthCheck, given, settings

    from stage2_assets.checks.quality_suite import validate_bars
    from stage2_assets.resources.market_data import CsvSource

    @settings(
        max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(_csv_texts())
    def check(case):
        header, rows, encoding = case
        folder = tmp_path_factory.mktemp("fuzz")
        text = "\n".join([header, *rows]) + "\n"
        (folder / "FUZZ.csv").write_bytes(text.encode(encoding, errors="replace"))
        result = CsvSource(folder=str(folder)).fetch(
            {"FUZZ": dt.date(1700, 1, 1)}, dt.date(2300, 1, 1)
        )
        FUZZ_CASES.append(
            "bars"
            if "FUZZ" in result.bars and not result.bars["FUZZ"].empty
            else "refused or empty"
        )
        count("fuzzed CSV cases")
        count("fuzzed CSV cases reaching the quality gate", int(FUZZ_CASES[-1] == "bars"))
        assert set(result.bars) | set(result.errors) == {
            "FUZZ"
        }  # an answer for the symbol, never an exception
        if "FUZZ" in result.errors:
            assert result.errors["FUZZ"].startswith("FUZZ")
            return
        bars = result.bars["FUZZ"]
        assert list(bars.columns) == [
            "symbol",
            "date",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "source",
        ]
        assert all(bars[c].dtype == "float64" for c in ("open", "high", "low", "close", "volume"))
        if bars.empty:
            return
        report = validate_bars(bars, bars.iloc[0:0], dt.date(2026, 1, 1), 0.4, 5)
        if (bars["date"] > pd.Timestamp("2026-01-01")).any() or bars[
            ["open", "high", "low", "close"]
        ].le(0).any().any():
            assert report.failed == [
                "FUZZ"
            ]  # a future date or a non-positive price never reaches validated_bars

    check()
    print(
        f"fuzzed CSV cases: {len(FUZZ_CASES)} ({FUZZ_CASES.count('bars')} parsed into bars and judged)"
    )
    assert (
        len(FUZZ_CASES) >= 60 and FUZZ_CASES.count("bars") >= 10
    )  # the fuzz reaches the gate, not only refusals
