"""End to end through Dagster: the refresh job on a real instance, a real DuckDB file, real GX."""

import datetime as dt
import json

import pandas as pd
import pytest

from stage2_assets.cli import main
from stage2_assets.definitions import build_definitions
from stage2_assets.partitions import AS_OF_TAG, partition_key_for
from stage2_assets.resources.warehouse import Warehouse


def run_refresh(settings, instance, as_of: dt.date):
    job = build_definitions(settings).resolve_job_def("refresh_market_data")
    return job.execute_in_process(
        instance=instance,
        partition_key=partition_key_for(as_of),
        tags={AS_OF_TAG: as_of.isoformat()},
        raise_on_error=False,
    )


def query(settings, sql):
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        return conn.execute(sql).fetchall()


def materialized(result) -> set[str]:
    return {
        e.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def test_refresh_job_fills_every_table_as_of_the_date(write_settings, instance):
    settings = write_settings()
    result = run_refresh(settings, instance, dt.date(2024, 6, 28))
    assert result.success
    assert materialized(result) == {"raw_bars", "validated_bars", "features"}
    assert query(settings, "SELECT count(DISTINCT symbol), max(date) FROM validated_bars") == [
        (6, dt.date(2024, 6, 28))
    ]
    ((features, labelled),) = query(settings, "SELECT count(*), count(label) FROM features")
    assert features == 6 * (
        124 - 49
    )  # 124 NYSE sessions to 2024-06-28, less the 49 before a full look-back
    assert labelled == features - 2 * 6  # the label of t needs close(t+2): the last two unknown
    assert query(settings, "SELECT max(date) FROM features") == [(dt.date(2024, 6, 28),)]
    runs = instance.get_runs()
    assert runs[0].tags[AS_OF_TAG] == "2024-06-28"


def test_blocked_gate_stops_everything_downstream_and_keeps_validated_data(
    write_settings, instance, capsys
):
    from stage2_assets.status import collect_status

    settings = write_settings()
    assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
    assert collect_status(settings)["last_refresh"]["gate"]["outcome"] == "passed"
    before = query(settings, "SELECT * FROM validated_bars ORDER BY symbol, date")
    features_before = query(settings, "SELECT count(*), max(date) FROM features")

    # Three of six symbols turn bad after 2024-08: 50% fail, more than the 20% the gate allows.
    bad = write_settings(
        {"data_source": {"simulated": {"warts": ["zero_price", "nan_close", "bad_high"]}}}
    )
    result = run_refresh(bad, instance, dt.date(2024, 12, 27))
    assert not result.success
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert [(c.check_name, c.passed) for c in checks] == [("raw_bars_quality_gate", False)]
    # the one line names how many of how many, and which symbols for what
    description = checks[0].description
    assert description.startswith(
        "3 of 6 symbols failed the quality suite (50.0%; the gate allows 20%): SIM000: "
    )
    assert "SIM001: " in description and "SIM002: " in description
    assert materialized(result) == {"raw_bars"}
    assert query(bad, "SELECT * FROM validated_bars ORDER BY symbol, date") == before
    assert query(bad, "SELECT count(*), max(date) FROM features") == features_before
    quarantined = query(bad, "SELECT symbol FROM quarantine ORDER BY symbol")
    assert quarantined == [("SIM000",), ("SIM001",), ("SIM002",)]
    # status says the last refresh was blocked, not only that no symbol failed to fetch
    assert collect_status(bad)["last_refresh"]["gate"] == {
        "outcome": "blocked",
        "failed_share": 0.5,
        "allowed": 0.2,
        "failing": ["SIM000", "SIM001", "SIM002"],
    }
    capsys.readouterr()
    assert main(["--config", str(bad.config_path), "status"]) == 0
    assert (
        "  the quality gate blocked it (50.0% of symbols failed; it allows 20%: SIM000, SIM001, "
        "SIM002): nothing downstream ran, validated_bars holds the last good data"
    ) in capsys.readouterr().out.splitlines()


def test_quarantined_symbol_is_held_while_the_others_go_on(write_settings, instance):
    settings = write_settings({"data_source": {"simulated": {"warts": ["duplicate_day"]}}})
    result = run_refresh(settings, instance, dt.date(2024, 12, 27))
    assert result.success  # 1 of 6 symbols fails: under the gate's 20%
    assert query(settings, "SELECT symbol FROM quarantine") == [("SIM000",)]
    assert query(settings, "SELECT count(*) FROM validated_bars WHERE symbol = 'SIM000'") == [(0,)]
    assert query(settings, "SELECT count(DISTINCT symbol) FROM validated_bars") == [(5,)]
    ((reasons,),) = query(settings, "SELECT reasons FROM quarantine")
    assert json.loads(reasons) == [
        "date appears more than once: 2 row(s), first 2024-08-07 [unique_days]"
    ]


def test_a_rerun_with_a_quarantined_symbol_passes_and_keeps_it_quarantined(
    write_settings, instance
):
    """Rerunning a finished week brings nothing new: the quarantined symbol's raw bars are what was
    judged, so it is not judged again, and 0 of 6 failing does not block the rerun."""
    settings = write_settings({"data_source": {"simulated": {"warts": ["duplicate_day"]}}})
    assert run_refresh(settings, instance, dt.date(2024, 12, 27)).success
    validated = query(settings, "SELECT * FROM validated_bars ORDER BY symbol, date")
    result = run_refresh(settings, instance, dt.date(2024, 12, 27))
    assert result.success
    (check,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert check.passed
    assert check.metadata["still_quarantined_unchanged"].value == ["SIM000"]
    assert check.metadata["symbols_failed"].value == 0  # judged now
    assert check.metadata["symbols_quarantined"].value == 1  # 1 of 6: under the gate's 20%
    assert check.metadata["symbols_in_universe"].value == 6
    assert query(settings, "SELECT symbol FROM quarantine") == [("SIM000",)]
    assert query(settings, "SELECT * FROM validated_bars ORDER BY symbol, date") == validated
    assert query(settings, "SELECT count(*) FROM validated_bars WHERE symbol = 'SIM000'") == [(0,)]


def test_a_blocked_gate_stays_blocked_when_run_again_on_the_same_data(write_settings, instance):
    settings = write_settings()
    assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
    bad = write_settings(
        {"data_source": {"simulated": {"warts": ["zero_price", "nan_close", "bad_high"]}}}
    )
    assert not run_refresh(bad, instance, dt.date(2024, 12, 27)).success
    again = run_refresh(bad, instance, dt.date(2024, 12, 27))
    assert not again.success  # the three quarantined symbols are unchanged and still count
    (check,) = [
        e.event_specific_data
        for e in again.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert check.description.startswith("3 of 6 symbols failed the quality suite (50.0%")
    assert "(unchanged since its quarantine)" in check.description


def test_a_blocked_gates_bars_are_read_again_by_the_next_gate(write_settings, instance):
    """The gate compares only the raw bars of refresh runs no applied gate has read: a blocked
    gate's run stays unread, so the bars it fetched reach validated_bars once a gate passes; a
    rerun with nothing new reads no run at all."""
    settings = write_settings()
    first = run_refresh(settings, instance, dt.date(2024, 6, 28))
    assert first.success
    assert query(settings, "SELECT * FROM gate_reads") == [
        (first.run_id, first.run_id, True, query(settings, "SELECT read_at FROM gate_reads")[0][0])
    ]
    warts = {"simulated": {"warts": ["zero_price", "nan_close", "bad_high"]}}
    bad = write_settings({"data_source": warts})
    blocked = run_refresh(bad, instance, dt.date(2024, 12, 27))
    assert not blocked.success
    reads = "SELECT run_id, raw_run_id, applied FROM gate_reads ORDER BY read_at, raw_run_id"
    assert query(bad, reads)[1:] == [(blocked.run_id, blocked.run_id, False)]
    assert query(bad, "SELECT max(date) FROM validated_bars WHERE symbol = 'SIM005'") == [
        (dt.date(2024, 6, 28),)
    ]
    # the same data, under a gate that allows half the symbols to fail: what the blocked run
    # fetched for the three good symbols is judged and validated now
    lenient = write_settings(
        {"data_source": warts, "data_refresh": {"quality": {"max_failed_symbol_share": 0.5}}}
    )
    passed = run_refresh(lenient, instance, dt.date(2024, 12, 27))
    assert passed.success
    assert (passed.run_id, blocked.run_id, True) in query(lenient, reads)
    assert query(
        lenient,
        "SELECT symbol, max(date) FROM validated_bars GROUP BY symbol ORDER BY symbol",
    ) == [(f"SIM00{i}", dt.date(2024, 6, 28)) for i in range(3)] + [
        (f"SIM00{i}", dt.date(2024, 12, 27)) for i in range(3, 6)
    ]
    rerun = run_refresh(lenient, instance, dt.date(2024, 12, 27))
    assert rerun.success
    assert query(lenient, f"SELECT count(*) FROM gate_reads WHERE run_id = '{rerun.run_id}'") == [
        (0,)
    ]


def test_a_bar_stored_by_hand_without_a_run_is_compared_by_every_gate(write_settings, instance):
    """A bar written into raw_bars by hand has no run: every gate compares it, however many
    gates have applied since."""
    settings = write_settings()
    assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
    validated = "SELECT close FROM validated_bars WHERE symbol = 'SIM003' AND date = '2024-06-20'"
    ((close,),) = query(settings, validated)
    for factor in (1.001, 1.002):
        with Warehouse(database=str(settings.warehouse_path)).connect() as conn:
            # the day's raw bar replaced by hand, with another close and no run
            conn.execute("DELETE FROM raw_bars WHERE symbol = 'SIM003' AND date = '2024-06-20'")
            conn.execute(
                "INSERT INTO raw_bars SELECT symbol, date, open, high, low, ?, volume, source, "
                "NULL, now() FROM validated_bars WHERE symbol = 'SIM003' AND date = '2024-06-20'",
                [close * factor],
            )
        assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
        assert query(settings, validated) == [(pytest.approx(close * factor),)]


def test_a_revised_old_bar_and_a_new_week_are_each_measured_from_their_own_predecessor(
    write_settings, instance
):
    """A bar revised weeks back and the new week's bars are judged in one gate: the new week's
    first bar is measured from the validated bar before it, not from the revised one six weeks
    earlier (a false 'sessions missing' warning on every symbol's first new bar)."""
    settings = write_settings()
    assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
    with Warehouse(database=str(settings.warehouse_path)).connect() as conn:
        conn.execute("DELETE FROM raw_bars WHERE symbol = 'SIM003' AND date = '2024-05-15'")
        conn.execute(
            "INSERT INTO raw_bars SELECT symbol, date, open * 1.001, high * 1.001, low * 1.001, "
            "close * 1.001, volume, source, NULL, now() FROM validated_bars "
            "WHERE symbol = 'SIM003' AND date = '2024-05-15'"
        )
    result = run_refresh(settings, instance, dt.date(2024, 7, 12))
    assert result.success
    verdict = (
        "SELECT passed, warnings, rows_checked, first_date, last_date FROM quality_log "
        f"WHERE run_id = '{result.run_id}' AND symbol = 'SIM003'"
    )
    assert query(settings, verdict) == [
        (True, "[]", 10, dt.date(2024, 5, 15), dt.date(2024, 7, 12))
    ]
    assert query(
        settings,
        "SELECT count(*) FROM validated_bars WHERE symbol = 'SIM003' AND date > '2024-06-28'",
    ) == [(9,)]  # July 1-12 less Independence Day


def test_a_second_copy_of_a_validated_day_is_judged_beside_the_first(write_settings, instance):
    """A feed that adds another copy of an already validated day, with another close: both copies
    are judged together, so the unique-days rule sees the duplicate and quarantines the symbol."""
    settings = write_settings()
    assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
    with Warehouse(database=str(settings.warehouse_path)).connect() as conn:
        # stored as a refresh stores a bar: with the run that stored it
        conn.execute(
            "INSERT INTO raw_bars SELECT symbol, date, open, high, low, close * 1.001, volume, source, 'feed-copy', fetched_at "
            "FROM raw_bars WHERE symbol = 'SIM003' AND date = '2024-06-20'"
        )
    before = query(
        settings, "SELECT close FROM validated_bars WHERE symbol = 'SIM003' AND date = '2024-06-20'"
    )
    assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
    ((reasons,),) = query(settings, "SELECT reasons FROM quarantine WHERE symbol = 'SIM003'")
    assert "date appears more than once" in reasons
    assert (
        query(
            settings,
            "SELECT close FROM validated_bars WHERE symbol = 'SIM003' AND date = '2024-06-20'",
        )
        == before
    )
    # the feed never delivers that copy again: the quarantined symbol is fetched whole, the copy
    # moves to the audit table, and the symbol, judged again on its whole history, is released
    # although its remaining rows equal the validated ones
    assert run_refresh(settings, instance, dt.date(2024, 6, 28)).success
    assert query(settings, "SELECT count(*) FROM quarantine") == [(0,)]
    assert query(settings, "SELECT symbol, date FROM raw_bars_replaced") == [
        ("SIM003", dt.date(2024, 6, 20))
    ]


def test_quarantine_lifts_when_the_provider_corrects_the_data(write_settings, instance):
    bad = write_settings({"data_source": {"simulated": {"warts": ["bad_high"]}}})
    assert run_refresh(bad, instance, dt.date(2024, 12, 27)).success
    assert query(bad, "SELECT symbol FROM quarantine") == [("SIM000",)]
    # The corrected feed: the same market without the fault. The overlap re-fetch alone would not
    # reach August, so the symbol's whole raw history is judged again and replaced where revised.
    fixed = write_settings()
    with Warehouse(database=str(fixed.warehouse_path)).connect() as conn:
        conn.execute(
            "DELETE FROM raw_bars WHERE symbol = 'SIM000'"
        )  # an operator re-loads the symbol
    assert run_refresh(fixed, instance, dt.date(2024, 12, 27)).success
    assert query(fixed, "SELECT count(*) FROM quarantine") == [(0,)]
    assert query(fixed, "SELECT count(*) FROM validated_bars WHERE symbol = 'SIM000'") == [(250,)]


def test_cli_refresh_and_status_json_contract(write_settings, dagster_home, capsys):
    settings = write_settings()
    assert main(["--config", str(settings.config_path), "refresh", "--as-of", "2024-06-28"]) == 0
    capsys.readouterr()
    assert main(["--config", str(settings.config_path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["source"] == "simulated"
    assert status["tables"]["raw_bars"] == {
        "rows": 744,
        "symbols": 6,
        "first_date": "2024-01-02",
        "last_date": "2024-06-28",
    }
    assert set(status["tables"]) == {"raw_bars", "validated_bars", "features"}
    assert status["quarantine"] == []
    assert status["last_refresh"]["new"] == 744 and status["last_refresh"]["failed_symbols"] == []


def test_cli_refuses_a_bad_date_and_a_bad_config(write_settings, dagster_home, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["refresh", "--as-of", "yesterday"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("retraining:\n  num_models: zero\n")
    assert main(["--config", str(bad), "status"]) == 2
    assert "retraining.num_models" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["direction", "excess_direction"])
def test_features_computed_in_symbol_ranges_equal_the_whole_table(
    write_settings, instance, monkeypatch, kind
):
    """A universe too large to compute at once is computed a range of symbols at a time: the same
    rows and values; a market-neutral label takes the mean over every range, not its own."""
    from stage2_assets.assets import features as features_asset

    settings = write_settings({"label": {"kind": kind}})
    as_of = dt.date(2024, 6, 14)
    assert run_refresh(settings, instance, as_of).success
    sql = "SELECT * FROM features ORDER BY symbol, date"
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        whole = conn.execute(sql).df()
        bars = conn.execute("SELECT count(*) FROM validated_bars").fetchone()[0]
    monkeypatch.setattr(features_asset, "FEATURE_CHUNK_BARS", bars // 3)
    with Warehouse(database=str(settings.warehouse_path)).connect() as conn:
        conn.execute("DELETE FROM features WHERE symbol = (SELECT min(symbol) FROM features)")
        conn.execute(
            "UPDATE features SET rsi_14 = -1 WHERE date = (SELECT max(date) FROM features)"
        )
    result = run_refresh(settings, instance, as_of)
    assert result.success
    meta = [
        e.event_specific_data.materialization.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.asset_key.to_user_string() == "features"
    ][0]
    assert meta["symbol_ranges"].value >= 3
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        ranged = conn.execute(sql).df()
    # only the deleted symbol and the spoiled day were written again
    assert 0 < meta["rows_written"].value < len(whole) // 2
    features = [c for c in whole.columns if c not in ("label",)]
    pd.testing.assert_frame_equal(
        ranged[features], whole[features], check_exact=(kind == "direction")
    )
    assert (ranged["label"] == whole["label"]).fillna(True).all()
    assert ranged["label"].notna().sum() == whole["label"].notna().sum()


def test_a_large_load_read_and_judged_in_ranges_of_symbols_gets_the_same_verdicts(
    write_settings, instance, monkeypatch, tmp_path
):
    """The gate reads a first load of many symbols a range at a time: the same quarantine, the
    same verdicts and the same validated bars as in one piece."""
    from stage2_assets.market import validation

    warts = {"warts": ["duplicate_day", "split", "bad_high", "gap"], "num_symbols": 12}
    whole = write_settings({"data_source": {"simulated": warts}})
    ranged = write_settings(
        {
            "data_source": {"simulated": warts},
            "storage": {
                "warehouse": str(tmp_path / "r" / "wh.duckdb"),
                "models": str(tmp_path / "r" / "m"),
            },
        },
        name="ranged.yaml",
    )
    as_of = dt.date(2024, 12, 13)
    assert run_refresh(whole, instance, as_of).success
    ranges = []
    original = validation.pending_bars
    monkeypatch.setattr(validation, "PENDING_CHUNK_ROWS", 800)
    monkeypatch.setattr(
        validation,
        "pending_bars",
        lambda conn, skip=None, symbols=None, runs=None: (
            ranges.append(symbols) or original(conn, skip, symbols, runs)
        ),
    )
    assert run_refresh(ranged, instance, as_of).success
    assert len(ranges) >= 4 and None not in ranges  # read in ranges, never whole
    verdicts = "SELECT symbol, passed, errors, warnings, rows_checked, first_date, last_date FROM quality_log ORDER BY symbol"
    for sql in (
        verdicts,
        "SELECT symbol, reasons FROM quarantine ORDER BY symbol",
        "SELECT symbol, date, open, high, low, close, volume FROM validated_bars ORDER BY symbol, date",
    ):
        assert query(ranged, sql) == query(whole, sql)
    assert any(not passed for _, passed, *_ in query(whole, verdicts))  # a wart was quarantined
