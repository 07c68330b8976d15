"""Paired comparison of a candidate with production on the same rows, and the promotion decision.

The decision rests on one primary test, McNemar's exact test on paired correctness, so the
false-promotion rate of an identical candidate stays at or below the significance level; a
candidate is promoted only when it is significantly better and its accuracy gain reaches the
configured minimum. The secondary statistics (a paired t-test on per-day log-loss differences,
its effect size, a day-block bootstrap interval for the accuracy difference, the per-day strategy
returns) are reported and stored with the decision, which can be recomputed from the stored rows.

Rows within one day share the market's move, so the bootstrap resamples whole days.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

PROMOTE, KEEP, INSUFFICIENT = "promote", "keep", "insufficient data"
_EPS = 1e-7


@dataclass
class Comparison:
    rows: int
    days: int
    candidate_accuracy: float
    production_accuracy: float
    accuracy_diff: float
    ci: tuple[float, float]
    p_mcnemar: float
    p_paired: float
    discordant: dict = field(default_factory=dict)
    logloss_diff: float = 0.0
    effect_size: float = 0.0
    strategy_return_diff: float = 0.0
    decision: str = INSUFFICIENT
    reason: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def mcnemar_exact(
    candidate_correct: np.ndarray, production_correct: np.ndarray
) -> tuple[float, int, int]:
    """Two-sided exact McNemar p-value and the discordant counts (candidate-only, production-only)."""
    cand = np.asarray(candidate_correct, dtype=bool)
    prod = np.asarray(production_correct, dtype=bool)
    b = int((cand & ~prod).sum())
    c = int((~cand & prod).sum())
    if b + c == 0:
        return 1.0, b, c
    return float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue), b, c


def _log_loss(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    p = np.clip(prob, _EPS, 1 - _EPS)
    return -(label * np.log(p) + (1 - label) * np.log(1 - p))


def day_block_bootstrap_ci(
    day_codes: np.ndarray, diff: np.ndarray, level: float, samples: int, seed: int
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diff``, resampling whole days (seeded, reproducible)."""
    days = np.unique(day_codes)
    sums = pd.Series(diff).groupby(day_codes).sum().reindex(days).to_numpy()
    counts = pd.Series(diff).groupby(day_codes).size().reindex(days).to_numpy()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(days), size=(samples, len(days)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def compare(
    paired: pd.DataFrame,
    *,
    significance_level: float,
    min_improvement: float,
    min_samples: int,
    bootstrap_samples: int,
    seed: int = 0,
) -> Comparison:
    """Compare on rows with ``date``, ``label``, ``fwd_return``, ``prob_candidate``, ``prob_production``.

    Rows without an outcome are left out. Never raises on thin data: it decides ``insufficient data``.
    """
    data = paired.dropna(subset=["label", "prob_candidate", "prob_production"])
    rows, days = len(data), int(data["date"].nunique()) if len(data) else 0
    if rows < min_samples or days < 2:
        return Comparison(
            rows=rows,
            days=days,
            candidate_accuracy=float("nan"),
            production_accuracy=float("nan"),
            accuracy_diff=0.0,
            ci=(0.0, 0.0),
            p_mcnemar=1.0,
            p_paired=1.0,
            decision=INSUFFICIENT,
            reason=f"{rows} paired rows over {days} days with outcomes; at least {min_samples} rows on 2 days are needed",
        )
    label = data["label"].to_numpy(dtype=float)
    cand_p = data["prob_candidate"].to_numpy(dtype=float)
    prod_p = data["prob_production"].to_numpy(dtype=float)
    cand_ok = (cand_p > 0.5) == (label == 1)
    prod_ok = (prod_p > 0.5) == (label == 1)
    p_mc, b, c = mcnemar_exact(cand_ok, prod_ok)
    day_codes = pd.factorize(pd.to_datetime(data["date"]))[0]

    loss_gain = _log_loss(prod_p, label) - _log_loss(cand_p, label)  # > 0: the candidate is better
    per_day_gain = pd.Series(loss_gain).groupby(day_codes).mean().to_numpy()
    if per_day_gain.std(ddof=1) > 0:
        p_paired = float(stats.ttest_1samp(per_day_gain, 0.0).pvalue)
        effect = float(per_day_gain.mean() / per_day_gain.std(ddof=1))
    else:
        p_paired, effect = 1.0, 0.0

    fwd = data["fwd_return"].to_numpy(dtype=float)
    strategy = (
        pd.DataFrame(
            {
                "day": day_codes,
                "cand": np.sign(cand_p - 0.5) * fwd,
                "prod": np.sign(prod_p - 0.5) * fwd,
            }
        )
        .groupby("day")
        .mean()
    )

    acc_diff = float(cand_ok.mean() - prod_ok.mean())
    ci = day_block_bootstrap_ci(
        day_codes,
        cand_ok.astype(float) - prod_ok.astype(float),
        1 - significance_level,
        bootstrap_samples,
        seed,
    )
    result = Comparison(
        rows=rows,
        days=days,
        candidate_accuracy=float(cand_ok.mean()),
        production_accuracy=float(prod_ok.mean()),
        accuracy_diff=acc_diff,
        ci=ci,
        p_mcnemar=p_mc,
        p_paired=p_paired,
        discordant={"candidate_only": b, "production_only": c},
        logloss_diff=float(loss_gain.mean()),
        effect_size=effect,
        strategy_return_diff=float((strategy["cand"] - strategy["prod"]).mean()),
    )
    if acc_diff > 0 and p_mc < significance_level and acc_diff >= min_improvement:
        result.decision = PROMOTE
        result.reason = (
            f"candidate is {acc_diff:+.2%} more accurate on {rows} paired rows "
            f"(McNemar p={p_mc:.4f} < {significance_level})"
        )
    elif acc_diff > 0 and p_mc < significance_level:
        result.decision = KEEP
        result.reason = f"significant (p={p_mc:.4f}) but the gain {acc_diff:+.2%} is below min_improvement {min_improvement:.2%}"
    elif acc_diff == 0 and b == c:
        result.decision = KEEP
        result.reason = f"a tie: both right on the same share of {rows} rows"
    else:
        result.decision = KEEP
        result.reason = (
            f"not significantly better: accuracy {acc_diff:+.2%}, McNemar p={p_mc:.4f} >= {significance_level}"
            if p_mc >= significance_level
            else f"candidate is worse ({acc_diff:+.2%}, p={p_mc:.4f})"
        )
    return result


def compare_under(paired: pd.DataFrame, ab, seed: int) -> Comparison:
    """``compare`` with the rule of the ``ab_testing`` settings."""
    return compare(
        paired,
        significance_level=ab.significance_level,
        min_improvement=ab.min_improvement,
        min_samples=ab.min_samples,
        bootstrap_samples=ab.bootstrap_samples,
        seed=seed,
    )
