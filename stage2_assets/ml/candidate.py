"""One weekly candidate: the split, the training, the metrics, and what the store keeps of it."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stage2_assets.faults import fault_point
from stage2_assets.ml.dataset import Split, fingerprint, time_split
from stage2_assets.ml.ensemble import member_probabilities
from stage2_assets.ml.features import FEATURE_COLUMNS, LabelRule
from stage2_assets.ml.metrics import classification_metrics, majority_baseline, yesterday_baseline
from stage2_assets.ml.training import train_ensemble

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
    }


def recency_weights(dates: pd.Series, cutoff: dt.date, half_life_days: int | None):
    """Each training row's weight 0.5 ** (age / half-life), age in days before the cut-off,
    scaled to a mean of 1; None without a half-life (every row alike)."""
    if not half_life_days:
        return None
    age = (pd.Timestamp(cutoff) - pd.to_datetime(dates)).dt.days.to_numpy(dtype=np.float64)
    weights = 0.5 ** (age / half_life_days)
    return (weights / weights.mean()).astype(np.float32)


def split_fingerprint(split: Split) -> str:
    return fingerprint(pd.concat([split.train, split.val]))


def build_candidate(
    split: Split,
    cutoff: dt.date,
    retraining,
    trainer_overrides: dict | None = None,
    rule: LabelRule | None = None,
):
    """Train a candidate on a split of the window ending at ``cutoff``; return (tensors, metadata)."""
    fault_point("training")
    y_train = split.train["label"].to_numpy(dtype=np.float32)
    y_val = split.val["label"].to_numpy(dtype=np.float32)
    result = train_ensemble(
        split.scaled(split.train),
        y_train,
        split.scaled(split.val),
        y_val,
        num_members=retraining.num_models,
        hidden=retraining.hidden_units,
        learning_rate=retraining.learning_rate,
        batch_size=retraining.batch_size,
        max_epochs=retraining.max_epochs,
        patience=retraining.early_stopping_patience,
        seed=retraining.seed,
        trainer_overrides=trainer_overrides,
        weights=recency_weights(split.train["date"], cutoff, retraining.recency_half_life),
    )
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
    tensors = {f"model.{k}": v.detach().cpu() for k, v in result.model.state_dict().items()}
    tensors["scaler.mean"] = torch.as_tensor(split.mean)
    tensors["scaler.std"] = torch.as_tensor(split.std)
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
        },
        "metrics": metrics,
        "data_fingerprint": split_fingerprint(split),
        "git_commit": _git_commit(),
        "library_versions": _versions(),
    }
    return tensors, metadata
