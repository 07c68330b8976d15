"""The production pointer's decisions: bootstrap, promotion on a passing comparison, automatic
rollback of a degraded production, and the explicit promote / rollback of an operator."""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from stage2_assets.errors import ModelStoreError
from stage2_assets.names import validate_version
from stage2_assets.promotion.shadow import (
    cutoff_of,
    label_rule_of,
    paired_rows,
    previous_production,
    resolved_rows,
)
from stage2_assets.resources.model_store import POINTER_MOVES, ModelStore
from stage2_assets.resources.warehouse import one
from stage2_assets.stats.comparison import PROMOTE, compare_under
from stage2_assets.stats.gate import choose_among, row_scores

# Climatology has the majority's accuracy (the same probability every row): not listed twice.
BOOTSTRAP_BASELINES = ("majority", "yesterday", "always_up")


def beats_baselines(metadata: dict) -> tuple[bool, str]:
    """The bootstrap rule: validation accuracy above every naive baseline's (always up included)."""
    metrics = metadata["metrics"]
    accuracy = metrics["ensemble"]["accuracy"]
    baselines = {
        name: metrics["baselines"][name]["accuracy"]
        for name in BOOTSTRAP_BASELINES
        if name in metrics["baselines"]
    }
    beaten = all(accuracy > value for value in baselines.values())
    listed = ", ".join(f"{name} {value:.2%}" for name, value in baselines.items())
    verb = "beats" if beaten else "does not beat"
    return beaten, f"validation accuracy {accuracy:.2%} {verb} the baselines ({listed})"


def _bootstrap(store: ModelStore, as_of: dt.date, rule, because: str) -> dict:
    """Make the newest version trained for the configured label rule production, if it beats
    both naive baselines on its validation slice."""
    eligible = [
        v
        for v in store.versions()
        if cutoff_of(store, v) <= as_of and (rule is None or label_rule_of(store, v) == rule)
    ]
    if not eligible:
        return {
            "action": "none",
            "version": store.production(),
            "reason": f"{because}; no trained version to bootstrap from yet",
        }
    newest = eligible[-1]
    ok, why = beats_baselines(store.metadata(newest))
    if not ok:
        return {
            "action": "none",
            "version": store.production(),
            "reason": f"{because}; bootstrap refused for {newest}: {why}",
        }
    store.set_production(
        newest, "promoted", f"bootstrap ({because}): {why}", as_of=as_of.isoformat()
    )
    return {"action": "promoted", "version": newest, "reason": f"bootstrap ({because}): {why}"}


def decide(
    conn: duckdb.DuckDBPyConnection,
    store: ModelStore,
    as_of: dt.date,
    ab,
    degradation: dict | None,
    rule=None,
) -> dict:
    """Move the pointer if, and only if, the rules say so; return what happened and why.

    ``rule`` is the configured label rule: a production model trained for another rule is never
    compared with candidates; the pointer bootstraps from the newest candidate of the new rule.
    """
    production = store.production()
    if production is None:
        return _bootstrap(store, as_of, rule, "no production yet")
    if rule is not None and label_rule_of(store, production) != rule:
        return _bootstrap(
            store,
            as_of,
            rule,
            f"production {production} was trained for another label rule "
            f"({label_rule_of(store, production).describe()}; configured: {rule.describe()})",
        )

    winners = conn.execute(
        """SELECT candidate, accuracy_diff, reason, p_mcnemar, rows, effect, lower_bound, days,
                  p_value FROM shadow_comparisons
           WHERE as_of = ? AND decision = ? AND candidate <> ?""",
        [as_of, PROMOTE, production],
    ).df()
    if not winners.empty:
        order = sorted(winners["candidate"], key=lambda v: (cutoff_of(store, v), v))
        choice = choose_among(
            _daily_losses(conn, order, production, ab.metric),
            order,
            size=0.10,
            seed=int(as_of.strftime("%Y%m%d")),
        )
        row = winners.set_index("candidate").loc[choice["chosen"]]
        reason = row["reason"]
        if len(order) > 1:
            reason = f"{reason}; chosen among {', '.join(order)} by {choice['method']}"
        statistics = {
            "as_of": as_of.isoformat(),
            "accuracy_diff": float(row["accuracy_diff"]),
            "p_mcnemar": float(row["p_mcnemar"]),
            "rows": int(row["rows"]),
            "effect": float(row["effect"]),
            "lower_bound": float(row["lower_bound"]),
            "days": int(row["days"]),
            "p_value": float(row["p_value"]),
        }
        if getattr(ab, "approval", "auto") == "manual":
            return _await_approval(store, choice["chosen"], production, reason, statistics)
        store.set_production(choice["chosen"], "promoted", reason, **statistics)
        return {"action": "promoted", "version": choice["chosen"], "reason": reason}

    alert = first_degradation(conn, store, production)
    if alert is not None:
        return _rollback_test(conn, store, as_of, ab, production, alert, degradation)
    return {
        "action": "none",
        "version": production,
        "reason": "no candidate passed its comparison; production stays",
    }


def first_degradation(
    conn: duckdb.DuckDBPyConnection, store: ModelStore, production: str
) -> dt.date | None:
    """The first as-of date on which the current production was judged degraded since it serves."""
    since = next(
        (
            e.get("as_of")
            for e in reversed(store.events())
            if e["event"] in POINTER_MOVES and e.get("version") == production
        ),
        None,
    )
    row = one(
        conn,
        "SELECT min(as_of) FROM degradation_log WHERE model_version = ? AND degraded AND as_of >= ?",
        [production, dt.date.fromisoformat(since[:10]) if since else dt.date.min],
    )
    return row[0] if row else None


def _rollback_test(conn, store, as_of, ab, production, alert, degradation) -> dict:
    """After a degradation alert, test the previous production against the current one on the
    rows that came after the alert (never the rows that raised it), with the gate's own rule."""
    previous = previous_production(store)
    why = degradation["reason"] if degradation else f"degraded since {alert}"
    if previous is None or previous not in store.versions():
        return {
            "action": "none",
            "version": production,
            "reason": f"degraded ({why}) but no previous version to roll back to",
        }
    paired = paired_rows(conn, previous, alert, as_of, against=production)
    result = compare_under(paired, ab, seed=int(alert.strftime("%Y%m%d")))
    if result.decision == PROMOTE:
        reason = (
            f"automatic rollback: production degraded (alert {alert}: {why}); on the rows since "
            f"the alert {previous} {result.reason}"
        )
        store.set_production(previous, "rolled_back", reason, as_of=as_of.isoformat())
        return {"action": "rolled_back", "version": previous, "reason": reason}
    return {
        "action": "none",
        "version": production,
        "reason": f"degraded since {alert}; rollback test of {previous} on the rows since then: "
        f"{result.decision} ({result.reason})",
    }


def _daily_losses(conn, versions: list[str], production: str, metric: str):
    """Daily mean proper score of each version on the days all of them were scored."""
    frames = {}
    for version in versions:
        rows = resolved_rows(conn, version, dt.date.min, dt.date.max)
        frames[version] = (
            pd.Series(row_scores(rows["prob_up"], rows["label"], metric))
            .groupby(rows["date"].to_numpy())
            .mean()
        )
    return pd.DataFrame(frames).dropna()


def _await_approval(
    store: ModelStore, version: str, production: str, reason: str, statistics: dict
) -> dict:
    """Under ``approval: manual`` a passing candidate waits for a person; logged once."""
    if version not in {e["version"] for e in store.pending_approvals()}:
        store.append_event(
            "awaiting_approval", version, reason, production=production, **statistics
        )
    return {
        "action": "none",
        "version": production,
        "reason": f"{version} passed its comparison ({reason}) and waits for approval "
        f"(ab_testing.approval: manual): `stage2 approve {version}` or `stage2 reject {version}`",
    }


def approve(store: ModelStore, version: str, reason: str, as_of: str | None = None) -> dict:
    """Promote a candidate that waits for approval, with the statistics of its comparison."""
    version = validate_version(version)
    waiting = {e["version"]: e for e in store.pending_approvals()}
    if version not in waiting:
        listed = ", ".join(waiting) or "none"
        raise ModelStoreError(
            f"{version} is not waiting for approval (waiting: {listed}); "
            "`stage2 promote VERSION` promotes any version by hand"
        )
    event = waiting[version]
    statistics = {
        k: event[k]
        for k in ("as_of", "accuracy_diff", "p_mcnemar", "rows", "effect", "lower_bound", "days")
        if k in event
    }
    why = f"approved{': ' + reason if reason else ''} (comparison: {event['reason']})"
    if as_of:
        statistics["as_of"] = as_of  # the move is dated when it is made, not when it passed
    store.set_production(version, "promoted", why, approved=True, **statistics)
    return {"action": "promoted", "version": version, "reason": why}


def reject(store: ModelStore, version: str, reason: str) -> dict:
    """Turn down a candidate that waits for approval; it stays in the store, never served."""
    version = validate_version(version)
    if version not in {e["version"] for e in store.pending_approvals()}:
        raise ModelStoreError(f"{version} is not waiting for approval")
    store.append_event("rejected", version, reason or "rejected by an operator")
    return {"action": "rejected", "version": version, "reason": reason or "rejected"}


def manual_promote(store: ModelStore, version: str, reason: str, as_of: str | None = None) -> dict:
    version = validate_version(version)
    store.version_path(version)
    if store.production() == version:
        raise ModelStoreError(f"{version} is already production")
    dated = {"as_of": as_of} if as_of else {}
    store.set_production(version, "manual_promote", reason or "manual override", **dated)
    return {"action": "manual_promote", "version": version, "reason": reason or "manual override"}


def rollback_target(store: ModelStore, version: str | None) -> str:
    """The version a rollback returns to: ``version``, which must have served in production
    before, or the one production served before the current one."""
    target = validate_version(version) if version else previous_production(store)
    if target is None:
        raise ModelStoreError(
            "no previous production version to roll back to; name one (`stage2 versions`)"
        )
    if target == store.production():
        raise ModelStoreError(f"{target} is already production")
    store.version_path(target)
    served = store.production_history()
    if target not in served:
        raise ModelStoreError(
            f"{target} never served in production, so there is nothing to roll back to (served: "
            f"{', '.join(dict.fromkeys(reversed(served))) or 'none'}); to put it in production "
            f"anyway: `stage2 promote {target}`"
        )
    return target


def rollback(store: ModelStore, version: str | None, reason: str, as_of: str | None = None) -> dict:
    """Point production back at ``version``, or at the version it served before the current one."""
    target = rollback_target(store, version)
    dated = {"as_of": as_of} if as_of else {}
    store.set_production(target, "rolled_back", reason or "manual rollback", **dated)
    return {"action": "rolled_back", "version": target, "reason": reason or "manual rollback"}
