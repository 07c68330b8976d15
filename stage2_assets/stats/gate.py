"""The promotion gate: a sequential, day-clustered test of a candidate against production.

Rows of one day are not independent (the market moves every stock, and each model carries its own
view of the market), so the unit of evidence is the day. Per shadow day, ``gain`` is the mean over
that day's symbols of production's proper score minus the candidate's (log loss or Brier; positive:
the candidate is better), on exactly the same (symbol, date) rows.

The test, looked at on every labelled day:

- statistic: Diebold and Mariano's on ``gain - min_improvement``, its variance the larger of the
  plain and the Newey-West (HAC, statsmodels) long-run variance, with the Harvey, Leybourne and
  Newbold small-sample correction; referred to Student's t with days - 1 degrees of freedom.
- sequential error control: a group-sequential boundary with alpha spending (``sequential.py``),
  one look per labelled day from the first look (the minimum shadow) to the last (the maximum);
  the t value is mapped to the normal scale through its own distribution before it meets the
  boundary. Looking every day thus keeps P(promote | candidate no better) at ``alpha``.
- ``promote``: the statistic crosses the boundary, i.e. the repeated lower confidence bound of the
  mean daily gain clears ``min_improvement``;
  ``reject`` (futility): the repeated upper bound at ``futility_level`` falls below it;
  ``inconclusive``: neither yet (the shadow goes on, up to the maximum); ``insufficient data``:
  fewer labelled days than the first look.
- ``mde``: the mean daily gain that this look would detect with 80% power, given the spread of the
  daily gains seen so far.

The first decision stands: the stepping stops on the day the boundary is first crossed, as the live
loop does. The accuracy difference, with a day-block bootstrap interval, and McNemar's test are
reported beside it; they do not decide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.sandwich_covariance import S_hac_simple

from stage2_assets.stats.sequential import boundary_at

PROMOTE, REJECT, INCONCLUSIVE, KEEP, INSUFFICIENT = (
    "promote",
    "reject",
    "inconclusive",
    "keep",
    "insufficient data",
)
METRICS = ("log_loss", "brier")
PAIRED_COLUMNS = ("date", "symbol", "label", "fwd_return", "prob_candidate", "prob_production")
_EPS = 1e-7
_POWER_Z = stats.norm.isf(0.2)  # 80% power for the minimum detectable effect


@dataclass(frozen=True)
class GateRule:
    """The decision rule of one comparison (the ``ab_testing`` settings, resolved)."""

    alpha: float  # one-sided level of this comparison
    metric: str = "log_loss"
    min_improvement: float = 0.0  # in units of the metric's mean daily gain
    first_look: int = 5  # labelled days before the first look (the minimum shadow)
    max_looks: int = 40  # labelled days at which the shadow ends (the maximum)
    spending_rho: float = 3.0
    futility_level: float = 0.05
    min_symbols: int = 1  # a day with fewer paired symbols is not a look

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.first_look > self.max_looks:
            raise ValueError(
                f"first look ({self.first_look} days) lies after the last ({self.max_looks})"
            )

    @classmethod
    def from_settings(cls, ab, alpha: float | None = None) -> GateRule:
        """The rule of the ``ab_testing`` settings (``alpha`` overrides the per-test level)."""
        return cls(
            alpha=ab.alpha if alpha is None else alpha,
            metric=ab.metric,
            min_improvement=ab.min_improvement,
            first_look=ab.first_look,
            max_looks=ab.max_looks,
            spending_rho=ab.spending_rho,
            futility_level=ab.futility_level,
        )

    def boundary(self, look: int) -> float:
        return boundary_at(self.alpha, self.max_looks, self.spending_rho, self.first_look, look)

    def futility_boundary(self, look: int) -> float:
        return boundary_at(
            self.futility_level, self.max_looks, self.spending_rho, self.first_look, look
        )


@dataclass
class GateResult:
    decision: str
    decided_on: str | None  # the day whose outcome decided (ISO date), None while undecided
    days: int  # labelled days used
    rows: int
    metric: str
    statistic: float
    p_value: float  # one-sided fixed-sample p of this look, reported; the boundary decides
    effect: float  # mean daily gain of the candidate, metric units
    lower_bound: float  # repeated (sequential) one-sided lower confidence bound of ``effect``
    upper_bound: float
    mde: float
    boundary: float  # z the statistic had to reach on this look
    nominal_level: float  # the boundary as a one-sided level for this look
    alpha: float
    reason: str = ""
    trajectory: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def row_scores(prob: np.ndarray, label: np.ndarray, metric: str) -> np.ndarray:
    """Per-row proper score (lower is better)."""
    p = np.clip(np.asarray(prob, dtype=float), _EPS, 1 - _EPS)
    y = np.asarray(label, dtype=float)
    if metric == "log_loss":
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if metric == "brier":
        return (p - y) ** 2
    raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")


def daily_gains(paired: pd.DataFrame, metric: str, by: str | None = None):
    """One row per day: date, rows, gain (production's score - the candidate's), accuracy gain.

    ``by`` names a column of ``paired`` (several candidates' rows at once): then a dict of such
    tables, one per value, each the same, bit for bit, as the table of that value's rows alone
    (the mean of a group depends only on its own rows, in their order)."""
    label = paired["label"].to_numpy(dtype=float)
    cand = paired["prob_candidate"].to_numpy(dtype=float)
    prod = paired["prob_production"].to_numpy(dtype=float)
    known = ~(np.isnan(label) | np.isnan(cand) | np.isnan(prod))
    if not known.any():
        return {} if by else pd.DataFrame(columns=["date", "rows", "gain", "accuracy_gain"])
    label, cand, prod = label[known], cand[known], prod[known]
    dates = paired["date"].to_numpy()
    if not np.issubdtype(dates.dtype, np.datetime64):
        dates = pd.to_datetime(paired["date"]).to_numpy()
    frame = pd.DataFrame(
        {
            "date": dates[known],
            "gain": row_scores(prod, label, metric) - row_scores(cand, label, metric),
            "accuracy_gain": ((cand > 0.5) == (label == 1)).astype(float)
            - ((prod > 0.5) == (label == 1)).astype(float),
        }
    )
    if by is None:
        grouped = frame.groupby("date", sort=True)
        out = grouped[["gain", "accuracy_gain"]].mean()
        out.insert(0, "rows", grouped.size())
        return out.reset_index()
    frame.insert(0, by, paired[by].to_numpy()[known])
    grouped = frame.groupby([by, "date"], sort=True)
    out = grouped[["gain", "accuracy_gain"]].mean()
    out.insert(0, "rows", grouped.size())
    out = out.reset_index(level="date")
    return {key: part.reset_index(drop=True) for key, part in out.groupby(level=0, sort=False)}


def long_run_variance(x: np.ndarray) -> float:
    """The larger of the plain variance and the Newey-West HAC long-run variance of ``x``.

    Lags: the usual rule floor(4 (n/100)^(2/9)). Taking the larger keeps a small sample's
    HAC estimate (often biased low) from making the test bolder than the plain one.
    """
    n = len(x)
    centred = (np.asarray(x, dtype=float) - np.mean(x))[:, None]
    lags = int(np.floor(4 * (n / 100) ** (2 / 9)))
    hac = float(S_hac_simple(centred, nlags=min(lags, n - 1))[0, 0]) / n
    plain = float(np.var(x, ddof=1))
    return max(hac, plain)


def dm_statistic(gains: np.ndarray, min_improvement: float = 0.0) -> tuple[float, float, float]:
    """(statistic, standard error of the mean, one-sided p) of Diebold-Mariano with HLN correction.

    H0: the mean daily gain is at most ``min_improvement``. One-step-ahead comparison (h = 1):
    the HLN factor is sqrt((n - 1) / n), and the statistic is referred to t with n - 1 d.f.
    """
    x = np.asarray(gains, dtype=float)
    n = len(x)
    if n < 2:
        return 0.0, float("inf"), 1.0
    variance = long_run_variance(x)
    if variance <= 0:
        diff = x.mean() - min_improvement
        stat = float(np.sign(diff) * np.inf) if diff else 0.0
        return stat, 0.0, 0.0 if stat > 0 else 1.0
    # HLN: DM * sqrt((n + 1 - 2h + h(h - 1)/n) / n), h = 1; folded into the standard error.
    se = float(np.sqrt(variance / n) / np.sqrt((n - 1) / n))
    stat = float((x.mean() - min_improvement) / se)
    return stat, se, float(special.stdtr(n - 1, -stat))


# scipy.special's distribution functions: the same values as scipy.stats', a hundred times faster
# (the gate takes several per look, and the benchmark runs it on many thousand streams).
def _normal_scale(stat: float, days: int) -> float:
    """The t statistic (days - 1 d.f.) mapped to the normal value with the same tail."""
    if not np.isfinite(stat):
        return stat
    return float(-special.ndtri(special.stdtr(days - 1, -abs(stat)))) * (1 if stat >= 0 else -1)


def _t_scale(z: float, days: int) -> float:
    """The t value (days - 1 d.f.) with the same tail as the normal value ``z``."""
    if not np.isfinite(z):
        return z
    return float(-special.stdtrit(days - 1, special.ndtr(-abs(z)))) * (1 if z >= 0 else -1)


def evaluate_gate(
    paired: pd.DataFrame,
    rule: GateRule,
    memo: dict | None = None,
    days: pd.DataFrame | None = None,
) -> GateResult:
    """Step through the paired rows day by day as the live loop would, and return the decision.

    ``paired`` has PAIRED_COLUMNS (``fwd_return`` unused here); rows without an outcome are left
    out. The decision is the first crossing, or ``inconclusive`` / ``insufficient data`` on the
    last labelled day given. ``memo`` (a dict kept by the caller, one per rule) remembers each
    look by its days' gains, so stepping again through a longer shadow (a sweep, week after
    week) recomputes only the new looks; the result is the same.
    """
    if days is None:  # ``days``: ``daily_gains`` of ``paired``, when the caller has them
        days = daily_gains(paired, rule.metric)
    rows_by_day = days["rows"].to_numpy()
    looked = rows_by_day >= rule.min_symbols
    rows_by_day = rows_by_day[looked]
    gains = days["gain"].to_numpy(dtype=float)[looked]
    dates = np.datetime_as_string(
        days["date"].to_numpy(dtype="datetime64[ns]")[looked], unit="D"
    ).tolist()
    trajectory = []
    last = None
    for look in range(rule.first_look, min(len(gains), rule.max_looks) + 1):
        if memo is None:
            last = _look(gains[:look], rule, look)
        else:
            key = gains[:look].tobytes()
            last = memo.get(key)
            if last is None:
                last = memo[key] = _look(gains[:look], rule, look)
        trajectory.append(
            {"day": dates[look - 1], "statistic": last["statistic"], "boundary": last["boundary"]}
        )
        if last["decision"] in (PROMOTE, REJECT):
            break
    if last is None:
        n = len(gains)
        effect = float(gains.mean()) if n else float("nan")
        return GateResult(
            decision=INSUFFICIENT,
            decided_on=None,
            days=n,
            rows=int(rows_by_day.sum()),
            metric=rule.metric,
            statistic=float("nan"),
            p_value=float("nan"),
            effect=effect,
            lower_bound=float("nan"),
            upper_bound=float("nan"),
            mde=float("nan"),
            boundary=rule.boundary(rule.first_look),
            nominal_level=float("nan"),
            alpha=rule.alpha,
            reason=f"{n} labelled shadow days; the first look needs {rule.first_look}",
        )
    used = last["days"]
    decided = last["decision"] in (PROMOTE, REJECT)
    ended = used >= rule.max_looks
    decision = last["decision"] if decided else (KEEP if ended else INCONCLUSIVE)
    return GateResult(
        decision=decision,
        decided_on=dates[used - 1] if decided or ended else None,
        days=used,
        rows=int(rows_by_day[:used].sum()),
        metric=rule.metric,
        statistic=last["statistic"],
        p_value=last["p_value"],
        effect=last["effect"],
        lower_bound=last["lower_bound"],
        upper_bound=last["upper_bound"],
        mde=last["mde"],
        boundary=last["boundary"],
        nominal_level=float(special.ndtr(-last["boundary"])),
        alpha=rule.alpha,
        reason=_reason(decision, last, rule),
        trajectory=trajectory,
    )


def _look(gains: np.ndarray, rule: GateRule, look: int) -> dict:
    stat, se, p_value = dm_statistic(gains, rule.min_improvement)
    z = _normal_scale(stat, look)
    bound, futile = rule.boundary(look), rule.futility_boundary(look)
    effect = float(gains.mean())
    t_bound, t_futile = _t_scale(bound, look), _t_scale(futile, look)
    lower = effect - t_bound * se
    upper = effect + t_futile * se
    if z >= bound:
        decision = PROMOTE
    elif upper < rule.min_improvement:
        decision = REJECT
    else:
        decision = INCONCLUSIVE
    return {
        "days": look,
        "statistic": stat,
        "p_value": p_value,
        "effect": effect,
        "lower_bound": float(lower),
        "upper_bound": float(upper),
        "mde": float(rule.min_improvement + (t_bound + _POWER_Z) * se),
        "boundary": bound,
        "decision": decision,
    }


def _reason(decision: str, look: dict, rule: GateRule) -> str:
    units = "log loss" if rule.metric == "log_loss" else "Brier score"
    gain = (
        f"mean daily {units} gain {look['effect']:+.5f} over {look['days']} days "
        f"(sequential {1 - rule.alpha:.2%} lower bound {look['lower_bound']:+.5f}, "
        f"DM-HLN t={look['statistic']:.2f} against a boundary of z={look['boundary']:.2f})"
    )
    if decision == PROMOTE:
        return f"candidate is better: {gain} clears min_improvement {rule.min_improvement:g}"
    if decision == REJECT:
        return (
            f"futility: {gain}; the upper bound {look['upper_bound']:+.5f} shows it cannot reach "
            f"min_improvement {rule.min_improvement:g}"
        )
    if decision == KEEP:
        return f"inconclusive after the maximum shadow ({rule.max_looks} days): {gain}"
    return (
        f"inconclusive so far: {gain}; a gain of {look['mde']:+.5f} would be detected "
        "with 80% power at this look"
    )


def choose_among(daily_losses: pd.DataFrame, order: list[str], size: float, seed: int) -> dict:
    """Which of several candidates that passed on the same run to promote.

    ``daily_losses``: one column per candidate, one row per day all of them were scored on (the
    mean proper score, lower is better). Hansen, Lunde and Nason's Model Confidence Set (``arch``,
    stationary block bootstrap over days) keeps the candidates that cannot be told apart from the
    best at level ``size``; among those, the newest (``order``: oldest first) is promoted, since it
    has seen the most recent data. Never the largest point gain. With fewer than 5 common days the
    set cannot be estimated and the newest passing candidate is taken: each has passed its own test.
    """
    from arch.bootstrap import MCS

    columns = [c for c in order if c in daily_losses.columns]
    frame = daily_losses[columns].dropna()
    if len(columns) == 1 or len(frame) < 5:
        return {"chosen": columns[-1], "included": columns, "method": "newest passing candidate"}
    mcs = MCS(frame, size=size, reps=1000, seed=seed)
    mcs.compute()
    included = [c for c in columns if c in set(mcs.included)]
    return {
        "chosen": included[-1],
        "included": included,
        "method": f"model confidence set at {size:g} over {len(frame)} common days, newest kept",
    }
