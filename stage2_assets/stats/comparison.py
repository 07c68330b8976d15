"""Paired comparison of a candidate with production on the same rows: the gate's decision and the
figures reported beside it.

The decision is the sequential, day-clustered test of ``gate.py`` on a proper score. Reported
beside it, never deciding: the accuracy difference with a day-block bootstrap interval (whole days
are resampled: the rows of one day share the market's move), McNemar's exact test on paired
correctness, the mean log-loss gain and its per-day effect size, and the difference of the daily
strategy returns. Everything is recomputable from the stored predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from stage2_assets.stats.gate import (
    INCONCLUSIVE,
    INSUFFICIENT,
    KEEP,
    PROMOTE,
    REJECT,
    GateResult,
    GateRule,
    daily_gains,
    evaluate_gate,
    row_scores,
)

__all__ = ["INCONCLUSIVE", "INSUFFICIENT", "KEEP", "PROMOTE", "REJECT", "Comparison"]
# A decision that ends the shadow: the candidate leaves it.
FINAL_DECISIONS = (PROMOTE, REJECT, KEEP)


@dataclass
class Comparison:
    rows: int
    days: int
    candidate_accuracy: float
    production_accuracy: float
    accuracy_diff: float
    ci: tuple[float, float]
    p_mcnemar: float
    p_paired: float  # the gate's one-sided fixed-sample p of its last look
    discordant: dict = field(default_factory=dict)
    logloss_diff: float = 0.0
    effect_size: float = 0.0
    strategy_return_diff: float = 0.0
    decision: str = INSUFFICIENT
    reason: str = ""
    gate: dict = field(default_factory=dict)

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


def gate_decision(
    paired: pd.DataFrame, rule: GateRule, min_samples: int, memo: dict | None = None
) -> tuple[GateResult, pd.DataFrame]:
    """The gate's decision alone, and the rows of the days it used (rows without an outcome left
    out; fewer than ``min_samples`` of them: insufficient data). ``memo``: ``evaluate_gate``'s."""
    data = paired.dropna(subset=["label", "prob_candidate", "prob_production"])
    days = daily_gains(data, rule.metric)
    gate = decision_on_days(days, rule, min_samples, memo)
    if gate.days and gate.decision != INSUFFICIENT:
        data = data[pd.to_datetime(data["date"]).isin(days["date"].iloc[: gate.days])]
    return gate, data


def decision_on_days(
    days: pd.DataFrame, rule: GateRule, min_samples: int, memo: dict | None = None
) -> GateResult:
    """``gate_decision`` from the day table of ``daily_gains``."""
    gate = evaluate_gate(None, rule, memo, days=days)
    if gate.decision != INSUFFICIENT:
        rows = int(days["rows"].iloc[: gate.days].sum())
        if rows < min_samples:
            gate.decision = INSUFFICIENT
            gate.reason = (
                f"{rows} paired rows with outcomes; ab_testing.min_samples asks for {min_samples}"
            )
    return gate


def compare(
    paired: pd.DataFrame,
    rule: GateRule,
    *,
    min_samples: int,
    bootstrap_samples: int,
    seed: int = 0,
) -> Comparison:
    """The gate's decision on rows with ``date``, ``label``, ``fwd_return``, ``prob_candidate``,
    ``prob_production``, and the reported figures over the days the gate used.

    Rows without an outcome are left out. Never raises on thin data: it decides
    ``insufficient data``.
    """
    gate, data = gate_decision(paired, rule, min_samples)
    rows = len(data)
    if rows == 0:
        return Comparison(
            rows=0,
            days=0,
            candidate_accuracy=float("nan"),
            production_accuracy=float("nan"),
            accuracy_diff=0.0,
            ci=(0.0, 0.0),
            p_mcnemar=1.0,
            p_paired=1.0,
            decision=gate.decision,
            reason=gate.reason,
            gate=gate.to_dict(),
        )
    label = data["label"].to_numpy(dtype=float)
    cand_p = data["prob_candidate"].to_numpy(dtype=float)
    prod_p = data["prob_production"].to_numpy(dtype=float)
    cand_ok = (cand_p > 0.5) == (label == 1)
    prod_ok = (prod_p > 0.5) == (label == 1)
    p_mc, b, c = mcnemar_exact(cand_ok, prod_ok)
    day_codes = pd.factorize(pd.to_datetime(data["date"]))[0]
    loss_gain = row_scores(prod_p, label, "log_loss") - row_scores(
        cand_p, label, "log_loss"
    )  # > 0: the candidate is better
    per_day_gain = pd.Series(loss_gain).groupby(day_codes).mean().to_numpy()
    spread = per_day_gain.std(ddof=1) if len(per_day_gain) > 1 else 0.0
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
    level = 0.95
    ci = day_block_bootstrap_ci(
        day_codes,
        cand_ok.astype(float) - prod_ok.astype(float),
        level,
        bootstrap_samples,
        seed,
    )
    return Comparison(
        rows=rows,
        days=int(len(per_day_gain)),
        candidate_accuracy=float(cand_ok.mean()),
        production_accuracy=float(prod_ok.mean()),
        accuracy_diff=float(cand_ok.mean() - prod_ok.mean()),
        ci=ci,
        p_mcnemar=p_mc,
        p_paired=float(gate.p_value) if np.isfinite(gate.p_value) else 1.0,
        discordant={"candidate_only": b, "production_only": c},
        logloss_diff=float(loss_gain.mean()),
        effect_size=float(per_day_gain.mean() / spread) if spread > 0 else 0.0,
        strategy_return_diff=float((strategy["cand"] - strategy["prod"]).mean()),
        decision=gate.decision,
        reason=gate.reason,
        gate=gate.to_dict(),
    )


def compare_under(paired: pd.DataFrame, ab, seed: int) -> Comparison:
    """``compare`` with the rule of the ``ab_testing`` settings."""
    return compare(
        paired,
        GateRule.from_settings(ab),
        min_samples=ab.min_samples,
        bootstrap_samples=ab.bootstrap_samples,
        seed=seed,
    )


def gate_result(comparison: Comparison) -> GateResult:
    return GateResult(**comparison.gate)
