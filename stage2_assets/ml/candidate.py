"""One weekly candidate: the split, the training, the metrics, and what the store keeps of it."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd

from stage2_assets.faults import fault_point
from stage2_assets.ml.dataset import Split, fingerprint, fit_scaler, time_split
from stage2_assets.ml.features import FEATURE_COLUMNS, LabelRule
from stage2_assets.ml.metrics import classification_metrics, majority_baseline, yesterday_baseline

_LIBRARIES = (
    "torch",
    "lightning",
    "dagster",
    "pandas",
    "numpy",
    "great_expectations",
    "duckdb",
    "safetensors",
)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = importlib_metadata.version(name.replace("_", "-"))
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def candidate_split(
    features: pd.DataFrame, cutoff: dt.date, retraining, rule: LabelRule | None = None
) -> Split:
    """The training and validation slices of the window ending at ``cutoff``."""
    rule = rule or LabelRule(horizon_days=retraining.label_horizon_days)
    return time_split(
        features,
        cutoff,
        retraining.data_window,
        retraining.validation_split,
        rule.embargo_days,
        retraining.min_train_rows,
    )


def hyperparameters(retraining, rule: LabelRule | None = None) -> dict:
    rule = rule or LabelRule(horizon_days=retraining.label_horizon_days)
    return {
        "label_rule": rule.as_dict(),
        "num_models": retraining.num_models,
        "hidden_units": retraining.hidden_units,
        "learning_rate": retraining.learning_rate,
        "batch_size": retraining.batch_size,
        "max_epochs": retraining.max_epochs,
        "early_stopping_patience": retraining.early_stopping_patience,
        "seed": retraining.seed,
        "data_window_days": retraining.data_window,
        "validation_split": retraining.validation_split,
        "label_horizon_days": retraining.label_horizon_days,
        # only when set: versions trained before the lever existed keep their hyperparameters
        **(
            {"recency_half_life_days": retraining.recency_half_life}
            if retraining.recency_half_life
            else {}
        ),
        **({"refit": True} if retraining.refit else {}),
    }


def recency_weights(dates: pd.Series, cutoff: dt.date, half_life_days: int | None):
    """Each training row's weight 0.5 ** (age / half-life), age in days before the cut-off,
    scaled to a mean of 1; None without a half-life (every row alike)."""
    if not half_life_days:
        return None
    age = (pd.Timestamp(cutoff) - pd.to_datetime(dates)).dt.days.to_numpy(dtype=np.float64)
    weights = 0.5 ** (age / half_life_days)
    return (weights / weights.mean()).astype(np.float32)


def split_fingerprint(split: Split, refit: bool = False) -> str:
    """The rows a candidate learns from: training and validation; with a refit, the embargo's too."""
    if refit:
        return fingerprint(split.whole())
    return fingerprint(pd.concat([split.train, split.val]))


def build_candidate(
    split: Split,
    cutoff: dt.date,
    retraining,
    trainer_overrides: dict | None = None,
    rule: LabelRule | None = None,
):
    """Train a candidate on a split of the window ending at ``cutoff``; return (tensors, metadata)."""
    # imported here: Lightning takes seconds to import, and what only reads (a replay's report, a
    # sweep, the code location's definitions) never trains
    import torch

    from stage2_assets.ml.ensemble import member_probabilities
    from stage2_assets.ml.training import train_ensemble

    fault_point("training")
    y_train = split.train["label"].to_numpy(dtype=np.float32)
    y_val = split.val["label"].to_numpy(dtype=np.float32)
    result = train_ensemble(
        split.scaled(split.train),
        y_train,
        split.scaled(split.val),
        y_val,
        max_epochs=retraining.max_epochs,
        patience=retraining.early_stopping_patience,
        trainer_overrides=trainer_overrides,
        **_model_arguments(retraining),
        weights=recency_weights(split.train["date"], cutoff, retraining.recency_half_life),
    )
    # the validation figures judge this first fit: the procedure's out-of-sample estimate
    members = member_probabilities(result.model, split.scaled(split.val))
    ensemble = members.mean(axis=0)
    climatology = float(np.mean(y_train))  # the base rate of up days known at training time
    metrics = {
        "ensemble": classification_metrics(ensemble, y_val, climatology),
        "members": [classification_metrics(p, y_val, climatology) for p in members],
        "baselines": {
            "always_up": classification_metrics(np.ones(len(y_val)), y_val, climatology),
            "climatology": classification_metrics(
                majority_baseline(y_train, len(y_val)), y_val, climatology
            ),
            "majority": classification_metrics(majority_baseline(y_train, len(y_val)), y_val),
            "yesterday": classification_metrics(
                yesterday_baseline(split.train["ret_1d"], y_train, split.val["ret_1d"]), y_val
            ),
        },
    }
    model, mean, std, refit = result.model, split.mean, split.std, None
    if retraining.refit:
        model, mean, std, refit = _refit(split, cutoff, retraining, result, trainer_overrides)
    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    tensors["scaler.mean"] = torch.as_tensor(mean)
    tensors["scaler.std"] = torch.as_tensor(std)
    metadata = {
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cutoff": cutoff.isoformat(),
        "features": list(FEATURE_COLUMNS),
        "data_range": {
            "train": [
                split.train["date"].min().date().isoformat(),
                split.train["date"].max().date().isoformat(),
            ],
            "validation": [
                split.val["date"].min().date().isoformat(),
                split.val["date"].max().date().isoformat(),
            ],
        },
        "symbols": sorted(split.train["symbol"].unique().tolist()),
        "rows": {"train": len(split.train), "validation": len(split.val)},
        "hyperparameters": hyperparameters(retraining, rule),
        "label_rule": (rule or LabelRule(horizon_days=retraining.label_horizon_days)).as_dict(),
        "training": {
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "best_val_loss": result.best_val_loss,
            "seconds": round(result.seconds, 2),
            "device": result.device,
            **({"refit": refit} if refit else {}),
        },
        "metrics": metrics,
        "data_fingerprint": split_fingerprint(split, retraining.refit),
        "git_commit": _git_commit(),
        "library_versions": _versions(),
    }
    return tensors, metadata


def _model_arguments(retraining) -> dict:
    """The ensemble's shape and optimisation, the same for a fit and its refit."""
    return {
        "num_members": retraining.num_models,
        "hidden": retraining.hidden_units,
        "learning_rate": retraining.learning_rate,
        "batch_size": retraining.batch_size,
        "seed": retraining.seed,
    }


def _refit(split: Split, cutoff: dt.date, retraining, first, trainer_overrides):
    """The model trained from scratch on the whole window for the epochs the first fit chose, its
    scaler fitted on the same rows; and what the metadata records of it."""
    from stage2_assets.ml.training import refit_ensemble

    rows = split.whole()
    mean, std = fit_scaler(rows)
    epochs = max(first.best_epoch + 1, 1)
    result = refit_ensemble(
        Split(rows, rows.iloc[0:0], mean, std).scaled(rows),
        rows["label"].to_numpy(dtype=np.float32),
        epochs=epochs,
        trainer_overrides=trainer_overrides,
        **_model_arguments(retraining),
        weights=recency_weights(rows["date"], cutoff, retraining.recency_half_life),
    )
    return (
        result.model,
        mean,
        std,
        {
            "epochs": epochs,
            "rows": len(rows),
            "dates": [
                rows["date"].min().date().isoformat(),
                rows["date"].max().date().isoformat(),
            ],
            "seconds": round(result.seconds, 2),
        },
    )
