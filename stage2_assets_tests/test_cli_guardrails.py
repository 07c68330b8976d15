"""Refused commands: exit 2, one line naming the problem and the way on, nothing launched."""

import datetime as dt

import pytest

from stage2_assets.cli import main


@pytest.mark.parametrize("command", ["weekly", "refresh", "train"])
def test_a_future_as_of_is_refused_with_the_valid_range(write_settings, capsys, command):
    settings = write_settings()
    future = dt.date.today() + dt.timedelta(days=120)
    code = main(["--config", str(settings.config_path), command, "--as-of", future.isoformat()])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--as-of {future} lies in the future" in err
    assert f"from 2015-01-04 to {dt.date.today()}" in err
    assert not settings.warehouse_path.exists()  # nothing ran


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
