"""A corrected file releases its symbol: a quarantined symbol is fetched whole, its raw history
becomes what the source says now, and what it no longer says is kept in an audit table.
Real bars of six symbols from ../shared/market-data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from stage2_assets.cli import main
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.conftest import make_project, write_csv

SYMBOLS = ("AAPL", "JPM", "CAT", "DIS", "AEP", "ABT")
BAD = "AEP"


def _query(settings, sql):
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def project(tmp_path, market_data_dir, monkeypatch):
    folder = tmp_path / "csv"
    frames = {s: pd.read_csv(market_data_dir / f"{s}.csv") for s in SYMBOLS}
    settings, home = make_project(
        tmp_path / "project",
        {
            "data_source": {"kind": "csv", "path": str(folder), "symbols": list(SYMBOLS)},
            "data_refresh": {"history_start": "2018-06-01"},
        },
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return settings, folder, frames


def test_a_corrected_file_releases_its_symbol_and_the_replaced_rows_are_audited(project, capsys):
    settings, folder, frames = project
    config = ["--config", str(settings.config_path)]
    for symbol, frame in frames.items():
        write_csv(folder, symbol, frame[frame["date"] <= "2019-06-14"])
    assert main([*config, "refresh", "--as-of", "2019-06-14"]) == 0
    # the next week the feed sends 2019-06-19 twice for AEP, the second time with another close
    for symbol, frame in frames.items():
        write_csv(folder, symbol, frame[frame["date"] <= "2019-06-21"])
    bad = frames[BAD][frames[BAD]["date"] <= "2019-06-21"]
    twice = bad[bad["date"] == "2019-06-19"].assign(close=lambda f: f["close"] * 1.1)
    write_csv(folder, BAD, pd.concat([bad, twice]).sort_values("date", kind="stable"))
    assert main([*config, "refresh", "--as-of", "2019-06-21"]) == 0
    assert "released" not in capsys.readouterr().out
    assert _query(settings, "SELECT symbol FROM quarantine") == [(BAD,)]
    day = f"symbol = '{BAD}' AND date = '2019-06-19'"
    assert _query(settings, f"SELECT count(*) FROM raw_bars WHERE {day}") == [(2,)]

    # predict marks the quarantined symbol: its features stop at its last validated bar
    assert main([*config, "train", "--as-of", "2019-06-21"]) == 0
    version = capsys.readouterr().out.strip().split()[-1]
    assert main([*config, "predict", "--version", version, "--as-of", "2019-06-21", "--json"]) == 0
    rows = {r["symbol"]: r for r in json.loads(capsys.readouterr().out)["predictions"]}
    assert {s: r["quarantined"] for s, r in rows.items()} == {s: s == BAD for s in SYMBOLS}
    assert rows[BAD]["date"] == "2019-06-14" and rows["AAPL"]["date"] == "2019-06-21"
    assert main([*config, "predict", "--version", version, "--as-of", "2019-06-21"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(BAD))
    assert "QUARANTINED: " in line and "date appears more than once" in line

    # the vendor fixes the file; the next week's refresh releases AEP
    for symbol, frame in frames.items():
        write_csv(folder, symbol, frame[frame["date"] <= "2019-06-28"])
    capsys.readouterr()
    assert main([*config, "refresh", "--as-of", "2019-06-28"]) == 0
    assert _query(settings, "SELECT count(*) FROM quarantine") == [(0,)]
    out = capsys.readouterr().out
    assert "gate: passed; quarantined: none" in out
    assert "  released: AEP (quarantined before; its bars, fetched again, passed)" in out
    assert _query(settings, f"SELECT count(*) FROM raw_bars WHERE {day}") == [(1,)]
    ((close,),) = _query(settings, f"SELECT close FROM validated_bars WHERE {day}")
    original = frames[BAD].set_index("date").loc["2019-06-19", "close"]
    assert close == pytest.approx(original)
    ((last,),) = _query(settings, f"SELECT max(date) FROM validated_bars WHERE symbol = '{BAD}'")
    assert last.isoformat() == "2019-06-28"
    # exactly the bad row was moved aside, with the run that replaced it
    replaced = _query(
        settings, "SELECT symbol, date, close, replaced_by_run FROM raw_bars_replaced"
    )
    assert len(replaced) == 1
    symbol, moved_day, moved_close, run = replaced[0]
    assert (symbol, moved_day.isoformat()) == (BAD, "2019-06-19") and run
    assert moved_close == pytest.approx(original * 1.1)
    # no day is stored twice any more
    assert (
        _query(settings, "SELECT count(*) FROM raw_bars GROUP BY symbol, date HAVING count(*) > 1")
        == []
    )
    capsys.readouterr()
    assert main([*config, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quarantine"] == []


def test_refresh_full_picks_up_a_revision_older_than_the_overlap(project, capsys):
    """A close revised 100 days back is never seen by the weekly overlap; `--full` re-fetches the
    whole history, replaces the bar and keeps the old one for the audit."""
    settings, folder, frames = project
    config = ["--config", str(settings.config_path)]
    for symbol, frame in frames.items():
        write_csv(folder, symbol, frame[frame["date"] <= "2019-06-21"])
    assert main([*config, "refresh", "--as-of", "2019-06-21"]) == 0
    old = frames["CAT"].set_index("date").loc["2019-02-01", "close"]
    revised = frames["CAT"].assign(
        close=lambda f: f["close"].where(f["date"] != "2019-02-01", round(old * 1.01, 2))
    )
    write_csv(folder, "CAT", revised[revised["date"] <= "2019-06-21"])
    cat = "SELECT close FROM {} WHERE symbol = 'CAT' AND date = '2019-02-01'"
    assert main([*config, "refresh", "--as-of", "2019-06-21"]) == 0  # the overlap: 5 days
    assert _query(settings, cat.format("raw_bars")) == [(pytest.approx(old),)]
    capsys.readouterr()
    assert main([*config, "refresh", "--as-of", "2019-06-21", "--full", "CAT"]) == 0
    out = capsys.readouterr().out
    assert "full re-fetch of 1 symbol: 1 bars revised (CAT 1); 1 stored rows replaced" in out
    assert _query(settings, cat.format("raw_bars")) == [(pytest.approx(round(old * 1.01, 2)),)]
    assert _query(settings, cat.format("validated_bars")) == [
        (pytest.approx(round(old * 1.01, 2)),)
    ]
    assert _query(settings, "SELECT symbol, close FROM raw_bars_replaced") == [
        ("CAT", pytest.approx(old))
    ]
    runs = "SELECT count(DISTINCT run_id) FROM refresh_log"
    before = _query(settings, runs)
    # a name outside the universe is refused input: exit 2 before any run starts
    assert main([*config, "refresh", "--as-of", "2019-06-21", "--full", "ZZZZ"]) == 2
    assert capsys.readouterr().err.startswith("stage2: --full names ZZZZ, not in this config's")
    assert _query(settings, runs) == before
    # a named symbol whose file cannot be read is not counted as fetched again
    broken = frames["JPM"][frames["JPM"]["date"] <= "2019-06-21"].astype({"close": object})
    broken.loc[broken.index[-1], "close"] = ""
    write_csv(folder, "JPM", broken)
    assert main([*config, "refresh", "--as-of", "2019-06-21", "--full", "CAT", "JPM"]) == 0
    out = capsys.readouterr().out
    assert "failed JPM: column close holds a non-numeric value '' (the row of 2019-06-21)" in out
    assert (
        "full re-fetch of 1 symbol: 0 bars revised (none); 0 stored rows replaced, kept in "
        "raw_bars_replaced; not fetched: JPM (see failed above)"
    ) in out
