"""Point-in-time training data: the rolling window, the time split with embargo, the scaler.

Only rows whose label was known at the cut-off (``label_date <= cutoff``) are used. The validation
slice is the last share of the window's trading dates; the training slice ends ``embargo`` dates
before it (the sessions a label reaches past its own date: h + 1 for a label that starts at the
next session), so no training label overlaps a validation date. Never a random split.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stage2_assets.errors import TrainingError
from stage2_assets.ml.features import FEATURE_COLUMNS


@dataclass
class Split:
    train: pd.DataFrame
    val: pd.DataFrame
    mean: np.ndarray
    std: np.ndarray
    # the embargo's rows between the two slices: in neither, but in a refit on the whole window
    gap: pd.DataFrame | None = None

    def whole(self) -> pd.DataFrame:
        """Every labelled row of the window in date order: training, embargo and validation."""
        parts = [self.train, *([self.gap] if self.gap is not None else []), self.val]
        return pd.concat(parts, ignore_index=True).sort_values(
            ["date", "symbol"], ignore_index=True
        )

    def scaled(self, frame: pd.DataFrame) -> np.ndarray:
        return (
            (frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32) - self.mean) / self.std
        ).astype(np.float32)


def time_split(
    features: pd.DataFrame,
    cutoff: dt.date,
    window_days: int,
    validation_split: float,
    embargo: int,
    min_train_rows: int,
) -> Split:
    """The training and validation slices for a cut-off, with the scaler fitted on training only."""
    frame = features.copy()
    frame["date"] = pd.to_datetime(frame["date"])
    frame["label_date"] = pd.to_datetime(frame["label_date"])
    start = pd.Timestamp(cutoff) - pd.Timedelta(days=window_days)
    known = frame["label"].notna() & (frame["label_date"] <= pd.Timestamp(cutoff))
    window = frame[known & (frame["date"] > start) & (frame["date"] <= pd.Timestamp(cutoff))]
    bad = window[list(FEATURE_COLUMNS)].isna().any(axis=1) | ~np.isfinite(
        window[list(FEATURE_COLUMNS)]
    ).all(axis=1)
    if bad.any():
        first = window.loc[bad].iloc[0]
        raise TrainingError(
            f"features hold NaN or infinite values ({int(bad.sum())} rows, first {first['symbol']} "
            f"{first['date'].date()}): re-materialize features before training"
        )
    dates = np.sort(window["date"].unique())
    n_val = int(np.ceil(len(dates) * validation_split))
    if len(dates) - n_val - embargo <= 0 or n_val == 0:
        raise TrainingError(
            f"the window ending {cutoff} holds {len(dates)} trading dates with known labels: too few for a "
            f"{validation_split:.0%} validation slice and a {embargo}-day embargo"
        )
    val_dates = dates[-n_val:]
    train_dates = dates[: len(dates) - n_val - embargo]
    train = (
        window[window["date"].isin(train_dates)]
        .sort_values(["date", "symbol"])
        .reset_index(drop=True)
    )
    val = (
        window[window["date"].isin(val_dates)]
        .sort_values(["date", "symbol"])
        .reset_index(drop=True)
    )
    gap = (
        window[window["date"].isin(dates[len(dates) - n_val - embargo : len(dates) - n_val])]
        .sort_values(["date", "symbol"])
        .reset_index(drop=True)
    )
    if len(train) < min_train_rows:
        raise TrainingError(
            f"the window ending {cutoff} has {len(train)} training rows, fewer than retraining.min_train_rows "
            f"({min_train_rows}): refresh more history or lower the minimum"
        )
    for name, part in (("training", train), ("validation", val)):
        if part["label"].nunique() < 2:
            raise TrainingError(
                f"the {name} slice ending {cutoff} holds one class only: nothing to learn or judge"
            )
    return Split(train, val, *fit_scaler(train), gap)


def fit_scaler(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The features' mean and standard deviation over ``rows`` (1 where a feature is constant)."""
    values = rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    mean, std = values.mean(axis=0), values.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def fingerprint(frame: pd.DataFrame) -> str:
    """A SHA-256 of the rows a model was trained on, to tell later whether the data changed."""
    ordered = frame[["symbol", "date", *FEATURE_COLUMNS, "label"]].sort_values(["date", "symbol"])
    digest = hashlib.sha256(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()
