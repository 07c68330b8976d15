"""What ``stage2 status`` reports: read straight from the stores, no Dagster run needed."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from stage2_assets.config import Settings
from stage2_assets.errors import ModelStoreError
from stage2_assets.market.calendar import sessions_after
from stage2_assets.market.refresh import stored_source, summarize_log
from stage2_assets.market.validation import quarantine_rows
from stage2_assets.resources.model_store import POINTER_MOVES, ModelStore
from stage2_assets.resources.warehouse import Warehouse, has_table, one
from stage2_assets.stats.comparison import FINAL_DECISIONS

TABLES = ("raw_bars", "validated_bars", "features")


def collect_status(settings: Settings) -> dict:
    """The ``stage2 status --json`` document (keys are a contract: add, never rename)."""
    warehouse = Warehouse(database=str(settings.warehouse_path))
    with warehouse.connect(read_only=True) as conn:
        tables = {}
        for table in TABLES:
            rows, symbols, first, last = one(
                conn, f"SELECT count(*), count(DISTINCT symbol), min(date), max(date) FROM {table}"
            )
            tables[table] = {
                "rows": int(rows),
                "symbols": int(symbols),
                "first_date": first.isoformat() if first else None,
                "last_date": last.isoformat() if last else None,
            }
        last_run = one(conn, "SELECT run_id FROM refresh_log ORDER BY logged_at DESC LIMIT 1")
        log = conn.execute(
            "SELECT * FROM refresh_log WHERE run_id = ?", [last_run[0] if last_run else ""]
        ).df()
        notes = (
            conn.execute(
                "SELECT * FROM refresh_notes WHERE run_id = ?", [last_run[0] if last_run else ""]
            ).df()
            if has_table(conn, "refresh_notes")  # a store from before notes, not yet written to
            else None
        )
        source = stored_source(conn)
        quarantine = quarantine_rows(conn)
        comparison = conn.execute(
            "SELECT * FROM shadow_comparisons ORDER BY as_of DESC, "
            "decision IN ('promote', 'reject', 'keep') DESC, decided_at DESC, candidate DESC LIMIT 1"
        ).df()
        performance = conn.execute(
            "SELECT * FROM model_performance QUALIFY row_number() OVER (PARTITION BY model_version ORDER BY as_of DESC) = 1"
        ).df()
        decided = {
            r[0]
            for r in conn.execute(
                "SELECT candidate FROM shadow_comparisons WHERE decision IN (?, ?, ?)",
                list(FINAL_DECISIONS),
            ).fetchall()
        }
    store = ModelStore(root=str(settings.models_path))
    production = store.production()
    since = next(
        (
            e["at"]
            for e in reversed(store.events())
            if e.get("version") == production and e["event"] in POINTER_MOVES
        ),
        None,
    )
    problem = None
    if production:
        try:
            store.verify(production)
        except ModelStoreError as exc:
            problem = (
                f"the production pointer names {production}, which cannot be served: {exc}. "
                "Roll back (`stage2 rollback`) or promote a sound version (`stage2 promote VERSION`)"
            )
    last_refresh = summarize_log(log, notes)
    newest = tables["validated_bars"]["last_date"]
    last_refresh["stale_sessions"] = (
        sessions_after(dt.date.fromisoformat(newest), dt.date.fromisoformat(last_refresh["as_of"]))
        if newest and last_refresh.get("as_of")
        else None
    )
    return {
        "source": source or settings.data_source.kind,
        "warehouse": str(settings.warehouse_path),
        "tables": tables,
        "quarantine": quarantine,
        # stale_sessions: sessions from the newest validated bar to the last refresh's as-of date
        "last_refresh": last_refresh,
        # problem: None, or why the version the pointer names cannot be served (missing, tampered)
        "production": {"version": production, "since": since, "problem": problem},
        # candidates that passed under ab_testing.approval: manual and wait for `stage2 approve`
        "pending_approvals": [
            {"version": e["version"], "as_of": e.get("as_of"), "reason": e["reason"]}
            for e in store.pending_approvals()
        ],
        # candidates awaiting their comparison: never production, not yet promoted or kept
        "shadow": [
            v
            for v in store.versions()
            if v not in decided and v not in set(store.production_history()) | {production}
        ],
        "last_comparison": _comparison(comparison),
        "performance": {
            row.model_version: {
                k: float(getattr(row, k))
                for k in ("accuracy", "ece", "brier", "sharpe", "max_drawdown")
            }
            | {"as_of": str(row.as_of)[:10], "rows": int(row.rows), "role": row.role}
            | {
                k: None if pd.isna(getattr(row, k, None)) else float(getattr(row, k))
                for k in ("always_up_accuracy", "climatology", "brier_skill")
            }
            for row in performance.itertuples()
        },
        "versions": store.versions(),
    }


def _comparison(frame) -> dict | None:
    if frame.empty:
        return None
    row = frame.iloc[0]
    return {
        "candidate": row["candidate"],
        "production": row["production"],
        "rows": int(row["rows"]),
        "p_values": {"mcnemar": float(row["p_mcnemar"]), "paired": float(row["p_paired"])},
        "accuracy_diff": float(row["accuracy_diff"]),
        "ci": [float(row["ci_low"]), float(row["ci_high"])],
        "decision": row["decision"],
        "reason": row["reason"],
        "as_of": str(row["as_of"])[:10],
        **gate_figures(row.to_dict()),
    }


def gate_figures(record: dict) -> dict:
    """The gate's figures of a stored comparison (None where a record predates the gate)."""

    def number(key):
        value = record.get(key)
        return None if value is None or pd.isna(value) else float(value)

    metric, days = record.get("metric"), record.get("days")
    return {
        "metric": metric if isinstance(metric, str) else None,
        "statistic": number("statistic"),
        "p_value": number("p_value"),
        "effect": number("effect"),
        "lower_bound": number("lower_bound"),
        "mde": number("mde"),
        "days": None if days is None or pd.isna(days) else int(days),
    }
