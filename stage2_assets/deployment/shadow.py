"""Shadow mode: which models predict, their logged predictions and outcomes, their comparisons.

Production and every candidate in shadow predict every symbol from each day's features. A logged
prediction is never altered: re-running a day inserts nothing new, and only its outcome (label and
forward return) is filled in once the bars that decide it exist on or before the as-of date.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pandas as pd

from stage2_assets.ml.predictor import EnsemblePredictor
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import one
from stage2_assets.stats.comparison import INSUFFICIENT, KEEP, Comparison, compare_under
from stage2_assets.stats.performance import degradation_test, performance

PRODUCTION, SHADOW = "production", "shadow"
# A model that starts being tracked late predicts at most this far back.
MAX_BACKFILL_DAYS = 92
# Days re-predicted before a model's last logged date, to catch late feature rows (insert-or-ignore).
LATE_ROWS_DAYS = 7
# A candidate whose shadow period yields too few rows for this many periods is retired.
EXPIRY_PERIODS = 4


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


def cutoff_of(store: ModelStore, version: str) -> dt.date:
    return dt.date.fromisoformat(store.metadata(version)["cutoff"])


def previous_production(store: ModelStore) -> str | None:
    """The version production pointed to before the current one."""
    current = store.production()
    for event in reversed(store.events()):
        if (
            event["event"] in ("promoted", "rolled_back", "manual_promote")
            and event.get("version") == current
        ):
            return event.get("previous")
    return None


def decided_candidates(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT candidate FROM shadow_comparisons WHERE decision <> ?", [INSUFFICIENT]
    ).fetchall()
    return {r[0] for r in rows}


def tracked_models(
    conn: duckdb.DuckDBPyConnection, store: ModelStore, as_of: dt.date
) -> dict[str, str]:
    """{version: role} of every model that predicts as of this date.

    Production; every candidate trained before the as-of date and not yet decided; and the
    previous production version, kept in shadow so a degraded production can be rolled back to it.
    """
    production = store.production()
    roles = {production: PRODUCTION} if production else {}
    decided = decided_candidates(conn)
    for version in store.versions():
        if version in roles or version in decided:
            continue
        if cutoff_of(store, version) < as_of:
            roles[version] = SHADOW
    previous = previous_production(store)
    if previous and previous not in roles and previous in store.versions():
        roles[previous] = SHADOW
    return roles


def log_predictions(
    conn: duckdb.DuckDBPyConnection,
    store: ModelStore,
    roles: dict[str, str],
    as_of: dt.date,
    run_id: str,
) -> dict[str, int]:
    """Predict every feature row after each model's cut-off up to ``as_of``; return rows added per model."""
    added = {}
    for version, role in roles.items():
        predictor = EnsemblePredictor(*store.load(version))
        cutoff = dt.date.fromisoformat(predictor.metadata["cutoff"])
        (last,) = one(conn, "SELECT max(date) FROM predictions WHERE model_version = ?", [version])
        start = max(cutoff, as_of - dt.timedelta(days=MAX_BACKFILL_DAYS))
        if last is not None:
            start = max(start, last - dt.timedelta(days=LATE_ROWS_DAYS))
        features = conn.execute(
            "SELECT * FROM features WHERE date > ? AND date <= ? ORDER BY date, symbol",
            [start, as_of],
        ).df()
        if features.empty:
            added[version] = 0
            continue
        predicted = predictor.predict(features)
        predicted["date"] = pd.to_datetime(predicted["date"]).dt.date
        predicted = predicted.assign(
            model_version=version, role=role, logged_at=_now(), logged_as_of=as_of, run_id=run_id
        )
        (before,) = one(conn, "SELECT count(*) FROM predictions WHERE model_version = ?", [version])
        conn.register("new_predictions", predicted)
        conn.execute(
            """
            INSERT OR IGNORE INTO predictions
                (model_version, role, symbol, date, prob_up, confidence, logged_at, logged_as_of, run_id)
            SELECT model_version, role, symbol, date, prob_up, confidence, logged_at, logged_as_of, run_id
            FROM new_predictions
            """
        )
        conn.unregister("new_predictions")
        (after,) = one(conn, "SELECT count(*) FROM predictions WHERE model_version = ?", [version])
        added[version] = after - before
    return added


def fill_outcomes(conn: duckdb.DuckDBPyConnection, as_of: dt.date) -> int:
    """Fill the outcome of every logged prediction whose label is known as of ``as_of``."""
    (pending,) = one(conn, "SELECT count(*) FROM predictions WHERE label IS NULL")
    conn.execute(
        """
        UPDATE predictions SET label = f.label, fwd_return = f.fwd_return, label_date = f.label_date,
               outcome_filled_at = ?
        FROM features f
        WHERE predictions.symbol = f.symbol AND predictions.date = f.date
          AND predictions.label IS NULL AND f.label IS NOT NULL AND f.label_date <= ?
        """,
        [_now(), as_of],
    )
    (still,) = one(conn, "SELECT count(*) FROM predictions WHERE label IS NULL")
    return pending - still


def resolved_rows(
    conn: duckdb.DuckDBPyConnection, version: str, start: dt.date, end: dt.date
) -> pd.DataFrame:
    rows = conn.execute(
        """
        SELECT symbol, date, prob_up, label, fwd_return FROM predictions
        WHERE model_version = ? AND label IS NOT NULL AND date > ? AND date <= ? ORDER BY date, symbol
        """,
        [version, start, end],
    ).df()
    rows["date"] = pd.to_datetime(rows["date"])
    return rows


def record_performance(
    conn: duckdb.DuckDBPyConnection,
    roles: dict[str, str],
    as_of: dt.date,
    window_days: int,
    cost_bps: float,
    run_id: str,
) -> pd.DataFrame:
    """model_performance rows (one per tracked model) over the window ending at ``as_of``."""
    start = as_of - dt.timedelta(days=window_days)
    records = []
    for version, role in roles.items():
        stats = performance(resolved_rows(conn, version, start, as_of), cost_bps)
        if stats["rows"] == 0:
            continue
        records.append(
            {
                "model_version": version,
                "role": role,
                "as_of": as_of,
                "window_start": start,
                "window_end": as_of,
                **{
                    k: stats[k]
                    for k in (
                        "rows",
                        "days",
                        "accuracy",
                        "balanced_accuracy",
                        "log_loss",
                        "brier",
                        "ece",
                        "mean_confidence",
                        "share_up",
                        "sharpe",
                        "max_drawdown",
                    )
                },
                "reliability": json.dumps(stats["reliability"]),
                "run_id": run_id,
            }
        )
    frame = pd.DataFrame(records)
    if not frame.empty:
        conn.register("perf_rows", frame)
        conn.execute("INSERT OR REPLACE INTO model_performance SELECT * FROM perf_rows")
        conn.unregister("perf_rows")
    return frame


def check_degradation(
    conn: duckdb.DuckDBPyConnection,
    store: ModelStore,
    as_of: dt.date,
    window_days: int,
    threshold: float,
    significance_level: float,
    min_samples: int,
    run_id: str,
) -> dict | None:
    """Production's recent window against its own baseline: the validation slice it was promoted on.

    Degraded: recent accuracy is more than ``threshold`` (absolute) below the validation accuracy,
    and significantly so (Fisher's exact test on the two windows' right/wrong counts). A model that
    has been wrong since its first live day is caught too, which a live-record baseline would miss.
    """
    production = store.production()
    if production is None:
        return None
    recent = resolved_rows(conn, production, as_of - dt.timedelta(days=window_days), as_of)
    recent_ok = ((recent["prob_up"] > 0.5) == (recent["label"] == 1)).to_numpy()
    validation = store.metadata(production)["metrics"]["ensemble"]
    base_rows = int(validation["rows"])
    base_right = round(validation["accuracy"] * base_rows)
    base_ok = np.r_[np.ones(base_right, dtype=bool), np.zeros(base_rows - base_right, dtype=bool)]
    drop, p_value = degradation_test(recent_ok, base_ok)
    recent_accuracy = float(recent_ok.mean()) if len(recent_ok) else float("nan")
    enough = len(recent) >= min_samples
    degraded = bool(enough and drop > threshold and p_value < significance_level)
    if not enough:
        reason = f"{len(recent)} resolved rows in the last {window_days} days; {min_samples} needed to judge"
    else:
        reason = (
            f"accuracy {recent_accuracy:.2%} over the last {window_days} days vs {validation['accuracy']:.2%} on its "
            f"validation slice: drop {drop:+.2%} (threshold {threshold:.0%}), Fisher p={p_value:.2g}"
        )
    record = {
        "model_version": production,
        "as_of": as_of,
        "recent_rows": len(recent),
        "baseline_rows": base_rows,
        "recent_accuracy": recent_accuracy,
        "baseline_accuracy": float(validation["accuracy"]),
        "drop": drop,
        "p_value": p_value,
        "degraded": degraded,
        "reason": reason,
        "run_id": run_id,
    }
    conn.register("degradation_row", pd.DataFrame([record]))
    conn.execute("INSERT OR REPLACE INTO degradation_log SELECT * FROM degradation_row")
    conn.unregister("degradation_row")
    return record


def paired_rows(
    conn: duckdb.DuckDBPyConnection,
    candidate: str,
    start: dt.date,
    end: dt.date,
    against: str | None = None,
) -> pd.DataFrame:
    """The candidate's resolved rows in (start, end] beside production's on the same (symbol, date).

    ``against`` names one version; by default the rows are whatever production served that day.
    """
    other = "p.model_version = ?" if against else "p.role = 'production' AND p.model_version <> ?"
    rows = conn.execute(
        f"""
        SELECT c.symbol, c.date, c.label, c.fwd_return, c.prob_up AS prob_candidate,
               p.prob_up AS prob_production, p.model_version AS production_version
        FROM predictions c
        JOIN predictions p ON p.symbol = c.symbol AND p.date = c.date AND {other}
        WHERE c.model_version = ? AND c.date > ? AND c.date <= ? AND c.label IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY c.symbol, c.date ORDER BY p.logged_at DESC) = 1
        ORDER BY c.date, c.symbol
        """,
        [against or candidate, candidate, start, end],
    ).df()
    rows["date"] = pd.to_datetime(rows["date"])
    return rows


def run_comparisons(
    conn: duckdb.DuckDBPyConnection,
    store: ModelStore,
    roles: dict[str, str],
    as_of: dt.date,
    ab,
    run_id: str,
) -> list[dict]:
    """Compare every shadow candidate whose shadow period has ended; store and return the records."""
    production = store.production()
    previous = previous_production(store)
    records = []
    for version, role in roles.items():
        if role != SHADOW or version == previous or production is None:
            continue
        cutoff = cutoff_of(store, version)
        period_end = cutoff + dt.timedelta(days=ab.shadow_mode_duration)
        if period_end > as_of:
            continue
        paired = paired_rows(conn, version, cutoff, period_end)
        result = compare_under(
            paired,
            ab,
            seed=int(cutoff.strftime("%Y%m%d")),
        )
        if result.decision == INSUFFICIENT and as_of > cutoff + dt.timedelta(
            days=EXPIRY_PERIODS * ab.shadow_mode_duration
        ):
            result.decision = KEEP
            result.reason = f"retired: {result.reason} after {EXPIRY_PERIODS} shadow periods"
        records.append(
            _comparison_record(version, paired, result, cutoff, period_end, as_of, run_id)
        )
    if records:
        conn.register("comparison_rows", pd.DataFrame(records))
        conn.execute("INSERT OR REPLACE INTO shadow_comparisons SELECT * FROM comparison_rows")
        conn.unregister("comparison_rows")
    return records


def _comparison_record(
    candidate: str, paired: pd.DataFrame, result: Comparison, start, end, as_of, run_id
) -> dict:
    served = sorted(paired["production_version"].unique().tolist()) if len(paired) else []
    return {
        "candidate": candidate,
        "production": ",".join(served) or None,
        "as_of": as_of,
        "period_start": start,
        "period_end": end,
        "rows": result.rows,
        "days": result.days,
        "candidate_accuracy": result.candidate_accuracy,
        "production_accuracy": result.production_accuracy,
        "accuracy_diff": result.accuracy_diff,
        "ci_low": result.ci[0],
        "ci_high": result.ci[1],
        "p_mcnemar": result.p_mcnemar,
        "p_paired": result.p_paired,
        "decision": result.decision,
        "reason": result.reason,
        "details": json.dumps(result.to_dict(), default=float),
        "run_id": run_id,
        "decided_at": _now(),
    }


def recompute_comparison(
    conn: duckdb.DuckDBPyConnection, candidate: str, as_of: dt.date, ab
) -> Comparison:
    """Recompute a stored decision from the stored predictions alone."""
    (start, end, served) = one(
        conn,
        "SELECT period_start, period_end, production FROM shadow_comparisons WHERE candidate = ? AND as_of = ?",
        [candidate, as_of],
    )
    paired = paired_rows(conn, candidate, start, end)
    result = compare_under(
        paired,
        ab,
        seed=int(start.strftime("%Y%m%d")),
    )
    assert served is None or set(served.split(",")) == set(paired["production_version"]), (
        "served versions changed"
    )
    return result
