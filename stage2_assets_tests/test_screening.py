"""What a refresh checks before storing: back-adjusted history, vanished symbols, file names that
are not tickers, limits and duplicated rows. Real bars from ../shared/market-data, copied and
edited by each test, run through the real `stage2` commands."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from stage2_assets.cli import main
from stage2_assets.market.refresh import stage_delivery
from stage2_assets.market.screening import Notes, readjustment_factors, screen_fetched
from stage2_assets.resources.market_data import FetchResult
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.conftest import make_project, write_csv

SYMBOLS = ("AAPL", "JPM", "CAT", "DIS", "ABT")


def _query(settings, sql, params=None):
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def _status(settings, capsys) -> dict:
    capsys.readouterr()
    main(["--config", str(settings.config_path), "status", "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def project(tmp_path, market_data_dir, monkeypatch):
    def build(symbols="auto", **refresh):
        folder = tmp_path / "csv"
        frames = {s: pd.read_csv(market_data_dir / f"{s}.csv") for s in SYMBOLS}
        settings, home = make_project(
            tmp_path / "project",
            {
                "data_source": {"kind": "csv", "path": str(folder), "symbols": symbols},
                "data_refresh": {"history_start": "2018-06-01", **refresh},
            },
        )
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        return settings, folder, frames

    return build


def _write_until(folder, frames, day):
    for symbol, frame in frames.items():
        write_csv(folder, symbol, frame[frame["date"] <= day])


def test_a_back_adjusted_split_is_fetched_whole_and_leaves_no_seam(project, capsys):
    settings, folder, frames = project()
    config = ["--config", str(settings.config_path)]
    _write_until(folder, frames, "2019-06-14")
    assert main([*config, "refresh", "--as-of", "2019-06-14"]) == 0
    # ABT splits 2:1 on 2019-06-17 and the vendor back-adjusts: every price before it is halved,
    # and so is every price after it (the shares are worth half); volumes double
    _write_until(folder, frames, "2019-06-21")
    abt = frames["ABT"][frames["ABT"]["date"] <= "2019-06-21"]
    split = abt.assign(
        **{c: abt[c] / 2 for c in ("open", "high", "low", "close")}, volume=abt["volume"] * 2
    )
    write_csv(folder, "ABT", split)
    capsys.readouterr()
    assert main([*config, "refresh", "--as-of", "2019-06-21"]) == 0
    out = capsys.readouterr().out
    assert (
        "re-adjusted: ABT's history was re-adjusted by the source (stored / delivered = 2)" in out
    )

    closes = pd.Series(
        dict(_query(settings, "SELECT date, close FROM validated_bars WHERE symbol = 'ABT'"))
    ).sort_index()
    moves = closes.pct_change().dropna()
    # the real ABT never moved 15% in a day over this span: no -50% / +100% seam
    assert moves.abs().max() < 0.15
    expected = abt.set_index("date")["close"] / 2
    assert np.allclose(closes.to_numpy(), expected[expected.index >= "2018-06-01"].to_numpy())
    ((replaced,),) = _query(settings, "SELECT count(*) FROM raw_bars_replaced WHERE symbol = 'ABT'")
    ((stored_before,),) = _query(
        settings, "SELECT count(*) FROM raw_bars WHERE symbol = 'ABT' AND date <= '2019-06-14'"
    )
    assert replaced == stored_before > 250  # every old raw row kept for the audit
    # the features were recomputed from the adjusted bars: one-day returns show no seam either
    returns = [r for (r,) in _query(settings, "SELECT ret_1d FROM features WHERE symbol = 'ABT'")]
    assert max(abs(r) for r in returns) < 0.15
    last = _status(settings, capsys)["last_refresh"]
    assert last["readjusted_symbols"] == ["ABT"]
    assert last["readjustment_factors"]["ABT"] == pytest.approx(2.0)
    assert "ABT" not in {q["symbol"] for q in _status(settings, capsys)["quarantine"]}


def _factors(conn, delivered: pd.DataFrame) -> dict[str, float]:
    """The re-adjustment factors of one delivery, staged as a refresh stages it."""
    assert stage_delivery(conn, FetchResult(bars={"AAPL": delivered}).delivered())
    return readjustment_factors(conn, 1e-4)


def test_a_corrected_close_is_a_revision_not_a_readjustment(market_data_dir, tmp_path):
    """One bar's close corrected inside the overlap: an ordinary revision, no whole re-fetch."""
    bars = pd.read_csv(market_data_dir / "AAPL.csv").head(30)
    bars = bars.assign(symbol="AAPL", date=pd.to_datetime(bars["date"]), source="csv")
    with Warehouse(database=str(tmp_path / "w.duckdb")).connect() as conn:
        conn.register("b", bars)
        conn.execute(
            "INSERT INTO raw_bars SELECT symbol, date, open, high, low, close, volume, source, "
            "'r', NULL FROM b"
        )
        tail = bars.tail(4).reset_index(drop=True)
        corrected = tail.copy()
        corrected.loc[1, "close"] *= 1.01
        assert _factors(conn, corrected) == {}
        # the same four days scaled as one (a dividend re-adjustment of 0.5%) are one
        scaled = tail.assign(**{c: tail[c] / 1.005 for c in ("open", "high", "low", "close")})
        factors = _factors(conn, scaled)
        assert factors == {"AAPL": pytest.approx(1.005)}
        # an adjustment reaches back from its event: later overlap days unchanged, earlier scaled
        seam = pd.concat([scaled.head(2), tail.tail(2)], ignore_index=True)
        assert _factors(conn, seam) == {"AAPL": pytest.approx(1.005)}
        # the other way round is not one
        backwards = pd.concat([tail.head(2), scaled.tail(2)], ignore_index=True)
        assert _factors(conn, backwards) == {}


def test_a_vanished_symbol_is_reported_every_run_and_announced_once(project, capsys, tmp_path):
    from stage2_assets.definitions import build_definitions
    from stage2_assets.resources.alerts import AlertChannels

    settings, folder, frames = project()
    config = ["--config", str(settings.config_path)]
    _write_until(folder, frames, "2019-06-14")
    assert main([*config, "refresh", "--as-of", "2019-06-14"]) == 0
    _write_until(folder, frames, "2019-06-21")
    (folder / "CAT.csv").unlink()
    capsys.readouterr()
    assert main([*config, "refresh", "--as-of", "2019-06-21"]) == 0
    assert (
        "missing: CAT is no longer delivered by the source (since 2019-06-21); "
        "its stored bars (to 2019-06-14) are kept" in capsys.readouterr().out
    )
    last = _status(settings, capsys)["last_refresh"]
    assert last["missing_symbols"] == ["CAT"] and last["missing_since"] == {"CAT": "2019-06-21"}
    for symbol, frame in frames.items():
        if symbol != "CAT":
            write_csv(folder, symbol, frame[frame["date"] <= "2019-06-28"])
    assert main([*config, "refresh", "--as-of", "2019-06-28"]) == 0
    last = _status(settings, capsys)["last_refresh"]
    assert last["missing_symbols"] == ["CAT"] and last["missing_since"] == {"CAT": "2019-06-21"}
    # its stored bars are kept, and stop where its file stopped
    ((last_bar,),) = _query(settings, "SELECT max(date) FROM raw_bars WHERE symbol = 'CAT'")
    assert last_bar == dt.date(2019, 6, 14)

    channels = AlertChannels(jsonl_path=str(tmp_path / "alerts.jsonl"))
    sensor = next(s for s in build_definitions(settings).sensors if s.name == "data_quality_sensor")
    resources = {
        "warehouse": Warehouse(database=str(settings.warehouse_path)),
        "alert_channels": channels,
    }
    with dg.DagsterInstance.get() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, resources=resources))
        again = sensor(
            dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources)
        )
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    missing = [a for a in alerts if "missing_symbols" in a["details"]]
    assert len(missing) == 1 and missing[0]["details"]["missing_symbols"] == ["CAT"]
    assert "last stored bar 2019-06-14" in missing[0]["body"]
    assert again.skip_message == "no new quality verdicts"


def test_file_names_are_listed_and_read_by_one_rule(project, capsys):
    settings, folder, frames = project()
    config = ["--config", str(settings.config_path)]
    _write_until(folder, frames, "2019-06-14")
    aapl = frames["AAPL"][frames["AAPL"]["date"] <= "2019-06-14"]
    aapl.to_csv(folder / "BRK B.csv", index=False)
    aapl.to_csv(folder / "ÄPFEL.csv", index=False)
    aapl.to_csv(folder / "aos2.csv", index=False)  # lower case: listed and read as AOS2
    aapl.to_csv(folder / "jpm.csv", index=False)  # a second file for JPM: JPM.csv wins
    capsys.readouterr()
    assert main([*config, "refresh", "--as-of", "2019-06-14"]) == 0
    out = capsys.readouterr().out
    assert "refused file 'BRK B.csv': symbol 'BRK B' is not a valid ticker" in out
    last = _status(settings, capsys)["last_refresh"]
    assert [r["file"] for r in last["refused_files"]] == ["BRK B.csv", "jpm.csv", "ÄPFEL.csv"]
    assert (
        "names the same symbol JPM as JPM.csv, which is read" in last["refused_files"][1]["reason"]
    )
    assert last["failed_symbols"] == []
    ((aos2,),) = _query(settings, "SELECT count(*) FROM validated_bars WHERE symbol = 'AOS2'")
    ((jpm_close,),) = _query(
        settings, "SELECT close FROM raw_bars WHERE symbol = 'JPM' AND date = '2019-06-14'"
    )
    assert aos2 == len(aapl[aapl["date"] >= "2018-06-01"])
    assert jpm_close == pytest.approx(frames["JPM"].set_index("date").loc["2019-06-14", "close"])


def test_an_absurd_file_is_refused_and_repeated_rows_are_stored_once(project, capsys):
    settings, folder, frames = project(max_file_mb=0.2)
    config = ["--config", str(settings.config_path)]
    _write_until(folder, frames, "2019-06-14")
    assert main([*config, "refresh", "--as-of", "2019-06-14"]) == 0
    ((jpm_rows,),) = _query(settings, "SELECT count(*) FROM raw_bars WHERE symbol = 'JPM'")
    _write_until(folder, frames, "2019-06-21")
    jpm = frames["JPM"][frames["JPM"]["date"] <= "2019-06-21"]
    # a feed that wrote JPM's history 20 times over (about 1.3 MB), and DIS's three times
    write_csv(folder, "JPM", pd.concat([jpm] * 20).sort_values("date", kind="stable"))
    dis = frames["DIS"][frames["DIS"]["date"] <= "2019-06-21"]
    write_csv(folder, "DIS", pd.concat([dis] * 3).sort_values("date", kind="stable"))
    capsys.readouterr()
    assert main([*config, "refresh", "--as-of", "2019-06-21"]) == 0
    # the fetch covers the 5-day overlap and the new week: 10 sessions delivered 3 times
    assert "collapsed: DIS delivered 20 exactly repeated row(s); stored once" in (
        capsys.readouterr().out
    )
    last = _status(settings, capsys)["last_refresh"]
    assert last["failed_symbols"] == ["JPM"]
    assert main([*config, "status"]) == 0
    assert "  failed JPM: JPM.csv is 1.0 MB, over data_refresh.max_file_mb (0.2 MB)" in (
        capsys.readouterr().out
    )
    assert "over data_refresh.max_file_mb (0.2 MB): refused unread" in last["errors"]["JPM"]
    assert _query(settings, "SELECT count(*) FROM raw_bars WHERE symbol = 'JPM'") == [(jpm_rows,)]
    assert _query(
        settings,
        "SELECT count(*), count(DISTINCT date) FROM raw_bars WHERE symbol = 'DIS' "
        "AND date > '2019-06-14'",
    ) == [(5, 5)]
    assert _query(settings, "SELECT count(*) FROM quarantine") == [(0,)]


def test_a_delivery_over_the_row_limit_is_refused_before_storage():
    frame = pd.DataFrame({"symbol": ["X"] * 30, "date": pd.date_range("2019-01-01", periods=30)})
    fetched = FetchResult(bars={"X": frame, "Y": frame.head(3).assign(symbol="Y")})
    notes = Notes()
    screen_fetched(fetched, 20, notes)
    assert list(fetched.bars) == ["Y"]
    assert fetched.errors["X"].startswith("X: the source delivered 30 rows, over ")


def test_the_universe_on_a_date_includes_those_that_left_later_and_not_those_that_came_later(
    tmp_path, market_data_dir, monkeypatch, capsys
):
    """EVHC's bars stop on 2018-12-17 (acquired); SCG's begin on 2019-03-05."""
    symbols = ("AAPL", "JPM", "CAT", "EVHC", "SCG")
    folder = tmp_path / "csv"
    for symbol in symbols:
        write_csv(folder, symbol, pd.read_csv(market_data_dir / f"{symbol}.csv"))
    settings, home = make_project(
        tmp_path / "project",
        {
            "data_source": {"kind": "csv", "path": str(folder), "symbols": list(symbols)},
            "data_refresh": {"history_start": "2018-01-01"},
        },
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = ["--config", str(settings.config_path)]

    def universe(day: str) -> dict:
        capsys.readouterr()
        assert main([*config, "universe", "--at", day, "--json"]) == 0
        return {r["symbol"]: r["state"] for r in json.loads(capsys.readouterr().out)["symbols"]}

    assert main([*config, "refresh", "--as-of", "2018-12-14"]) == 0
    assert universe("2018-12-14") == dict.fromkeys(("AAPL", "CAT", "EVHC", "JPM"), "member")
    assert main([*config, "refresh", "--as-of", "2019-06-21"]) == 0
    assert universe("2018-12-14") == {
        **dict.fromkeys(("AAPL", "CAT", "EVHC", "JPM"), "member"),
        "SCG": "not_yet",
    }
    assert universe("2019-06-21") == {
        **dict.fromkeys(("AAPL", "CAT", "JPM", "SCG"), "member"),
        "EVHC": "left",
    }
    # training at a cut-off learns from EVHC's labelled rows (it left later, it was there then)
    ((evhc_rows,),) = _query(
        settings, "SELECT count(*) FROM features WHERE symbol = 'EVHC' AND label IS NOT NULL"
    )
    assert evhc_rows > 150
    capsys.readouterr()
    assert main([*config, "train", "--as-of", "2019-06-21"]) == 0
    version = capsys.readouterr().out.strip().split()[-1]
    # served on 2019-06-21: no prediction for EVHC from its last bar of six months before
    assert main([*config, "predict", "--version", version, "--as-of", "2019-06-21", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["left_universe"] == ["EVHC"]
    assert {r["symbol"] for r in answer["predictions"]} == {"AAPL", "CAT", "JPM", "SCG"}
    # as of 2018-12-14 it was served
    assert main([*config, "predict", "--version", version, "--as-of", "2018-12-14", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert "EVHC" in {r["symbol"] for r in answer["predictions"]} and not answer["left_universe"]


def test_a_missing_symbol_never_stored_is_not_said_to_keep_bars():
    from stage2_assets.reporting.week import notes_lines

    refresh = {
        "missing_symbols": ["CAT", "MSFT"],
        "missing_since": {"CAT": "2019-06-21", "MSFT": "2019-06-14"},
        "missing_last_bar": {"CAT": "2019-06-14", "MSFT": None},
    }
    assert notes_lines(refresh) == [
        "missing: CAT is no longer delivered by the source (since 2019-06-21); "
        "its stored bars (to 2019-06-14) are kept",
        "missing: MSFT is no longer delivered by the source (since 2019-06-14); "
        "no bars of it are stored",
    ]


def test_a_quarantined_symbols_warnings_are_not_said_to_be_let_through():
    from stage2_assets.reporting.week import summary_lines

    move = "one-day move above 40% (split or bad print): 1 row(s), first 2019-07-17 [daily_move_bounded]"
    summary = {
        "as_of": "2019-07-19",
        "run_id": "r1",
        "status": "succeeded",
        "refresh": None,
        "gate": {
            "passed": True,
            "quarantined": {"CAT": ["close is zero or negative: 1 row(s), first 2019-07-17"]},
            "flagged": {"CAT": [move], "UA": [move]},
        },
        "candidate": None,
        "decisions": [],
        "pointer": None,
        "alerts": [],
    }
    assert summary_lines(summary)[1:] == [
        "gate: passed; quarantined: CAT: close is zero or negative: 1 row(s), first 2019-07-17",
        f"  flagged (let through): UA: {move}",
        f"  flagged too (quarantined): CAT: {move}",
    ]
    # released symbols, one or several
    for released, said in ((["AEP"], "its"), (["AAPL", "GS"], "their")):
        summary["gate"] = {"passed": True, "quarantined": {}, "flagged": {}, "released": released}
        assert summary_lines(summary)[2] == (
            f"  released: {', '.join(released)} (quarantined before; {said} bars, fetched again, "
            "passed)"
        )
