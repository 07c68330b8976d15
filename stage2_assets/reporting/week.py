"""The story of one run of a weekly job, for the terminal and for scripts (``weekly --json``).

Gathered after the run from what it recorded: the refresh log and notes, the gate's verdicts, the
trained version's metadata, the shadow comparisons the run decided and the pointer's decision with
its reason. Nothing here recomputes a figure.
"""

from __future__ import annotations

import json

import pandas as pd

from stage2_assets.launch import run_failures
from stage2_assets.market.calendar import sessions_after
from stage2_assets.market.refresh import failures_by_reason, named, summarize_log
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse, has_table


def _materializations(result) -> dict[str, dict]:
    """{asset name: its metadata, as plain values} of the assets the run materialized."""
    out = {}
    for event in result.all_events:
        if event.event_type_value != "ASSET_MATERIALIZATION":
            continue
        materialization = event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()
        }
    return out


def _check_failures(result) -> list[dict]:
    failures = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                failures.append(
                    {"check": evaluation.check_name, "description": evaluation.description}
                )
    return failures


def week_summary(settings, result, as_of) -> dict:
    """The summary of ``result`` (an executed job): the ``weekly --json`` contract."""
    run_id = result.run_id
    assets = _materializations(result)
    checks = _check_failures(result)
    summary: dict = {
        "as_of": as_of.isoformat(),
        "run_id": run_id,
        "status": "succeeded" if result.success else "failed",
        "refresh": None,
        "gate": None,
        "candidate": None,
        "decisions": [],
        "pointer": None,
        "alerts": [],
        # why the run failed, one line per failed step or check (empty when it succeeded)
        "failures": run_failures(result),
    }
    warehouse = settings.warehouse_path
    if warehouse.exists():
        with Warehouse(database=str(warehouse)).connect(read_only=True) as conn:
            log = conn.execute("SELECT * FROM refresh_log WHERE run_id = ?", [run_id]).df()
            notes = (
                conn.execute("SELECT * FROM refresh_notes WHERE run_id = ?", [run_id]).df()
                if has_table(conn, "refresh_notes")
                else None
            )
            verdicts = conn.execute(
                "SELECT symbol, passed, errors, warnings FROM quality_log WHERE run_id = ? "
                "ORDER BY symbol",
                [run_id],
            ).fetchall()
            held = conn.execute("SELECT symbol, reasons FROM quarantine ORDER BY symbol").fetchall()
            # passed in this run, failed at their verdict before it: a correction released them
            released = conn.execute(
                """
                SELECT q.symbol FROM quality_log q
                WHERE q.run_id = ? AND q.passed AND NOT coalesce((
                    SELECT p.passed FROM quality_log p
                    WHERE p.symbol = q.symbol AND p.checked_at < q.checked_at
                    ORDER BY p.checked_at DESC LIMIT 1), true)
                ORDER BY q.symbol
                """,
                [run_id],
            ).fetchall()
            decisions = conn.execute(
                "SELECT candidate, production, decision, reason, metric, effect, lower_bound, "
                "upper_bound, days, rows FROM shadow_comparisons WHERE run_id = ? ORDER BY candidate",
                [run_id],
            ).df()
            (newest,) = conn.execute(
                "SELECT max(date) FROM validated_bars WHERE date <= ?", [as_of]
            ).fetchone()
        if not log.empty:
            summary["refresh"] = summarize_log(log, notes)
            # NYSE sessions from the newest validated bar to the as-of date, as status says it
            summary["refresh"]["stale_sessions"] = sessions_after(newest, as_of)
        if "raw_bars" in assets or verdicts:
            gate_failed = any(c["check"] == "raw_bars_quality_gate" for c in checks)
            summary["gate"] = {
                "passed": not gate_failed,
                # every symbol in quarantine after the run, with its reasons
                "quarantined": {s: json.loads(r) for s, r in held},
                "flagged": {s: json.loads(w) for s, _, _, w in verdicts if json.loads(w)},
                # symbols out of quarantine since this run (their bars, fetched again, passed)
                "released": [s for (s,) in released],
            }
        summary["decisions"] = [
            {
                k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
                for k, v in row.items()
            }
            for row in decisions.to_dict("records")
        ]
    store = ModelStore(root=str(settings.models_path))
    trained = assets.get("ensemble_vN")
    if trained:
        meta = store.metadata(trained["version"])
        summary["candidate"] = {
            "version": trained["version"],
            "cutoff": meta.get("cutoff"),
            "reused": bool(trained.get("reused")),
            "metrics": meta["metrics"]["ensemble"],
            "baselines": {k: v["accuracy"] for k, v in meta["metrics"]["baselines"].items()},
        }
    pointer = assets.get("production_pointer")
    if pointer:
        summary["pointer"] = {
            "version": store.production(),
            "moved": bool(pointer["moved"]),
            "action": pointer["action"],
            "reason": pointer["reason"],
        }
    summary["alerts"] = [c for c in checks if c["check"] != "raw_bars_quality_gate"]
    return summary


def notes_lines(refresh: dict) -> list[str]:
    """What a refresh noticed beside its bars (the ``last_refresh`` notes), one line each."""
    last_bars = refresh.get("missing_last_bar", {})
    lines = [
        f"missing: {symbol} is no longer delivered by the source "
        f"(since {refresh['missing_since'][symbol]}); "
        + (
            f"its stored bars (to {last_bars[symbol]}) are kept"
            if last_bars.get(symbol)
            else "no bars of it are stored"
        )
        for symbol in refresh.get("missing_symbols", [])
    ]
    lines += [
        f"refused file {r['file']!r}: {r['reason']}" for r in refresh.get("refused_files", [])
    ]
    lines += [
        f"re-adjusted: {symbol}'s history was re-adjusted by the source (stored / delivered = "
        f"{factor:g}); fetched whole and judged again"
        for symbol, factor in refresh.get("readjustment_factors", {}).items()
    ]
    lines += [
        f"collapsed: {symbol} delivered {rows} exactly repeated row(s); stored once"
        for symbol, rows in refresh.get("collapsed_duplicates", {}).items()
    ]
    return lines


def summary_lines(summary: dict) -> list[str]:
    """The summary as a person reads it, one line per fact."""
    lines = [f"week of {summary['as_of']}: run {summary['run_id']} {summary['status']}"]
    refresh = summary["refresh"]
    if refresh:
        failed = refresh["failed_symbols"]
        lines.append(
            f"bars: {refresh['fetched']} fetched, {refresh['new']} new, {refresh['revised']} revised"
            + (f"; failed: {len(failed)} symbol(s)" if failed else "")
        )
        for reason, symbols in failures_by_reason(refresh.get("errors") or {}).items():
            lines.append(f"  failed {named(symbols)}: {reason}")
        lines += notes_lines(refresh)
    gate = summary["gate"]
    if gate:
        state = "passed" if gate["passed"] else "BLOCKED (nothing downstream ran)"
        quarantined = "; ".join(f"{s}: {', '.join(r)}" for s, r in gate["quarantined"].items())
        lines.append(f"gate: {state}; quarantined: {quarantined or 'none'}")
        if gate.get("released"):
            lines.append(
                f"  released: {', '.join(gate['released'])} (quarantined before; "
                f"{'its' if len(gate['released']) == 1 else 'their'} bars, "
                "fetched again, passed)"
            )
        # a quarantined symbol's warnings are not let through: they are said apart
        for label, flags in (
            (
                "flagged (let through)",
                {s: w for s, w in gate["flagged"].items() if s not in gate["quarantined"]},
            ),
            (
                "flagged too (quarantined)",
                {s: w for s, w in gate["flagged"].items() if s in gate["quarantined"]},
            ),
        ):
            if flags:
                lines.append(
                    f"  {label}: " + "; ".join(f"{s}: {', '.join(w)}" for s, w in flags.items())
                )
    candidate = summary["candidate"]
    if candidate:
        m, b = candidate["metrics"], candidate["baselines"]
        base = ", ".join(f"{k} {v:.4f}" for k, v in b.items())
        lines.append(
            f"candidate: {candidate['version']} (cut-off {candidate['cutoff']}"
            f"{', reused' if candidate['reused'] else ''}): validation accuracy "
            f"{m['accuracy']:.4f}, log loss {m['log_loss']:.4f} (baselines: {base})"
        )
    for d in summary["decisions"]:
        effect = (
            f"effect {d['effect']:+.4f} [{d['lower_bound']:+.4f}, {d['upper_bound']:+.4f}] "
            if d.get("effect") is not None
            and d.get("lower_bound") is not None
            and d.get("upper_bound") is not None
            else ""
        )
        lines.append(
            # ``production`` names the versions its paired rows were served by: none before the
            # first labelled day, not "no production"
            f"shadow: {d['candidate']} vs {d['production'] or 'production (no paired day yet)'}: "
            f"{d['decision']} "
            f"({effect}{d['days'] or 0} days): {d['reason']}"
        )
    pointer = summary["pointer"]
    if pointer:
        verb = "moved to" if pointer["moved"] else "stays at"
        lines.append(f"pointer: {verb} {pointer['version'] or 'none'}: {pointer['reason']}")
    for alert in summary["alerts"]:
        lines.append(f"alert: {alert['check']}: {alert['description']}")
    return lines
