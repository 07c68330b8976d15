"""Shadow mode: which models predict, their logged predictions and outcomes, their comparisons.

Production and every candidate in shadow predict every symbol from each day's features. A logged
prediction is never altered: re-running a day inserts nothing new, and only its outcome (label and
forward return) is filled in once the bars that decide it exist on or before the as-of date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import duckdb
import pandas as pd

from stage2_assets.ml.features import LabelRule
from stage2_assets.resources.model_store import POINTER_MOVES, ModelStore
from stage2_assets.resources.warehouse import one
from stage2_assets.stats.comparison import (
    FINAL_DECISIONS,
    INSUFFICIENT,
    KEEP,
    Comparison,
    compare_under,
)
from stage2_assets.stats.performance import daily_accuracy, degradation_test, performance

PRODUCTION, SHADOW, LOGGED = "production", "shadow", "logged"
# A model that starts being tracked late predicts at most this far back.
MAX_BACKFILL_DAYS = 92
# Days re-predicted before a model's last logged date, to catch late feature rows (insert-or-ignore).
LATE_ROWS_DAYS = 7
# A candidate still without enough labelled days this many maximum shadows after its cut-off
# (a sparse or stalled feed) is retired.
EXPIRY_PERIODS = 2
# Fewer labelled days than this in either window of the degradation test: not judged.
MIN_DEGRADATION_DAYS = 5


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


def cutoff_of(store: ModelStore, version: str) -> dt.date:
    return dt.date.fromisoformat(store.metadata(version)["cutoff"])


def previous_production(store: ModelStore) -> str | None:
    """The version production pointed to before the current one."""
    current = store.production()
    for event in reversed(store.events()):
        if event["event"] in POINTER_MOVES and event.get("version") == current:
            return event.get("previous")
    return None


def label_rule_of(store: ModelStore, version: str) -> LabelRule:
    """The label rule a version was trained for (versions from before it was recorded: close(t))."""
    return LabelRule.from_dict(store.metadata(version).get("label_rule"))


def decided_candidates(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """Candidates whose shadow has ended: promoted, rejected, or kept out after the maximum."""
    marks = ", ".join("?" for _ in FINAL_DECISIONS)
    rows = conn.execute(
        f"SELECT DISTINCT candidate FROM shadow_comparisons WHERE decision IN ({marks})",
        list(FINAL_DECISIONS),
    ).fetchall()
    return {r[0] for r in rows}


def tracked_models(
    conn: duckdb.DuckDBPyConnection,
    store: ModelStore,
    as_of: dt.date,
    replay: bool = False,
    log_weeks: int = 0,
) -> dict[str, str]:
    """{version: role} of every model that predicts as of this date.

    Production; every candidate trained before the as-of date and not yet decided; and the
    previous production version, kept in shadow so a degraded production can be rolled back to it.
    Logged only (role ``logged``, never compared): the newest candidate, decided or not, which is
    what retraining without a gate would serve (a replay's always_promote arm), and in a replay the
    first production model (its frozen arm) and every candidate within ``log_weeks`` of its cut-off
    (what another gate setting could have served: ``replay --sweep``).
    """
    production = store.production()
    roles = {production: PRODUCTION} if production else {}
    decided = decided_candidates(conn)
    cutoffs = kept_cutoffs(store)
    kept = list(cutoffs)
    for version in kept:
        if version in roles or version in decided:
            continue
        if cutoffs[version] < as_of:
            roles[version] = SHADOW
    previous = previous_production(store)
    if previous and previous not in roles and previous in kept:
        roles[previous] = SHADOW
    for version in arm_versions(store, as_of, replay, cutoffs, log_weeks):
        roles.setdefault(version, LOGGED)
    return roles


def arm_versions(
    store: ModelStore,
    as_of: dt.date,
    replay: bool,
    cutoffs: dict[str, dt.date] | None = None,
    log_weeks: int = 0,
) -> list[str]:
    """Versions that must go on predicting for a replay's arms: the newest candidate with a
    cut-off before ``as_of`` and, in a replay, the first production model and every candidate
    whose cut-off lies within ``log_weeks`` before ``as_of``. Pruning spares them."""
    if cutoffs is None:
        cutoffs = kept_cutoffs(store)
    out = []
    before = [(c, v) for v, c in cutoffs.items() if c < as_of]
    if before:
        out.append(max(before)[1])
    history = store.production_history()
    if replay and history and history[0] in cutoffs:
        out.append(history[0])
    if replay and log_weeks:
        since = as_of - dt.timedelta(weeks=log_weeks)
        out.extend(v for c, v in sorted(before) if c >= since and v not in out)
    return out


def kept_cutoffs(store: ModelStore) -> dict[str, dt.date]:
    """{version: cut-off} of the versions on disk, in version order, from the event log (no
    per-version checksum pass: a version is verified when it is loaded to predict)."""
    known = store.trained_cutoffs()
    return {v: dt.date.fromisoformat(known[v]) for v in store.versions() if v in known}


def shadow_candidates(conn: duckdb.DuckDBPyConnection, store: ModelStore) -> list[str]:
    """Kept versions not yet decided (in shadow now, or waiting for their first day)."""
    decided = decided_candidates(conn)
    return [v for v in store.versions() if v not in decided]


def log_predictions(
    conn: duckdb.DuckDBPyConnection,
    store: ModelStore,
    roles: dict[str, str],
    as_of: dt.date,
    run_id: str,
) -> dict[str, int]:
    """Predict every feature row after each model's cut-off up to ``as_of``; return rows added per
    model. One read of the features and one insert for all the models."""
    if not roles:
        return {}
    last_logged = dict(
        conn.execute(
            f"SELECT model_version, max(date) FROM predictions WHERE model_version IN "
            f"({', '.join('?' for _ in roles)}) GROUP BY model_version",
            list(roles),
        ).fetchall()
    )
    from stage2_assets.ml.predictor import EnsemblePredictor  # torch: only where models predict

    loaded, starts = {}, {}
    for version in roles:
        predictor = EnsemblePredictor(*store.load(version))
        cutoff = dt.date.fromisoformat(predictor.metadata["cutoff"])
        start = max(cutoff, as_of - dt.timedelta(days=MAX_BACKFILL_DAYS))
        if last_logged.get(version) is not None:
            start = max(start, last_logged[version] - dt.timedelta(days=LATE_ROWS_DAYS))
        loaded[version], starts[version] = predictor, start
    features = conn.execute(
        "SELECT * FROM features WHERE date > ? AND date <= ? ORDER BY date, symbol",
        [min(starts.values()), as_of],
    ).df()
    dates = pd.to_datetime(features["date"]).dt.date
    logged_at = _now()
    frames = []
    for version, role in roles.items():
        part = features[dates > starts[version]]
        if part.empty:
            continue
        predicted = loaded[version].predict(part)
        predicted["date"] = pd.to_datetime(predicted["date"]).dt.date
        frames.append(
            predicted.assign(
                model_version=version,
                role=role,
                logged_at=logged_at,
                logged_as_of=as_of,
                run_id=run_id,
            )
        )
    marks = ", ".join("?" for _ in roles)
    count = f"SELECT model_version, count(*) FROM predictions WHERE model_version IN ({marks}) GROUP BY model_version"
    before = dict(conn.execute(count, list(roles)).fetchall())
    if frames:
        conn.register("new_predictions", pd.concat(frames, ignore_index=True))
        conn.execute(
            """
            INSERT OR IGNORE INTO predictions
                (model_version, role, symbol, date, prob_up, confidence, logged_at, logged_as_of, run_id)
            SELECT model_version, role, symbol, date, prob_up, confidence, logged_at, logged_as_of, run_id
            FROM new_predictions
            """
        )
        conn.unregister("new_predictions")
    after = dict(conn.execute(count, list(roles)).fetchall())
    return {v: after.get(v, 0) - before.get(v, 0) for v in roles}


def with_archive(conn: duckdb.DuckDBPyConnection, folder: Path) -> str:
    """The relation of every logged prediction, the table's and the archive's: ``predictions``
    itself while nothing was archived, else a temporary view over both (a key in both, after a
    crash between writing the archive and deleting its rows, read once, from the table)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return "predictions"
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW all_predictions AS
        SELECT * EXCLUDE (archived) FROM (
            SELECT *, false AS archived FROM predictions
            UNION ALL BY NAME SELECT *, true AS archived FROM read_parquet([{listed}])
        )
        QUALIFY row_number() OVER (
            PARTITION BY model_version, symbol, date
            ORDER BY archived, outcome_filled_at DESC NULLS LAST, logged_at DESC
        ) = 1
        """
    )
    return "all_predictions"


# rows move once the oldest is this far past the retention: about one archive file a month
ARCHIVE_BATCH_DAYS = 28


def archive_predictions(
    conn: duckdb.DuckDBPyConnection,
    before: dt.date,
    folder: Path,
    run_id: str,
    batch_days: int = ARCHIVE_BATCH_DAYS,
) -> tuple[int, Path | None]:
    """Move the logged predictions dated before ``before`` of every role but production into a
    Parquet file in ``folder``; return (rows, file). What production served stays in the table
    (the audit of what was served); the rows moved are those of shadow and logged models, which a
    comparison reads only within its shadow period. The file is written whole before the rows are
    deleted, so a crash between the two leaves the rows in both places, never in neither: the
    archive's key is (model_version, symbol, date), the first copy of a key is the one to read.

    Rows move in batches: only once the oldest of them lies ``batch_days`` before ``before``, so a
    daily predictions job writes about one file a month, not one a day (rows stay in the table up
    to that much past the retention)."""
    where = "date < ? AND role <> ?"
    rows, oldest = one(
        conn, f"SELECT count(*), min(date) FROM predictions WHERE {where}", [before, PRODUCTION]
    )
    if not rows or (before - oldest).days < batch_days:
        return 0, None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"predictions_before_{before.isoformat()}_{run_id[:8]}.parquet"
    partial = target.with_suffix(".parquet.partial")
    conn.execute(
        f"COPY (SELECT * FROM predictions WHERE {where} ORDER BY date, model_version, symbol) "
        f"TO '{str(partial).replace(chr(39), chr(39) * 2)}' (FORMAT parquet)",
        [before, PRODUCTION],
    )
    with partial.open("rb") as handle:  # on disk before any row leaves the table
        os.fsync(handle.fileno())
    partial.replace(target)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    conn.execute(f"DELETE FROM predictions WHERE {where}", [before, PRODUCTION])
    return int(rows), target


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


def trailing_base_rate(conn: duckdb.DuckDBPyConnection, before: dt.date, days: int = 365) -> float:
    """Share of up labels known before ``before`` over the preceding year (the climatology
    forecast of the window that starts there); 0.5 when none is known yet."""
    (rate,) = one(
        conn,
        "SELECT avg(label) FROM features WHERE label IS NOT NULL AND label_date < ? AND date >= ?",
        [before, before - dt.timedelta(days=days)],
    )
    return 0.5 if rate is None else float(rate)


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
    climatology = trailing_base_rate(conn, start)
    records = []
    for version, role in roles.items():
        stats = performance(resolved_rows(conn, version, start, as_of), cost_bps, climatology)
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
                        "always_up_accuracy",
                    )
                },
                "climatology": climatology,
                "brier_skill": stats.get("brier_skill"),
                "reliability": json.dumps(stats["reliability"]),
                "run_id": run_id,
            }
        )
    frame = pd.DataFrame(records)
    if not frame.empty:
        conn.register("perf_rows", frame)
        conn.execute("INSERT OR REPLACE INTO model_performance BY NAME SELECT * FROM perf_rows")
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
    """Production's recent window against its own live record, day by day.

    Baseline: production's first ``window_days`` of logged predictions after its cut-off (its
    shadow and its first weeks serving). Recent: the last ``window_days``, on rows after the
    baseline (never the same rows). Degraded: the recent accuracy is more than ``threshold``
    (absolute) below the baseline's, and significantly so by Welch's one-sided t-test on the
    daily accuracies (the day is the unit: the rows of one day move together).
    """
    production = store.production()
    if production is None:
        return None
    cutoff = cutoff_of(store, production)
    baseline_end = cutoff + dt.timedelta(days=window_days)
    baseline = resolved_rows(conn, production, cutoff, baseline_end)
    recent = resolved_rows(
        conn, production, max(as_of - dt.timedelta(days=window_days), baseline_end), as_of
    )
    record = {
        "model_version": production,
        "as_of": as_of,
        **judge_degradation(
            baseline, recent, window_days, threshold, significance_level, min_samples
        ),
        "run_id": run_id,
    }
    conn.register("degradation_row", pd.DataFrame([record]))
    conn.execute("INSERT OR REPLACE INTO degradation_log BY NAME SELECT * FROM degradation_row")
    conn.unregister("degradation_row")
    return record


def judge_degradation(
    baseline: pd.DataFrame,
    recent: pd.DataFrame,
    window_days: int,
    threshold: float,
    significance_level: float,
    min_samples: int,
) -> dict:
    """The degradation verdict on production's resolved rows: its first live window
    (``baseline``) against its latest (``recent``), day by day (``check_degradation``)."""
    recent_days, base_days = daily_accuracy(recent), daily_accuracy(baseline)
    drop, p_value = degradation_test(recent_days, base_days)
    recent_accuracy = _accuracy(recent)
    baseline_accuracy = _accuracy(baseline)
    enough = (
        len(recent) >= min_samples
        and len(recent_days) >= MIN_DEGRADATION_DAYS
        and len(base_days) >= MIN_DEGRADATION_DAYS
    )
    degraded = bool(enough and drop > threshold and p_value < significance_level)
    if not enough:
        reason = (
            f"not judged: {len(recent_days)} recent and {len(base_days)} baseline days with outcomes "
            f"({len(recent)} recent rows); {MIN_DEGRADATION_DAYS} days each and {min_samples} rows "
            f"are needed (the recent window starts after production's first {window_days} days)"
        )
    else:
        reason = (
            f"accuracy {recent_accuracy:.2%} over the last {len(recent_days)} days vs {baseline_accuracy:.2%} "
            f"over its first {len(base_days)} live days: drop {drop:+.2%} (threshold {threshold:.0%}), "
            f"Welch p={p_value:.2g} on daily accuracies"
        )
    return {
        "recent_rows": len(recent),
        "baseline_rows": len(baseline),
        "recent_accuracy": recent_accuracy,
        "baseline_accuracy": baseline_accuracy,
        "drop": drop,
        "p_value": p_value,
        "degraded": degraded,
        "reason": reason,
        "recent_days": len(recent_days),
        "baseline_days": len(base_days),
    }


def _accuracy(rows: pd.DataFrame) -> float:
    if rows.empty:
        return float("nan")
    return float(((rows["prob_up"] > 0.5) == (rows["label"] == 1)).mean())


def paired_rows(
    conn: duckdb.DuckDBPyConnection,
    candidate: str,
    start: dt.date,
    end: dt.date,
    against: str | None = None,
    table: str = "predictions",
) -> pd.DataFrame:
    """The candidate's rows in (start, end] whose outcome was known by ``end``, beside production's
    on the same (symbol, date): what a decision taken on ``end`` could see, and no more.

    ``against`` names one version; by default the rows are whatever production served that day.
    ``table``: the relation to read (``with_archive``'s, for decisions older than the retention).
    """
    if table not in ("predictions", "all_predictions"):
        raise ValueError(f"unknown predictions relation {table!r}")
    other = "p.model_version = ?" if against else "p.role = 'production' AND p.model_version <> ?"
    rows = conn.execute(
        f"""
        SELECT c.symbol, c.date, c.label, c.fwd_return, c.prob_up AS prob_candidate,
               p.prob_up AS prob_production, p.model_version AS production_version
        FROM {table} c
        JOIN {table} p ON p.symbol = c.symbol AND p.date = c.date AND {other}
        WHERE c.model_version = ? AND c.date > ? AND c.date <= ? AND c.label IS NOT NULL
          AND c.label_date <= ?
        QUALIFY row_number() OVER (PARTITION BY c.symbol, c.date ORDER BY p.logged_at DESC) = 1
        ORDER BY c.date, c.symbol
        """,
        [against or candidate, candidate, start, end, end],
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
    """Look at every shadow candidate's evidence so far; store and return one record each.

    The gate steps through the candidate's labelled days since its cut-off: it promotes, rejects,
    stays inconclusive (the shadow goes on) or, at the maximum shadow, keeps it out. A candidate
    trained for another label rule than production's is not compared (the pointer bootstraps).
    """
    production = store.production()
    previous = previous_production(store)
    records = []
    if production is None:
        return records
    production_rule = label_rule_of(store, production)
    for version, role in roles.items():
        if role != SHADOW or version == previous:
            continue
        if label_rule_of(store, version) != production_rule:
            continue
        cutoff = cutoff_of(store, version)
        paired = paired_rows(conn, version, cutoff, as_of)
        result = compare_under(paired, ab, seed=int(cutoff.strftime("%Y%m%d")))
        if result.decision == INSUFFICIENT and as_of > cutoff + dt.timedelta(
            days=EXPIRY_PERIODS * ab.max_shadow_duration
        ):
            result.decision = KEEP
            result.reason = f"retired: {result.reason} after {EXPIRY_PERIODS} maximum shadows"
        records.append(_comparison_record(version, paired, result, cutoff, as_of, as_of, run_id))
    if records:
        conn.register("comparison_rows", pd.DataFrame(records))
        conn.execute(
            "INSERT OR REPLACE INTO shadow_comparisons BY NAME SELECT * FROM comparison_rows"
        )
        conn.unregister("comparison_rows")
    return records


def _comparison_record(
    candidate: str, paired: pd.DataFrame, result: Comparison, start, end, as_of, run_id
) -> dict:
    served = sorted(paired["production_version"].unique().tolist()) if len(paired) else []
    gate = result.gate
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
        "metric": gate["metric"],
        "statistic": gate["statistic"],
        "p_value": gate["p_value"],
        "effect": gate["effect"],
        "lower_bound": gate["lower_bound"],
        "upper_bound": gate["upper_bound"],
        "mde": gate["mde"],
        "alpha": gate["alpha"],
        "decided_on": dt.date.fromisoformat(gate["decided_on"]) if gate["decided_on"] else None,
    }


def recompute_comparison(
    conn: duckdb.DuckDBPyConnection,
    candidate: str,
    as_of: dt.date,
    ab,
    table: str = "predictions",
) -> Comparison:
    """Recompute a stored decision from the stored predictions alone (``table``: see
    ``paired_rows``)."""
    (start, end, served) = one(
        conn,
        "SELECT period_start, period_end, production FROM shadow_comparisons WHERE candidate = ? AND as_of = ?",
        [candidate, as_of],
    )
    paired = paired_rows(conn, candidate, start, end, table=table)
    result = compare_under(paired, ab, seed=int(start.strftime("%Y%m%d")))
    assert served is None or set(served.split(",")) == set(paired["production_version"]), (
        "served versions changed"
    )
    return result
