"""Scoring a replay: the adaptive arm against static arms, on the same rows.

Arms, each a rule for which version serves on a day:
- ``adaptive``: what the production pointer served (its moves, effective after each decision's as-of date);
- ``frozen``: the first production model, never replaced;
- ``always_promote``: the newest candidate, served from the day after its cut-off, without any test.

Every arm is scored from the predictions logged during the replay (the ``predictions`` table: each
version logs every day it could serve in some arm, see ``promotion.shadow.tracked_models``), on
exactly the same (symbol, date) rows: days on which every arm's version logged a prediction and the
outcome is known by the replay's last as-of date. The versions and their cut-offs come from the
store's event log, so nothing depends on which versions retention left on disk. Intervals resample
whole days with a fixed seed: the report is reproducible bit for bit.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from stage2_assets.ml.metrics import brier_skill_score, classification_metrics
from stage2_assets.promotion.shadow import trailing_base_rate
from stage2_assets.resources.model_store import POINTER_MOVES, ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets.stats import evidence

ARMS = ("adaptive", "frozen", "always_promote")
BLOCK_DAYS = 5  # bootstrap blocks of a trading week: regimes persist across days


def serving_rules(store: ModelStore) -> dict[str, list[tuple[dt.date, str]]]:
    """Per arm: (effective after this date, version), in time order."""
    moves = [
        (dt.date.fromisoformat(e["as_of"]), e["version"])
        for e in store.events()
        if e["event"] in POINTER_MOVES and e.get("as_of")
    ]
    moves.sort(key=lambda m: m[0])
    candidates = sorted(
        (dt.date.fromisoformat(cutoff), v) for v, cutoff in store.trained_cutoffs().items()
    )
    return {"adaptive": moves, "frozen": moves[:1], "always_promote": candidates}


def _serving(dates: pd.Series, rule: list[tuple[dt.date, str]]) -> pd.Series:
    if not rule:
        return pd.Series(None, index=dates.index, dtype=object)
    effective = np.array([np.datetime64(d) for d, _ in rule], dtype="datetime64[ns]")
    index = (
        effective.searchsorted(dates.to_numpy(dtype="datetime64[ns]"), side="left") - 1
    )  # strictly after
    versions = np.array([v for _, v in rule], dtype=object)
    return pd.Series(
        np.where(index >= 0, versions[np.clip(index, 0, None)], None), index=dates.index
    )


def _logged(
    warehouse: Warehouse, versions: list[str], first: dt.date, last: dt.date
) -> pd.DataFrame:
    """The logged P(up) of ``versions`` on the days from ``first`` to ``last``."""
    columns = ["model_version", "symbol", "date", "prob_up"]
    if not versions:
        return pd.DataFrame(
            {
                "model_version": pd.Series(dtype=object),
                "symbol": pd.Series(dtype=object),
                "date": pd.Series(dtype="datetime64[ns]"),
                "prob_up": pd.Series(dtype=float),
            }
        )
    marks = ", ".join("?" for _ in versions)
    with warehouse.connect(read_only=True) as conn:
        out = conn.execute(
            "SELECT model_version, symbol, CAST(date AS TIMESTAMP) AS date, prob_up FROM predictions "
            f"WHERE model_version IN ({marks}) AND date >= ? AND date <= ?",
            [*versions, first, last],
        ).df()
    out["date"] = out["date"].astype("datetime64[ns]")
    return out[columns]


def _arm_figures(
    rows: pd.DataFrame,
    *,
    cost_bps: float,
    samples: int,
    seed: int,
    horizon: int,
    fraction: float,
    climatology: float,
    block_days: int = BLOCK_DAYS,
) -> tuple[dict, pd.DataFrame]:
    """An arm's figures on its rows, and its day table (for the paired differences)."""
    metrics = classification_metrics(rows["prob_up"].to_numpy(), rows["label"].to_numpy())
    out = {
        k: metrics[k]
        for k in (
            "accuracy",
            "balanced_accuracy",
            "mean_confidence",
            "ece",
            "log_loss",
            "brier",
            "rows",
        )
    }
    out["days"] = int(rows["date"].nunique())
    out["brier_skill"] = brier_skill_score(rows["prob_up"], rows["label"], climatology)
    book_daily = evidence.book(rows, fraction, cost_bps)
    out.update(evidence.book_figures(book_daily, horizon))
    out.update(evidence.ic_summary(evidence.daily_ic(rows)))
    days = evidence.day_table(rows, climatology, book_daily)
    alone = evidence.paired_difference(
        days, None, horizon=horizon, samples=samples, seed=seed, block_days=block_days
    )
    # the Sharpe ratio's interval: the book's daily returns, resampled in the same day blocks
    ret = book_daily["ret"].reindex(days.index).fillna(0.0).to_numpy()
    sharpe_ci = None
    if len(ret) >= evidence.MIN_BLOCKS * block_days:
        picks = evidence.block_picks(len(ret), samples, block_days, seed)
        sampled = ret[picks]
        sd = sampled.std(axis=1, ddof=1)
        ratio = np.where(
            sd > 0, np.sqrt(252 / horizon) * sampled.mean(axis=1) / np.where(sd > 0, sd, 1), 0.0
        )
        sharpe_ci = [float(np.quantile(ratio, 0.025)), float(np.quantile(ratio, 0.975))]
    out["ci"] = {
        "accuracy": alone["accuracy"]["ci"],
        "sharpe": sharpe_ci,
        "log_loss": alone["log_loss"]["ci"],
        "brier_skill": alone["brier_skill"]["ci"],
    }
    return out, days


def _baselines(rows: pd.DataFrame, climatology: float) -> dict:
    """Always up, and the climatology forecast (the base rate of up days known before the
    replay), on exactly the arms' rows."""
    label = rows["label"].to_numpy(dtype=float)
    clim = classification_metrics(np.full(len(label), climatology), label, climatology)
    return {
        "always_up": {
            "accuracy": float(label.mean()),
            "brier": float(np.mean((1 - label) ** 2)),
            "brier_skill": brier_skill_score(np.ones(len(label)), label, climatology),
        },
        "climatology": {
            "rate": climatology,
            "accuracy": float(((climatology > 0.5) == (label == 1)).mean()),
            "brier": float(np.mean((climatology - label) ** 2)),
            "log_loss": clim["log_loss"],
            "brier_skill": 0.0,
        },
    }


def _differences(days: dict[str, pd.DataFrame], *, horizon: int, samples: int, seed: int) -> dict:
    """Paired differences with block-bootstrap intervals: adaptive against each other arm, and
    every arm against always-up (accuracy, Brier skill: always-up's log loss is infinite and it
    holds no book, and its Brier skill is that of a hard 0/1 forecast, so only accuracy compares) and
    against climatology (log loss, Brier skill)."""
    out: dict = {}
    for pair, a, b, metrics in [
        ("adaptive - frozen", "adaptive", "frozen", None),
        ("adaptive - always_promote", "adaptive", "always_promote", None),
        ("always_promote - frozen", "always_promote", "frozen", None),
        *[(f"{arm} - always_up", arm, "always_up", ("accuracy",)) for arm in ARMS],
        *[
            (f"{arm} - climatology", arm, "climatology", ("log_loss", "brier_skill"))
            for arm in ARMS
        ],
    ]:
        kwargs = {"metrics": metrics} if metrics else {}
        figures = evidence.paired_difference(
            days[a], days[b], horizon=horizon, samples=samples, seed=seed, **kwargs
        )
        out[pair] = {
            metric: {**f, "verdict": evidence.verdict(metric, f["ci"])}
            for metric, f in figures.items()
        }
    return out


def _cumulative(days: dict[str, pd.DataFrame], horizon: int) -> dict:
    """Per arm and day: accuracy so far, and the book's compounded return so far (each day's
    book earns 1/h of its h-day return): the report's charts."""
    first = days["adaptive"]
    out: dict = {"dates": [str(d.date()) for d in pd.to_datetime(first.index)]}
    for arm in ARMS:
        d = days[arm]
        out[arm] = {
            "accuracy": (d["hits"].cumsum() / d["n"].cumsum()).tolist(),
            "return": (np.cumprod(1 + d["ret"].to_numpy() / horizon) - 1).tolist(),
        }
    return out


def _round(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _regime_change(
    start: dt.date,
    served: list[tuple[dt.date, str]],
    cutoffs: dict[str, str],
    data_window_days: int | None,
    half_life_days: int | None = None,
    untrained_days: float = 0.0,
) -> dict:
    """How long the adaptive arm took to serve a model of the regime that began on ``start``."""

    def new_share(version: str) -> float:
        """The share of the model after the change: of its window's days; or, with recency
        weights 0.5 ** (age / half-life), of its training rows' weight (ages from
        ``untrained_days``, the validation slice and the embargo, to the window)."""
        cutoff = dt.date.fromisoformat(cutoffs[version])
        if not data_window_days:
            return 1.0 if cutoff >= start else 0.0
        after = min(max((cutoff - start).days, 0), data_window_days)
        if not half_life_days:
            return after / data_window_days
        if after <= untrained_days:
            return 0.0
        newest = 0.5 ** (untrained_days / half_life_days)
        oldest = 0.5 ** (data_window_days / half_life_days)
        return (newest - 0.5 ** (after / half_life_days)) / (newest - oldest)

    def weeks(day: dt.date) -> int:
        return int(np.ceil((day - start).days / 7))

    after = [(d, v) for d, v in served if d >= start and cutoffs.get(v, "") >= start.isoformat()]
    fitted = [(d, v) for d, v in after if new_share(v) >= 0.5]
    out: dict = {"change": start.isoformat()}
    if fitted:
        day, version = fitted[0]
        out.update(
            first_promotion_after=day.isoformat(),
            weeks_to_promotion=weeks(day),
            model_cutoff=cutoffs[version],
            new_regime_share_of_window=new_share(version),
        )
    else:
        out.update(
            first_promotion_after=None,
            weeks_to_promotion=None,
            model_cutoff=None,
            new_regime_share_of_window=None,
        )
    out["first_promotion_trained_after"] = after[0][0].isoformat() if after else None
    out["weeks_to_first_promotion_trained_after"] = weeks(after[0][0]) if after else None
    return out


def _accuracy_between(
    scored: dict[str, pd.DataFrame], start: dt.date, end: dt.date | None
) -> dict[str, float | int]:
    """Each arm's accuracy on the rows dated from ``start`` up to (not including) ``end``."""
    out: dict[str, float | int] = {}
    for arm, part in scored.items():
        keep = part["date"] >= pd.Timestamp(start)
        if end is not None:
            keep &= part["date"] < pd.Timestamp(end)
        part = part[keep]
        out["rows"] = int(len(part))
        out[arm] = (
            float(((part["prob_up"] > 0.5) == (part["label"] == 1)).mean()) if len(part) else None
        )
    return out


def evaluate(
    warehouse: Warehouse,
    store: ModelStore,
    weeks: pd.DataFrame,
    cost_bps: float,
    bootstrap_samples: int = 2000,
    seed: int = 0,
    regime_starts: list[dt.date] | None = None,
    data_window_days: int | None = None,
    half_life_days: int | None = None,
    untrained_days: float = 0.0,
    horizon: int = 1,
    book_fraction: float = 0.2,
    *,
    rules: dict[str, list[tuple[dt.date, str]]] | None = None,
    comparisons: pd.DataFrame | None = None,
    rollbacks: int | None = None,
    cache: dict | None = None,
) -> dict:
    """The replay report's figures (``--json-out``): plain, rounded, reproducible.

    ``rules``, ``comparisons`` (candidate, as_of, decision) and ``rollbacks`` replace what the
    stores recorded: a sweep scores the same logged predictions under another gate's decisions,
    keeping in ``cache`` what does not depend on them (the rows, the logs, the static arms).

    For each regime change inside the replay, ``weeks_to_promotion`` counts the weeks to the first
    promotion of a model fitted to the new regime: at least half of its training window (the
    ``data_window_days`` before its cut-off; with recency weights of half-life
    ``half_life_days``, at least half of its training weight) lies after the change. A model whose cut-off merely
    follows the change, trained mostly on the old regime, does not count; the first promotion of
    such a model is reported beside it (``first_promotion_trained_after``).
    """
    first_day = pd.Timestamp(weeks["week"].min())
    last_as_of = pd.Timestamp(weeks["as_of"].max())
    cache = {} if cache is None else cache
    with warehouse.connect(read_only=True) as conn:
        if "features" not in cache:
            cache["features"] = conn.execute(
                "SELECT * FROM features WHERE date >= ? AND date <= ? AND label IS NOT NULL AND label_date <= ? ORDER BY date, symbol",
                [first_day.date(), last_as_of.date(), last_as_of.date()],
            ).df()
        rows = cache["features"].copy()
        if comparisons is None:
            comparisons = conn.execute(
                "SELECT candidate, as_of, decision FROM shadow_comparisons WHERE as_of >= ? AND as_of <= ? ORDER BY as_of",
                [first_day.date(), last_as_of.date()],
            ).df()
    rows["date"] = pd.to_datetime(rows["date"]).astype("datetime64[ns]")
    rules = rules or serving_rules(store)
    for arm in ARMS:
        rows[arm] = _serving(rows["date"], rules[arm])
    rows = rows.dropna(subset=list(ARMS)).reset_index(drop=True)
    served = sorted(set(rows[list(ARMS)].to_numpy().ravel())) if len(rows) else []
    if "logged" not in cache or not set(served) <= cache["logged_versions"]:
        cache["logged"] = _logged(warehouse, served, first_day.date(), last_as_of.date())
        cache["logged_versions"] = set(served)
    logged = cache["logged"]
    if cache["logged_versions"] != set(served):
        logged = logged[logged["model_version"].isin(served)]
    unlogged = {}
    for arm in ARMS:
        prob = rows[["symbol", "date", arm]].merge(
            logged,
            how="left",
            left_on=["symbol", "date", arm],
            right_on=["symbol", "date", "model_version"],
        )["prob_up"]
        rows[f"prob_{arm}"] = prob.to_numpy()
        unlogged[arm] = int(prob.isna().sum())
    rows = rows.dropna(subset=[f"prob_{arm}" for arm in ARMS]).reset_index(drop=True)
    cutoffs = store.trained_cutoffs()
    decisions = {
        "promote": int((comparisons["decision"] == "promote").sum()),
        "keep": int((comparisons["decision"] == "keep").sum()),
        "insufficient_data": int((comparisons["decision"] == "insufficient data").sum()),
        "reject": int((comparisons["decision"] == "reject").sum()),
        "inconclusive": int((comparisons["decision"] == "inconclusive").sum()),
        "rollback": rollbacks
        if rollbacks is not None
        else sum(
            1
            for e in store.events()
            if e["event"] == "rolled_back"
            and e.get("as_of")
            and first_day.date().isoformat() <= e["as_of"] <= last_as_of.date().isoformat()
        ),
    }
    report = {
        "weeks": int(len(weeks)),
        "weeks_failed": [
            {"week": r.week, "reason": r.reason} for r in weeks.itertuples() if r.status == "failed"
        ],
        "period": {"from": first_day.date().isoformat(), "to": last_as_of.date().isoformat()},
        "rows": int(len(rows)),
        # rows dropped because an arm's version had logged no prediction for them (0 when the
        # log is complete)
        "unlogged_rows": unlogged,
        "decisions": decisions,
        "arms": {},
        "production_timeline": [
            {"after": d.isoformat(), "model_cutoff": cutoffs.get(v)} for d, v in rules["adaptive"]
        ],
    }
    if rows.empty:
        report["note"] = (
            "no day had a model in every arm yet: the first production model came too late in the range"
        )
        return _round(report)
    rows["quarter"] = rows["date"].dt.to_period("Q").astype(str)
    with warehouse.connect(read_only=True) as conn:
        climatology = trailing_base_rate(conn, first_day.date())
    report["baselines"] = _baselines(rows, climatology)
    scored: dict[str, pd.DataFrame] = {}
    days: dict[str, pd.DataFrame] = {}
    common = dict(
        cost_bps=cost_bps, horizon=horizon, fraction=book_fraction, climatology=climatology
    )
    for arm in ARMS:
        arm_rows = rows[["symbol", "date", "label", "fwd_return", "quarter"]].assign(
            prob_up=rows[f"prob_{arm}"].to_numpy()
        )
        scored[arm] = arm_rows
        key = (arm, tuple(rules[arm]), len(rows), bootstrap_samples, seed)
        if key in cache:  # a static arm on the same rows, scored for another setting already
            report["arms"][arm], days[arm] = cache[key]
            continue
        figures, days[arm] = _arm_figures(arm_rows, samples=bootstrap_samples, seed=seed, **common)
        figures["by_quarter"] = {
            q: {
                k: v
                # one resample: the quarter's intervals are dropped
                for k, v in _arm_figures(part, samples=1, seed=seed, **common)[0].items()
                if k != "ci"
            }
            for q, part in arm_rows.groupby("quarter")
        }
        figures["weekly_accuracy"] = {
            str(week.date()): float(((part["prob_up"] > 0.5) == (part["label"] == 1)).mean())
            for week, part in arm_rows.groupby(arm_rows["date"].dt.to_period("W-SAT").dt.start_time)
        }
        report["arms"][arm] = figures
        cache[key] = (figures, days[arm])
    for name, prob in (("always_up", 1.0), ("climatology", climatology)):
        days[name] = evidence.day_table(
            rows[["date", "label"]].assign(prob_up=prob), climatology, None
        )
    report["differences"] = _differences(
        days, horizon=horizon, samples=bootstrap_samples, seed=seed
    )
    report["cumulative"] = _cumulative(days, horizon)
    report["long_term"] = {
        arm: {
            "mean_confidence": f["mean_confidence"],
            "accuracy_first_quarter": next(iter(f["by_quarter"].values()))["accuracy"],
            "accuracy_last_quarter": list(f["by_quarter"].values())[-1]["accuracy"],
            "accuracy_retention": list(f["by_quarter"].values())[-1]["accuracy"]
            / next(iter(f["by_quarter"].values()))["accuracy"],
        }
        for arm, f in report["arms"].items()
    }
    if regime_starts:
        report["regime_changes"] = []
        ends = [*regime_starts[1:], None]
        for start, end in zip(regime_starts, ends, strict=True):
            if not first_day.date() < start <= last_as_of.date():
                continue
            change = _regime_change(
                start, rules["adaptive"], cutoffs, data_window_days, half_life_days, untrained_days
            )
            # Each arm's accuracy over the regime, and from the adaptive arm's first fitted model on.
            change["accuracy_in_regime"] = _accuracy_between(scored, start, end)
            promoted = change["first_promotion_after"]
            change["accuracy_after_promotion"] = (
                _accuracy_between(scored, dt.date.fromisoformat(promoted), end)
                if promoted
                else None
            )
            report["regime_changes"].append(change)
    return _round(report)
