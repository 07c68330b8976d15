"""Refused commands: exit 2, one line naming the problem and the way on, nothing launched."""

import datetime as dt

import pytest

from stage2_assets import clock
from stage2_assets.cli import main


@pytest.mark.parametrize("command", ["weekly", "refresh", "train"])
def test_a_future_as_of_is_refused_with_the_valid_range(write_settings, capsys, command):
    settings = write_settings()
    future = dt.date.today() + dt.timedelta(days=120)
    code = main(["--config", str(settings.config_path), command, "--as-of", future.isoformat()])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--as-of {future} lies in the future" in err
    assert f"from 2015-01-04 to {clock.today()}" in err  # the exchange's today
    assert not settings.warehouse_path.exists()  # nothing ran


def test_predict_for_a_day_in_the_future_is_refused_in_one_line(write_settings, capsys):
    settings = write_settings()
    future = dt.date.today() + dt.timedelta(days=3 * 365)  # past the calendar's last session too
    code = main(["--config", str(settings.config_path), "predict", "--as-of", future.isoformat()])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--as-of {future} lies in the future" in err and "Traceback" not in err


def test_status_of_a_warehouse_that_does_not_exist_says_so(write_settings, capsys):
    settings = write_settings()
    assert main(["--config", str(settings.config_path), "status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"warehouse {settings.warehouse_path} does not exist yet")
    assert "raw_bars                 0 rows     0 symbols  -" in out and "None .. None" not in out
    assert not settings.warehouse_path.exists()  # reading it created nothing


def test_an_as_of_before_the_first_partition_is_refused(write_settings, capsys):
    settings = write_settings()
    assert main(["--config", str(settings.config_path), "weekly", "--as-of", "2014-06-01"]) == 2
    assert "before the first partition (2015-01-04" in capsys.readouterr().err


def test_a_rollback_with_nothing_to_roll_back_to_is_refused_in_one_line(write_settings, capsys):
    settings = write_settings()
    assert main(["--config", str(settings.config_path), "rollback"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stage2: no previous production version to roll back to")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture
def refreshed(write_settings, dagster_home):
    settings = write_settings()
    assert main(["--config", str(settings.config_path), "refresh", "--as-of", "2024-12-27"]) == 0
    return settings


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_a_corrupt_warehouse_is_called_corrupt_by_every_command_that_reads_it(
    refreshed, capsys, tmp_path, keep
):
    """Truncated to half, or to nothing: never 'busy', never 'no comparisons yet'."""
    path = refreshed.warehouse_path
    with path.open("r+b") as handle:
        handle.truncate(int(path.stat().st_size * keep))
    config = ["--config", str(refreshed.config_path)]
    capsys.readouterr()
    for command in (
        ["status"],
        ["comparisons"],
        ["status", "--json"],
        ["universe"],
        ["dashboard", "--out", str(tmp_path / "d.html")],
        ["refresh", "--as-of", "2025-01-03"],
    ):
        code = main([*config, *command])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, command
        assert err[-1].startswith(f"stage2: warehouse {path} is corrupt and cannot be read"), (
            command
        )
        assert "stage2 restore BACKUP_DIR" in err[-1] and "Traceback" not in "\n".join(err)


def test_a_busy_warehouse_names_the_live_process_that_holds_it(refreshed, capsys):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "time.sleep(120)",
            str(refreshed.warehouse_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["--config", str(refreshed.config_path), "status"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"stage2: warehouse {refreshed.warehouse_path} is in use by process {holder.pid}, "
            "running: wait for it to finish (or stop it), then run the command again"
        )
    finally:
        holder.kill()
        holder.wait()


def test_a_blocked_gate_says_which_symbols_and_why_in_one_line_without_dagster_traces(
    write_settings, dagster_home, capsys
):
    settings = write_settings(
        {"data_source": {"simulated": {"warts": ["zero_price", "nan_close"]}}}
    )
    code = main(["--config", str(settings.config_path), "refresh", "--as-of", "2024-12-27"])
    captured = capsys.readouterr()
    assert code == 1
    said = [line for line in captured.err.splitlines() if line.startswith("stage2: ")]
    assert len(said) == 1 and said[0].startswith(
        "stage2: check raw_bars_quality_gate failed: 2 of 6 symbols failed the quality suite "
        "(33.3%; the gate allows 20%): SIM000: close is zero or negative"
    )
    assert "Stack Trace" not in captured.err and " - ERROR - " not in captured.err
    assert "gate: BLOCKED (nothing downstream ran); quarantined: SIM000: " in captured.out
    # --quiet drops the per-step lines, not the reason
    code = main(
        ["--config", str(settings.config_path), "refresh", "--as-of", "2024-12-27", "--quiet"]
    )
    captured = capsys.readouterr()
    assert code == 1 and captured.err.splitlines()[0].startswith(
        "stage2: check raw_bars_quality_gate failed: 2 of 6 symbols failed the quality suite "
        "(33.3%; the gate allows 20%): SIM000: close is zero or negative"
    )
    assert "steps:" not in captured.err
