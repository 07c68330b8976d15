"""Classification and calibration metrics: the one definition used by training, shadow and replay.

Confidence is defined once, here: the probability a model gives to the direction it predicts,
``max(p_up, 1 - p_up)``, between 0.5 and 1.

Calibration is judged on P(up) itself, over equal-mass bins (each holds the same number of rows,
sorted by P(up)): a model whose probabilities all lie near 0.52 still gets ``bins`` bins, where
equal-width bins of confidence would put nearly every row in one. ECE is the row-weighted
|mean P(up) - share of up labels| over those bins; the Brier score is split the same way into
reliability - resolution + uncertainty (Murphy, 1973); the Brier skill score compares it with a
climatology forecast (a base rate of up days known beforehand): 1 - Brier / Brier(climatology).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7
ECE_BINS = 10


def confidence(prob_up: np.ndarray) -> np.ndarray:
    """The probability of the predicted direction."""
    prob_up = np.asarray(prob_up, dtype=float)
    return np.maximum(prob_up, 1.0 - prob_up)


def equal_mass_bins(prob_up: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each row: rows sorted by P(up), cut into ``bins`` groups of equal size."""
    order = np.argsort(np.asarray(prob_up, dtype=float), kind="stable")
    index = np.empty(len(order), dtype=int)
    index[order] = np.arange(len(order)) * bins // max(len(order), 1)
    return index


def expected_calibration_error(
    prob_up: np.ndarray, label: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Row-weighted |mean P(up) - share up| over equal-mass bins of P(up)."""
    p = np.asarray(prob_up, dtype=float)
    y = np.asarray(label, dtype=float)
    if len(p) == 0:
        return float("nan")
    index = equal_mass_bins(p, bins)
    counts = np.bincount(index, minlength=bins)
    used = counts > 0
    mean_p = np.bincount(index, weights=p, minlength=bins)[used] / counts[used]
    mean_y = np.bincount(index, weights=y, minlength=bins)[used] / counts[used]
    return float(np.sum(counts[used] / len(p) * np.abs(mean_p - mean_y)))


def brier_decomposition(prob_up: np.ndarray, label: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Murphy's reliability, resolution and uncertainty over equal-mass bins of P(up)."""
    p = np.asarray(prob_up, dtype=float)
    y = np.asarray(label, dtype=float)
    if len(p) == 0:
        return {
            "reliability": float("nan"),
            "resolution": float("nan"),
            "uncertainty": float("nan"),
        }
    index = equal_mass_bins(p, bins)
    counts = np.bincount(index, minlength=bins)
    used = counts > 0
    weight = counts[used] / len(p)
    mean_p = np.bincount(index, weights=p, minlength=bins)[used] / counts[used]
    mean_y = np.bincount(index, weights=y, minlength=bins)[used] / counts[used]
    base = y.mean()
    return {
        "reliability": float(np.sum(weight * (mean_p - mean_y) ** 2)),
        "resolution": float(np.sum(weight * (mean_y - base) ** 2)),
        "uncertainty": float(base * (1 - base)),
    }


def brier_skill_score(prob_up: np.ndarray, label: np.ndarray, climatology: float) -> float:
    """1 - Brier / Brier of always forecasting ``climatology`` (a base rate known beforehand)."""
    y = np.asarray(label, dtype=float)
    reference = float(np.mean((climatology - y) ** 2))
    if reference == 0:
        return float("nan")
    return float(1 - np.mean((np.asarray(prob_up, dtype=float) - y) ** 2) / reference)


def classification_metrics(
    prob_up: np.ndarray,
    label: np.ndarray,
    climatology: float | None = None,
    bins: int = ECE_BINS,
) -> dict[str, float]:
    """Accuracy, balanced accuracy, log loss, Brier score and its decomposition, ECE (equal-mass
    bins), mean confidence, the always-up accuracy of these rows (their share of up labels) and,
    given a climatology base rate, the Brier skill score against it."""
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
        "ece": expected_calibration_error(p, y, bins),
        "mean_confidence": float(confidence(p).mean()),
        "share_up": float(predicted.mean()),
        "rows": int(len(y)),
        "always_up_accuracy": float(positives.mean()) if len(y) else float("nan"),
        **brier_decomposition(p, y, bins),
        **(
            {"brier_skill": brier_skill_score(p, y, climatology), "climatology": float(climatology)}
            if climatology is not None
            else {}
        ),
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
