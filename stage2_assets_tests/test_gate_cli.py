"""`stage2 gate`: the configured rule on a file of paired predictions, and the files it refuses."""

import json

import duckdb
import pandas as pd
import pytest

from stage2_assets.cli import main
from stage2_assets.config import load_settings
from stage2_assets.stats.comparison import compare_under
from stage2_assets.stats.streams import paired_streams

KEYS = {
    "comparison",
    "decision",
    "decided_on",
    "days",
    "rows",
    "metric",
    "statistic",
    "p_value",
    "effect",
    "lower_bound",
    "mde",
}


@pytest.fixture
def streams():
    strong = paired_streams(2, 40, 50, accuracy_edge=0.14, seed=31)
    null = paired_streams(1, 40, 50, seed=32).assign(comparison=2)
    frame = pd.concat([strong, null], ignore_index=True)
    frame["comparison"] = frame["comparison"].map({0: "a", 1: "b", 2: "null"})
    frame["date"] = frame["date"].dt.date
    return frame


def _gate(settings, path, capsys, *extra):
    code = main(["--config", str(settings.config_path), "gate", "--predictions", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_each_comparison_is_judged_alone_as_the_live_loop_judges(
    write_settings, streams, tmp_path, capsys
):
    settings = write_settings()
    path = tmp_path / "paired.csv"
    streams.to_csv(path, index=False)
    code, out, _ = _gate(settings, path, capsys, "--json")
    verdicts = json.loads(out)
    assert code == 0 and [v["comparison"] for v in verdicts] == ["a", "b", "null"]
    assert all(set(v) >= KEYS for v in verdicts)
    by_name = {v["comparison"]: v for v in verdicts}
    assert by_name["a"]["decision"] == by_name["b"]["decision"] == "promote"
    assert by_name["null"]["decision"] in ("keep", "reject")
    # the same figures as the live loop's function on that comparison alone
    alone = streams[streams["comparison"] == "a"].assign(date=lambda f: pd.to_datetime(f["date"]))
    live = compare_under(alone, load_settings(settings.config_path).ab_testing, seed=0).gate
    assert by_name["a"]["statistic"] == pytest.approx(live["statistic"], rel=1e-12)
    assert by_name["a"]["days"] == live["days"] and by_name["a"]["decided_on"] == live["decided_on"]
    assert by_name["a"]["lower_bound"] > 0 and by_name["a"]["rows"] == 50 * live["days"]
    assert not settings.warehouse_path.exists()  # judging a file writes nothing


def test_a_parquet_file_without_comparison_column_is_one_comparison(
    write_settings, streams, tmp_path, capsys
):
    settings = write_settings()
    path = tmp_path / "paired.parquet"
    one = streams[streams["comparison"] == "a"].drop(columns="comparison")
    duckdb.from_df(one).write_parquet(str(path))
    code, out, _ = _gate(settings, path, capsys, "--json")
    (verdict,) = json.loads(out)
    assert code == 0 and verdict["comparison"] is None and verdict["decision"] == "promote"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: f.drop(columns=["prob_production", "label"]),
            "missing column(s) label, prob_production",
        ),
        (
            lambda f: f.assign(prob_candidate=f["prob_candidate"].astype(object)).pipe(
                lambda g: g.assign(prob_candidate=["high"] + list(g["prob_candidate"][1:]))
            ),
            "row 1 (line 2), column prob_candidate: 'high' is not a number",
        ),
        (
            lambda f: f.assign(prob_production=[1.5] + list(f["prob_production"][1:])),
            "row 1 (line 2), column prob_production: '1.5' is a probability outside [0, 1]",
        ),
        (
            lambda f: pd.concat([f, f.iloc[[7]]], ignore_index=True),
            "repeats comparison a, symbol S007",
        ),
        (
            lambda f: f[f["date"] == f["date"].min()],
            "comparison a covers a single day",
        ),
    ],
    ids=["missing", "not_numeric", "outside_0_1", "duplicated", "single_day"],
)
def test_a_bad_file_is_refused_with_its_column_or_row_named(
    write_settings, streams, tmp_path, capsys, edit, message
):
    settings = write_settings()
    path = tmp_path / "bad.csv"
    edit(streams[streams["comparison"] == "a"].reset_index(drop=True)).to_csv(path, index=False)
    code, out, err = _gate(settings, path, capsys, "--json")
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_empty_file_a_folder_and_a_blank_comparison_are_refused(
    write_settings, streams, tmp_path, capsys
):
    settings = write_settings()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = _gate(settings, empty, capsys)
    assert code == 2 and f"predictions file {empty} is empty" in err
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    code, _, err = _gate(settings, folder, capsys)
    assert code == 2 and "is not a file" in err
    blank = streams.astype({"comparison": object})
    blank.loc[3, "comparison"] = ""
    path = tmp_path / "blank.csv"
    blank.to_csv(path, index=False)
    code, _, err = _gate(settings, path, capsys)
    assert code == 2 and "row 4 (line 5), column comparison" in err and "is blank" in err
