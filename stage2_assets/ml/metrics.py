"""Classification and calibration metrics: the one definition used by training, shadow and replay.

Confidence is defined once, here: the probability a model gives to the direction it predicts,
``max(p_up, 1 - p_up)``, between 0.5 and 1. Expected calibration error compares that confidence
with the hit rate, over equal-width bins of confidence.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7
ECE_BINS = 10


def confidence(prob_up: np.ndarray) -> np.ndarray:
    """The probability of the predicted direction."""
    prob_up = np.asarray(prob_up, dtype=float)
    return np.maximum(prob_up, 1.0 - prob_up)


def expected_calibration_error(
    prob_up: np.ndarray, label: np.ndarray, bins: int = ECE_BINS
) -> float:
    conf = confidence(prob_up)
    correct = ((np.asarray(prob_up) > 0.5) == (np.asarray(label) == 1)).astype(float)
    edges = np.linspace(0.5, 1.0, bins // 2 + 1)  # confidence lies in [0.5, 1]
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)
    ece = 0.0
    for b in range(len(edges) - 1):
        mask = index == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_metrics(prob_up: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, log loss, Brier score, ECE and mean confidence."""
    p = np.clip(np.asarray(prob_up, dtype=float), EPS, 1 - EPS)
    y = np.asarray(label, dtype=float)
    predicted = p > 0.5
    positives, negatives = y == 1, y == 0
    recall_up = predicted[positives].mean() if positives.any() else np.nan
    recall_down = (~predicted[negatives]).mean() if negatives.any() else np.nan
    return {
        "accuracy": float((predicted == positives).mean()),
        "balanced_accuracy": float(np.nanmean([recall_up, recall_down])),
        "log_loss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()),
        "brier": float(((p - y) ** 2).mean()),
        "ece": expected_calibration_error(p, y),
        "mean_confidence": float(confidence(p).mean()),
        "share_up": float(predicted.mean()),
        "rows": int(len(y)),
    }


def majority_baseline(train_label: np.ndarray, rows: int) -> np.ndarray:
    """Always the training slice's share of up days: predicts its majority class, calibrated."""
    return np.full(rows, float(np.mean(train_label)))


def yesterday_baseline(
    train_ret_1d: np.ndarray, train_label: np.ndarray, ret_1d: np.ndarray
) -> np.ndarray:
    """Predict yesterday's direction again, with the rule's hit rate on the training slice as probability."""
    hit_rate = float(np.mean((np.asarray(train_ret_1d) > 0) == (np.asarray(train_label) == 1)))
    return np.where(np.asarray(ret_1d) > 0, hit_rate, 1.0 - hit_rate)
