"""The production pointer's decisions: bootstrap, promotion on a passing comparison, automatic
rollback of a degraded production, and the explicit promote / rollback of an operator."""

from __future__ import annotations

import datetime as dt

import duckdb

from stage2_assets.deployment.shadow import cutoff_of, paired_rows, previous_production
from stage2_assets.errors import ModelStoreError
from stage2_assets.names import validate_version
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.stats.comparison import PROMOTE, compare_under


def beats_baselines(metadata: dict) -> tuple[bool, str]:
    """The bootstrap rule: validation accuracy above both naive baselines'."""
    metrics = metadata["metrics"]
    accuracy = metrics["ensemble"]["accuracy"]
    baselines = {name: m["accuracy"] for name, m in metrics["baselines"].items()}
    beaten = all(accuracy > value for value in baselines.values())
    listed = ", ".join(f"{name} {value:.2%}" for name, value in baselines.items())
    verb = "beats" if beaten else "does not beat"
    return beaten, f"validation accuracy {accuracy:.2%} {verb} the baselines ({listed})"


def decide(
    conn: duckdb.DuckDBPyConnection, store: ModelStore, as_of: dt.date, ab, degradation: dict | None
) -> dict:
    """Move the pointer if, and only if, the rules say so; return what happened and why."""
    production = store.production()
    if production is None:
        eligible = [v for v in store.versions() if cutoff_of(store, v) <= as_of]
        if not eligible:
            return {
                "action": "none",
                "version": None,
                "reason": "no production and no trained version yet",
            }
        newest = eligible[-1]
        ok, why = beats_baselines(store.metadata(newest))
        if not ok:
            return {
                "action": "none",
                "version": None,
                "reason": f"bootstrap refused for {newest}: {why}",
            }
        store.set_production(
            newest, "promoted", f"bootstrap (no production yet): {why}", as_of=as_of.isoformat()
        )
        return {"action": "promoted", "version": newest, "reason": f"bootstrap: {why}"}

    winners = conn.execute(
        """SELECT candidate, accuracy_diff, reason, p_mcnemar, rows FROM shadow_comparisons
           WHERE as_of = ? AND decision = ? AND candidate <> ? ORDER BY accuracy_diff DESC, candidate DESC""",
        [as_of, PROMOTE, production],
    ).fetchall()
    if winners:
        candidate, diff, reason, p_value, rows = winners[0]
        store.set_production(
            candidate,
            "promoted",
            reason,
            as_of=as_of.isoformat(),
            accuracy_diff=diff,
            p_mcnemar=p_value,
            rows=rows,
        )
        return {"action": "promoted", "version": candidate, "reason": reason}

    if degradation and degradation["degraded"]:
        previous = previous_production(store)
        if previous is None or previous not in store.versions():
            return {
                "action": "none",
                "version": production,
                "reason": f"degraded ({degradation['reason']}) but no previous version to roll back to",
            }
        start = as_of - dt.timedelta(days=30)
        paired = paired_rows(conn, previous, start, as_of, against=production)
        result = compare_under(
            paired,
            ab,
            seed=int(as_of.strftime("%Y%m%d")),
        )
        if result.decision == PROMOTE:
            reason = f"automatic rollback: production degraded ({degradation['reason']}); {previous} {result.reason}"
            store.set_production(previous, "rolled_back", reason, as_of=as_of.isoformat())
            return {"action": "rolled_back", "version": previous, "reason": reason}
        return {
            "action": "none",
            "version": production,
            "reason": f"degraded, but {previous} is not significantly better on the same rows: {result.reason}",
        }
    return {
        "action": "none",
        "version": production,
        "reason": "no candidate passed its comparison; production stays",
    }


def manual_promote(store: ModelStore, version: str, reason: str) -> dict:
    version = validate_version(version)
    store.version_path(version)
    if store.production() == version:
        raise ModelStoreError(f"{version} is already production")
    store.set_production(version, "manual_promote", reason or "manual override")
    return {"action": "manual_promote", "version": version, "reason": reason or "manual override"}


def rollback(store: ModelStore, version: str | None, reason: str) -> dict:
    """Point production back at ``version``, or at the version it served before the current one."""
    target = validate_version(version) if version else previous_production(store)
    if target is None:
        raise ModelStoreError(
            "no previous production version to roll back to; name one (`stage2 versions`)"
        )
    if target == store.production():
        raise ModelStoreError(f"{target} is already production")
    store.version_path(target)
    store.set_production(target, "rolled_back", reason or "manual rollback")
    return {"action": "rolled_back", "version": target, "reason": reason or "manual rollback"}
