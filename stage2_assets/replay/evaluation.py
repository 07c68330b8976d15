"""Scoring a replay: the adaptive arm against static arms, on the same rows.

Arms, each a rule for which stored version serves on a day:
- ``adaptive``: what the production pointer served (its moves, effective after each decision's as-of date);
- ``frozen``: the first production model, never replaced;
- ``always_promote``: the newest candidate, served from the day after its cut-off, without any test.

Every arm is scored on exactly the same (symbol, date) rows: days on which all three have a model
and the outcome is known by the replay's last as-of date. Predictions come from the stored versions
(deterministic, tensors only) and the point-in-time features, so they equal what the arm would have
logged live. Intervals resample whole days with a fixed seed: the report is reproducible bit for bit.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from stage2_assets.deployment.shadow import trailing_base_rate
from stage2_assets.ml.metrics import brier_skill_score, classification_metrics
from stage2_assets.ml.predictor import EnsemblePredictor
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets.stats.performance import max_drawdown, sharpe_ratio, strategy_returns

ARMS = ("adaptive", "frozen", "always_promote")
POINTER_MOVES = ("promoted", "rolled_back", "manual_promote")


def serving_rules(store: ModelStore) -> dict[str, list[tuple[dt.date, str]]]:
    """Per arm: (effective after this date, version), in time order."""
    moves = [
        (dt.date.fromisoformat(e["as_of"]), e["version"])
        for e in store.events()
        if e["event"] in POINTER_MOVES and e.get("as_of")
    ]
    moves.sort(key=lambda m: m[0])
    candidates = sorted(
        (dt.date.fromisoformat(store.metadata(v)["cutoff"]), v) for v in store.versions()
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


def _arm_figures(rows: pd.DataFrame, cost_bps: float, samples: int, seed: int) -> dict:
    metrics = classification_metrics(rows["prob_up"].to_numpy(), rows["label"].to_numpy())
    daily = strategy_returns(rows, cost_bps)
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
    out.update(
        {
            "days": int(rows["date"].nunique()),
            "sharpe": sharpe_ratio(daily),
            "max_drawdown": max_drawdown(daily),
        }
    )
    correct = ((rows["prob_up"] > 0.5) == (rows["label"] == 1)).astype(float)
    per_day = pd.DataFrame(
        {"hits": correct.groupby(rows["date"]).sum(), "n": correct.groupby(rows["date"]).size()}
    )
    per_day = per_day.join(daily.rename("ret"), how="left").fillna({"ret": 0.0})
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(per_day), size=(samples, len(per_day)))
    hits, counts, rets = (
        per_day["hits"].to_numpy(),
        per_day["n"].to_numpy(),
        per_day["ret"].to_numpy(),
    )
    acc = hits[picks].sum(axis=1) / counts[picks].sum(axis=1)
    sampled = rets[picks]
    sd = sampled.std(axis=1, ddof=1)
    sharpe = np.where(sd > 0, np.sqrt(252) * sampled.mean(axis=1) / np.where(sd > 0, sd, 1), 0.0)
    out["ci"] = {
        "accuracy": [float(np.quantile(acc, 0.025)), float(np.quantile(acc, 0.975))],
        "sharpe": [float(np.quantile(sharpe, 0.025)), float(np.quantile(sharpe, 0.975))],
    }
    return out


def _baselines(rows: pd.DataFrame, climatology: float) -> dict:
    """Always up, and the climatology forecast (the base rate of up days known before the
    replay), on exactly the arms' rows."""
    label = rows["label"].to_numpy(dtype=float)
    return {
        "always_up": {
            "accuracy": float(label.mean()),
            "brier": float(np.mean((1 - label) ** 2)),
        },
        "climatology": {
            "rate": climatology,
            "accuracy": float(((climatology > 0.5) == (label == 1)).mean()),
            "brier": float(np.mean((climatology - label) ** 2)),
        },
    }


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
) -> dict:
    """How long the adaptive arm took to serve a model of the regime that began on ``start``."""

    def new_share(version: str) -> float:
        cutoff = dt.date.fromisoformat(cutoffs[version])
        if not data_window_days:
            return 1.0 if cutoff >= start else 0.0
        return min(max((cutoff - start).days / data_window_days, 0.0), 1.0)

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
) -> dict:
    """The replay report's figures (``--json-out``): plain, rounded, reproducible.

    For each regime change inside the replay, ``weeks_to_promotion`` counts the weeks to the first
    promotion of a model fitted to the new regime: at least half of its training window (the
    ``data_window_days`` before its cut-off) lies after the change. A model whose cut-off merely
    follows the change, trained mostly on the old regime, does not count; the first promotion of
    such a model is reported beside it (``first_promotion_trained_after``).
    """
    first_day = pd.Timestamp(weeks["week"].min())
    last_as_of = pd.Timestamp(weeks["as_of"].max())
    with warehouse.connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT * FROM features WHERE date >= ? AND date <= ? AND label IS NOT NULL AND label_date <= ? ORDER BY date, symbol",
            [first_day.date(), last_as_of.date(), last_as_of.date()],
        ).df()
        comparisons = conn.execute(
            "SELECT candidate, as_of, decision FROM shadow_comparisons WHERE as_of >= ? AND as_of <= ? ORDER BY as_of",
            [first_day.date(), last_as_of.date()],
        ).df()
    rows["date"] = pd.to_datetime(rows["date"])
    rules = serving_rules(store)
    for arm in ARMS:
        rows[arm] = _serving(rows["date"], rules[arm])
    rows = rows.dropna(subset=list(ARMS)).reset_index(drop=True)
    cutoffs = {v: store.metadata(v)["cutoff"] for v in store.versions()}
    decisions = {
        "promote": int((comparisons["decision"] == "promote").sum()),
        "keep": int((comparisons["decision"] == "keep").sum()),
        "insufficient_data": int((comparisons["decision"] == "insufficient data").sum()),
        "reject": int((comparisons["decision"] == "reject").sum()),
        "inconclusive": int((comparisons["decision"] == "inconclusive").sum()),
        "rollback": sum(
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
    predicted: dict[str, pd.Series] = {}
    for version in sorted(set(rows[list(ARMS)].to_numpy().ravel())):
        mask = (rows[list(ARMS)] == version).any(axis=1)
        predictor = EnsemblePredictor(*store.load(version))
        predicted[version] = pd.Series(
            predictor.predict(rows[mask])["prob_up"].to_numpy(), index=rows.index[mask]
        )
    rows["quarter"] = rows["date"].dt.to_period("Q").astype(str)
    with warehouse.connect(read_only=True) as conn:
        climatology = trailing_base_rate(conn, first_day.date())
    report["baselines"] = _baselines(rows, climatology)
    scored: dict[str, pd.DataFrame] = {}
    for arm in ARMS:
        prob = pd.Series(np.nan, index=rows.index)
        for version, values in predicted.items():
            serve = rows[arm] == version
            prob[serve] = values[serve[serve].index]
        arm_rows = rows[["symbol", "date", "label", "fwd_return", "quarter"]].assign(
            prob_up=prob.to_numpy()
        )
        scored[arm] = arm_rows
        figures = _arm_figures(arm_rows, cost_bps, bootstrap_samples, seed)
        figures["brier_skill"] = brier_skill_score(
            arm_rows["prob_up"], arm_rows["label"], climatology
        )
        figures["by_quarter"] = {
            q: {k: v for k, v in _arm_figures(part, cost_bps, 200, seed).items() if k != "ci"}
            for q, part in arm_rows.groupby("quarter")
        }
        figures["weekly_accuracy"] = {
            str(week.date()): float(((part["prob_up"] > 0.5) == (part["label"] == 1)).mean())
            for week, part in arm_rows.groupby(arm_rows["date"].dt.to_period("W-SAT").dt.start_time)
        }
        report["arms"][arm] = figures
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
            change = _regime_change(start, rules["adaptive"], cutoffs, data_window_days)
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
