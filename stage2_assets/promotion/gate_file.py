"""``stage2 gate``: the configured decision rule applied to a file of paired predictions.

The file holds ``date, symbol, label, fwd_return, prob_candidate, prob_production`` and, optionally,
``comparison``: many independent comparisons in one file. Each comparison is judged alone, as one
weekly test at the per-test level (no adjustment across the comparisons of one file), stepping
through its days as the live loop does, by the same function the live loop and
``comparisons --recompute`` use.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd

from stage2_assets.errors import Stage2Error
from stage2_assets.stats.comparison import compare_under
from stage2_assets.stats.gate import PAIRED_COLUMNS

PROBABILITIES = ("prob_candidate", "prob_production")


class PredictionsFileError(Stage2Error):
    """A paired-predictions file that cannot be judged: the message names the column or row."""


def read_paired_predictions(path: Path) -> pd.DataFrame:
    """Read and check a CSV or Parquet file of paired predictions; refuse it whole if it is bad."""
    if not path.exists():
        raise PredictionsFileError(f"predictions file {path} does not exist")
    if not path.is_file():
        raise PredictionsFileError(f"predictions file {path} is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = duckdb.sql(f"SELECT * FROM read_parquet('{_quoted(path)}')").df()
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            raise PredictionsFileError(
                f"predictions file {path}: give a .csv or a .parquet file, not {suffix or 'no suffix'}"
            )
    except pd.errors.EmptyDataError:
        raise PredictionsFileError(f"predictions file {path} is empty") from None
    except (duckdb.Error, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PredictionsFileError(f"predictions file {path} cannot be read: {exc}") from None
    return check_paired_predictions(frame, str(path))


def _quoted(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")


def check_paired_predictions(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The frame with typed columns, or a PredictionsFileError naming the first problem."""
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in PAIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise PredictionsFileError(
            f"{name}: missing column(s) {', '.join(missing)}; a paired-predictions file has "
            f"{', '.join(PAIRED_COLUMNS)} and optionally comparison"
        )
    if frame.empty:
        raise PredictionsFileError(f"{name}: the file holds no rows")
    out = pd.DataFrame(index=frame.index)
    if "comparison" in frame:
        blank = frame["comparison"].isna() | (frame["comparison"].astype(str).str.strip() == "")
        _refuse_first(blank, frame, "comparison", name, "is blank: name every row's comparison")
    out["comparison"] = frame["comparison"].astype(str) if "comparison" in frame else None
    out["symbol"] = frame["symbol"].astype(str)
    dates = pd.to_datetime(frame["date"].astype(str), errors="coerce", format="mixed")
    _refuse_first(dates.isna(), frame, "date", name, "is not a date (YYYY-MM-DD)")
    out["date"] = dates.dt.normalize()
    for column in ("label", "fwd_return", *PROBABILITIES):
        values = pd.to_numeric(frame[column], errors="coerce")
        _refuse_first(values.isna(), frame, column, name, "is not a number")
        out[column] = values.astype(float)
    _refuse_first(~out["label"].isin([0.0, 1.0]), frame, "label", name, "is not 0 or 1")
    for column in PROBABILITIES:
        _refuse_first(
            ~out[column].between(0.0, 1.0), frame, column, name, "is a probability outside [0, 1]"
        )
    key = ["comparison", "symbol", "date"] if "comparison" in frame else ["symbol", "date"]
    dupes = out.duplicated(subset=key, keep="first")
    if dupes.any():
        row = out.loc[dupes].iloc[0]
        where = f"comparison {row['comparison']}, " if "comparison" in frame else ""
        raise PredictionsFileError(
            f"{name}: row {_row_number(frame, dupes)} repeats {where}symbol {row['symbol']} on "
            f"{row['date'].date()}; each (comparison, symbol, date) may appear once"
        )
    groups = out.groupby("comparison", dropna=False) if "comparison" in frame else [(None, out)]
    for value, group in groups:
        if group["date"].nunique() < 2:
            which = f"comparison {value}" if value is not None else "the file"
            raise PredictionsFileError(
                f"{name}: {which} covers a single day; the test needs a paired series of days"
            )
    return out


def _row_number(frame: pd.DataFrame, mask: pd.Series) -> str:
    """The first flagged row, counted from 1 after the header (in a CSV, line n + 1)."""
    row = int(frame.index.get_loc(mask[mask].index[0])) + 1
    return f"{row} (line {row + 1})"


def _refuse_first(mask: pd.Series, frame: pd.DataFrame, column: str, name: str, what: str) -> None:
    if mask.any():
        value = frame.loc[mask[mask].index[0], column]
        raise PredictionsFileError(
            f"{name}: row {_row_number(frame, mask)}, column {column}: {value!r} {what}"
        )


def judge_file(frame: pd.DataFrame, ab) -> list[dict]:
    """One verdict per comparison (the ``stage2 gate --json`` contract)."""
    verdicts = []
    groups = frame.groupby("comparison", sort=True) if frame["comparison"].notna().any() else None
    for value, group in groups if groups is not None else [(None, frame)]:
        result = compare_under(group, ab, seed=0)
        gate = result.gate
        verdicts.append(
            {
                "comparison": value,
                "decision": result.decision,
                "decided_on": gate["decided_on"],
                "days": gate["days"],
                "rows": gate["rows"],
                "metric": gate["metric"],
                "statistic": _finite(gate["statistic"]),
                "p_value": _finite(gate["p_value"]),
                "effect": _finite(gate["effect"]),
                "lower_bound": _finite(gate["lower_bound"]),
                "mde": _finite(gate["mde"]),
                "alpha": gate["alpha"],
                "reason": result.reason,
            }
        )
    return verdicts


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
