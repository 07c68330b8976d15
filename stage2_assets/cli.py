"""The ``stage2`` command: a thin layer that launches Dagster jobs and reads the stores.

Every command that changes state runs a Dagster job in the instance at ``$DAGSTER_HOME`` (created
next to the config, telemetry off, when unset), so its runs show in the UI like scheduled ones.
Errors a person can act on print one line and exit 2; a failed run exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from stage2_assets import clock
from stage2_assets.errors import Stage2Error
from stage2_assets.launch import run_failures, run_job

_INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def _prepare_instance(settings) -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.resolve(Path("../.dagster")))
        os.environ["DAGSTER_HOME"] = home
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "dagster.yaml").exists():
        (path / "dagster.yaml").write_text(_INSTANCE_YAML)
    return path


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _check_as_of(settings, day: dt.date | None) -> None:
    """Refuse an as-of date no partition can hold, before anything is launched."""
    if day is None:
        return
    today = clock.today()
    first = settings.first_partition
    if day > today:
        raise Stage2Error(
            f"--as-of {day} lies in the future; give a date from {first} to {today} (today)"
        )
    if day < first:
        raise Stage2Error(
            f"--as-of {day} lies before the first partition ({first}, first_partition in the "
            f"config); give a date from {first} to {today}"
        )


def _report_full(settings, run_id: str, named: list[str]) -> None:
    from stage2_assets.resources.warehouse import Warehouse

    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        symbols, revised = conn.execute(
            "SELECT count(DISTINCT symbol), coalesce(sum(revised), 0) FROM refresh_log WHERE run_id = ?",
            [run_id],
        ).fetchone()
        per_symbol = conn.execute(
            "SELECT symbol, revised FROM refresh_log WHERE run_id = ? AND revised > 0 ORDER BY symbol",
            [run_id],
        ).fetchall()
        (moved,) = conn.execute(
            "SELECT count(*) FROM raw_bars_replaced WHERE replaced_by_run = ?", [run_id]
        ).fetchone()
        # the named symbols (or all) whose fetch failed were not fetched again
        failed = [
            s
            for (s,) in conn.execute(
                "SELECT symbol FROM refresh_log WHERE run_id = ? AND error IS NOT NULL "
                "ORDER BY symbol",
                [run_id],
            ).fetchall()
            if not named or s in named
        ]
    listed = ", ".join(f"{s} {n}" for s, n in per_symbol) or "none"
    fetched = (len(named) or symbols) - len(failed)
    print(
        f"full re-fetch of {fetched} symbol{'' if fetched == 1 else 's'}: {revised} bars revised "
        f"({listed}); "
        f"{moved} stored rows replaced, kept in raw_bars_replaced"
        + (f"; not fetched: {', '.join(failed)} (see failed above)" if failed else "")
    )


def _newest_feature_date(settings) -> dt.date | None:
    from stage2_assets.resources.warehouse import Warehouse

    if not settings.warehouse_path.exists():
        return None
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        row = conn.execute("SELECT max(date) FROM features").fetchone()
    return row[0] if row else None


def _check_fresh(settings, cutoff: dt.date) -> None:
    """`train` does not refresh: refuse, before launching, a cut-off past the data."""
    from stage2_assets.assets.training import require_fresh
    from stage2_assets.errors import TrainingError

    try:
        require_fresh(
            _newest_feature_date(settings), cutoff, settings.data_refresh.max_stale_sessions
        )
    except TrainingError as exc:
        raise Stage2Error(str(exc)) from None


def _warn_stale(settings, as_of: dt.date | None) -> None:
    from stage2_assets.market.calendar import sessions_after

    day = as_of or clock.today()
    newest = _newest_feature_date(settings)
    stale = sessions_after(newest, day)
    if stale is not None and stale > settings.data_refresh.max_stale_sessions:
        print(
            f"stage2: WARNING: the newest data is from {newest}, {stale} sessions before {day} "
            f"(data_refresh.max_stale_sessions: {settings.data_refresh.max_stale_sessions})",
            file=sys.stderr,
        )


def _report_run(result, job_name: str) -> int:
    for line in run_failures(result):
        print(f"stage2: {line}", file=sys.stderr)
    ok = _ok(result)  # a failed non-blocking check (degradation) is reported, not a failure
    print(f"{job_name} run {result.run_id} {'succeeded' if ok else 'failed'}")
    return 0 if ok else 1


def _progress(args):
    """Where a run's per-step lines go: standard error, unless --quiet or --json."""
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        return None
    print("steps:", file=sys.stderr, flush=True)
    return lambda line: print(line, file=sys.stderr, flush=True)


def _tell(args, settings, result, as_of, job_name: str) -> int:
    """The run's outcome: its story (or, with --json, only the story as JSON on standard output)."""
    from stage2_assets.reporting.week import summary_lines, week_summary

    summary = week_summary(settings, result, as_of or clock.today())
    if args.json or args.quiet:  # what went wrong still says why, on standard error
        for line in run_failures(result):
            print(f"stage2: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0 if summary["status"] == "succeeded" and _ok(result) else 1
    if args.quiet:
        print("\n".join(summary_lines(summary)))
        return 0 if _ok(result) else 1
    code = _report_run(result, job_name)
    print("\n".join(summary_lines(summary)[1:]))
    return code


def _ok(result) -> bool:
    return result.success and not any(
        e.event_type_value == "STEP_SKIPPED" for e in result.all_events
    )


def cmd_refresh(args, settings) -> int:
    from stage2_assets.market.intake import FULL_TAG
    from stage2_assets.names import validate_symbol

    _check_as_of(settings, args.as_of)
    tags = {}
    if args.full is not None:
        tags[FULL_TAG] = ",".join(validate_symbol(s) for s in args.full) if args.full else "*"
    if args.full:  # named symbols outside the universe are refused before any run starts
        from stage2_assets.market.intake import configured_symbols, full_refresh_symbols
        from stage2_assets.resources.market_data import source_from_settings

        source = source_from_settings(settings)
        full_refresh_symbols(tags[FULL_TAG], configured_symbols(settings, source))
    result = run_job(
        settings,
        "refresh_market_data",
        args.as_of,
        extra_tags=tags,
        log_level=args.log_level,
        progress=_progress(args),
    )
    code = _tell(args, settings, result, args.as_of, "refresh_market_data")
    if args.full is not None and code == 0 and not args.json:
        _report_full(settings, result.run_id, [s.upper() for s in args.full])
    if not args.json:
        _warn_stale(settings, args.as_of)
    return code


def cmd_weekly(args, settings) -> int:
    _check_as_of(settings, args.as_of)
    result = run_job(
        settings,
        "weekly_adaptation",
        args.as_of,
        log_level=args.log_level,
        progress=_progress(args),
    )
    code = _tell(args, settings, result, args.as_of, "weekly_adaptation")
    if not args.json:
        _warn_stale(settings, args.as_of)
        store = _store(settings)
        print(f"production: {store.production() or 'none'}")
    return code


def cmd_train(args, settings) -> int:
    _check_as_of(settings, args.as_of)
    _check_fresh(settings, args.as_of or clock.today())
    result = run_job(
        settings, "train_ensemble", args.as_of, log_level=args.log_level, progress=_progress(args)
    )
    code = _tell(args, settings, result, args.as_of, "train_ensemble")
    if code == 0 and not args.json:
        # the run's own candidate (the store's newest version may be another, when it was reused)
        trained = [
            e.event_specific_data.materialization.metadata
            for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
            and e.asset_key.to_user_string() == "ensemble_vN"
        ]
        if trained:
            meta = trained[-1]
            reused = meta.get("reused") is not None and meta["reused"].value
            print(f"{'reused' if reused else 'new'} version: {meta['version'].value}")
    return code


def _store(settings):
    from stage2_assets.resources.model_store import ModelStore

    return ModelStore(root=str(settings.models_path))


def cmd_versions(args, settings) -> int:
    store = _store(settings)
    production = store.production()
    listing = []
    for version in store.versions():
        meta = store.metadata(version)
        hp = meta.get("hyperparameters", {})
        listing.append(
            {
                "version": version,
                "cutoff": meta.get("cutoff"),
                "production": version == production,
                "metrics": meta["metrics"]["ensemble"],
                "baselines": {k: v["accuracy"] for k, v in meta["metrics"]["baselines"].items()},
                "trained_at": meta.get("trained_at"),
                "path": str(store.version_path(version).resolve()),
                # how it was trained: the window, recency weights, the refit (metrics then judge
                # the first fit, the refit holding nothing out)
                "training": {
                    "window_days": hp.get("data_window_days"),
                    "recency_half_life_days": hp.get("recency_half_life_days"),
                    "refit": bool(hp.get("refit")),
                },
            }
        )
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    if not listing:
        print(f"no versions in {store.versions_dir}")
    for item in listing:
        m = item["metrics"]
        mark = "*" if item["production"] else " "
        b = item["baselines"]
        extra = (
            f", always up {b['always_up']:.4f}, Brier skill {m['brier_skill']:+.4f}"
            if "always_up" in b and "brier_skill" in m
            else ""
        ) + (f", yesterday {b['yesterday']:.4f}" if "yesterday" in b else "")
        t = item["training"]
        levers = [
            *([f"window {t['window_days']}d"] if t["window_days"] else []),
            *([f"half-life {t['recency_half_life_days']}d"] if t["recency_half_life_days"] else []),
            *(["refit on the whole window: figures of the first fit"] if t["refit"] else []),
        ]
        print(
            f"{mark} {item['version']}  cutoff {item['cutoff']}  accuracy {m['accuracy']:.4f}  "
            f"log loss {m['log_loss']:.4f}  ECE {m['ece']:.4f}  (majority {b['majority']:.4f}{extra})"
            + (f"  [{'; '.join(levers)}]" if levers else "")
        )
    return 0


def _acting_as_of(settings, given: dt.date | None) -> str:
    """The as-of date a manual pointer act is dated by: --as-of, else the newest week the store has
    run (an operator working through past weeks acts within them), else today."""
    if given:
        return given.isoformat()
    from stage2_assets.resources.warehouse import Warehouse

    if settings.warehouse_path.exists():
        with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
            (newest,) = conn.execute("SELECT max(as_of) FROM refresh_log").fetchone()
        if newest is not None:
            return min(newest, clock.today()).isoformat()
    return clock.today().isoformat()


def _pointer(
    settings,
    job: str,
    version: str,
    reason: str,
    log_level: str,
    action: str | None = None,
    as_of: dt.date | None = None,
) -> int:
    from stage2_assets.names import validate_version

    _check_as_of(settings, as_of)
    store = _store(settings)
    if action == "approve" and settings.ab_testing.approval == "auto":
        raise Stage2Error(
            "ab_testing.approval is auto: a candidate that passes is promoted by the weekly run, "
            "none waits for approval (`stage2 promote VERSION` promotes any version by hand)"
        )
    if version:
        store.version_path(validate_version(version))  # refuse before launching anything
    if action in ("approve", "reject"):
        waiting = [e["version"] for e in store.pending_approvals()]
        if version not in waiting:
            raise Stage2Error(
                f"{version} is not waiting for approval (waiting: {', '.join(waiting) or 'none'})"
            )
    if version and version == store.production() and action is None:
        store.append_event("noted", version, reason=f"{job}: already production; nothing moved")
        print(f"{version} is already production; nothing moved (logged)")
        return 0
    if job == "rollback_production":
        from stage2_assets.promotion.pointer import rollback_target

        rollback_target(store, version or None)  # refuse before launching anything
    config = {
        "ops": {
            "production_pointer": {
                "config": {
                    "action": action or job.split("_")[0],
                    "version": version,
                    "reason": reason,
                    "as_of": _acting_as_of(settings, as_of),
                }
            }
        }
    }
    result = run_job(settings, f"{job}", None, log_level=log_level, run_config=config)
    code = _report_run(result, job)
    print(f"production: {store.production() or 'none'}")
    return code


def _pointer_command(job: str, action: str | None, default_reason: str):
    """A `stage2` command that moves (or, for reject, settles) the pointer through ``job``."""

    def command(args, settings) -> int:
        return _pointer(
            settings,
            job,
            getattr(args, "version", None) or "",
            args.reason or default_reason,
            args.log_level,
            action=action,
            as_of=args.as_of,
        )

    return command


cmd_approve = _pointer_command("promote_version", "approve", "")
cmd_reject = _pointer_command("promote_version", "reject", "")
cmd_promote = _pointer_command("promote_version", None, "manual override (stage2 promote)")
cmd_rollback = _pointer_command("rollback_production", None, "manual rollback (stage2 rollback)")


def _predict_at(args, settings) -> int:
    """What the version serving on ``--at`` predicted that day, from the logged predictions."""
    import pandas as pd

    from stage2_assets.market.calendar import nyse_sessions
    from stage2_assets.promotion.history import pointer_history, serving_on
    from stage2_assets.resources.warehouse import Warehouse

    if args.version or args.as_of:
        raise Stage2Error(
            "--at reads what was served; it does not combine with --version or --as-of"
        )
    _check_at(args.at)
    store = _store(settings)
    move = serving_on(store, args.at)
    if move is None:
        moves = pointer_history(store)
        raise Stage2Error(
            f"no version served on {args.at}: "
            + (
                f"the first pointer move was dated {moves[0]['date']} and a move serves from the "
                "day after (see `stage2 history`)"
                if moves
                else "production has never been set"
            )
        )
    if len(nyse_sessions(args.at, args.at)) == 0:
        raise Stage2Error(f"{args.at} is not an NYSE session: nothing was predicted for it")
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT symbol, date, prob_up, confidence, label, fwd_return, logged_as_of FROM predictions "
            "WHERE model_version = ? AND date = ? ORDER BY symbol",
            [move["version"], args.at],
        ).df()
        span = conn.execute(
            "SELECT min(date), max(date) FROM predictions WHERE model_version = ?",
            [move["version"]],
        ).fetchone()
    if rows.empty:
        logged = (
            f"it logged predictions for {span[0]} .. {span[1]}" if span[0] else "it logged none"
        )
        raise Stage2Error(
            f"{move['version']} served on {args.at} but logged no prediction for that day ({logged}; "
            "a version logs the days its runs covered, up to 92 days back)"
        )
    records = [
        {
            "symbol": r.symbol,
            "date": str(r.date)[:10],
            "prob_up": round(float(r.prob_up), 6),
            "confidence": round(float(r.confidence), 6),
            "label": None if pd.isna(r.label) else int(r.label),
            "logged_as_of": str(r.logged_as_of)[:10],
        }
        for r in rows.itertuples()
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "version": move["version"],
                    "at": args.at.isoformat(),
                    # the README's contract: served_since; moved_on kept (the same date: a move
                    # dated D serves from the day after)
                    "served_since": move["date"],
                    "moved_on": move["date"],
                    "how": move["how"],
                    "predictions": records,
                },
                indent=2,
            )
        )
    else:
        print(
            f"version {move['version']} served on {args.at} ({move['how']} on {move['date']}, "
            "serving from the next day)"
        )
        for r in records:
            outcome = {None: "outcome pending", 1: "went up", 0: "went down"}[r["label"]]
            print(_prediction_line(r, f"  {outcome}"))
    return 0


def _prediction_line(record: dict, note: str = "") -> str:
    return (
        f"{record['symbol']:<8} {record['date']}  P(up) {record['prob_up']:.4f}  "
        f"confidence {record['confidence']:.4f}{note}"
    )


def _check_at(day: dt.date) -> None:
    if day > clock.today():
        raise Stage2Error(f"--at {day} lies in the future; nothing has served on it yet")


def cmd_predict(args, settings) -> int:
    from stage2_assets.market.membership import members_on
    from stage2_assets.ml.predictor import EnsemblePredictor
    from stage2_assets.names import validate_version
    from stage2_assets.resources.warehouse import Warehouse

    if args.at:
        return _predict_at(args, settings)
    today = clock.today()
    if args.as_of and args.as_of > today:
        raise Stage2Error(
            f"--as-of {args.as_of} lies in the future; predict answers for a day up to today "
            f"({today}) from the newest features on or before it"
        )
    store = _store(settings)
    predictor = EnsemblePredictor.load(
        store, validate_version(args.version) if args.version else None
    )
    day = args.as_of or today
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT * FROM features WHERE date <= ? QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY date DESC) = 1 ORDER BY symbol",
            [day],
        ).df()
        held = dict(conn.execute("SELECT symbol, reasons FROM quarantine").fetchall())
        states = members_on(conn, day, settings.data_refresh.max_stale_sessions)
    # a symbol whose bars stopped long before the day (delisted, acquired) is not served then
    left = sorted(s for s in rows["symbol"] if states.get(s, "member") != "member")
    rows = rows[~rows["symbol"].isin(left)]
    if rows.empty:
        raise Stage2Error(f"no features on or before {day}: run `stage2 refresh` first")
    out = predictor.predict(rows)
    records = [
        {
            "symbol": r.symbol,
            "date": str(r.date)[:10],
            "prob_up": round(float(r.prob_up), 6),
            "confidence": round(float(r.confidence), 6),
            # quarantined now: its features stop at its last validated bar
            "quarantined": r.symbol in held,
        }
        for r in out.itertuples()
    ]
    from stage2_assets.market.calendar import sessions_after

    newest = max(r["date"] for r in records)
    stale = sessions_after(dt.date.fromisoformat(newest), day)
    if args.json:
        print(
            json.dumps(
                {
                    "version": predictor.version,
                    "as_of": day.isoformat(),
                    "newest_feature_date": newest,
                    "stale_sessions": stale,
                    "predictions": records,
                    # symbols with features whose bars stopped before the day: not served
                    "left_universe": left,
                },
                indent=2,
            )
        )
    else:
        dates = sorted({r["date"] for r in records})
        span = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]} (per symbol below)"
        print(
            f"version {predictor.version}, each symbol's latest features on or before {day}: {span}"
        )
        if stale > settings.data_refresh.max_stale_sessions:
            print(
                f"stage2: WARNING: the newest features are from {newest}, {stale} sessions before {day}",
                file=sys.stderr,
            )
        for r in records:
            note = (
                f"  QUARANTINED: {', '.join(json.loads(held[r['symbol']]))}"
                if r["quarantined"]
                else ""
            )
            print(_prediction_line(r, note))
        if left:
            print(f"not in the universe on {day} (their bars stopped earlier): {', '.join(left)}")
    return 0


def _refresh_problems(last: dict, max_stale: int) -> list[str]:
    """What the last refresh found wrong, one line each (status's text)."""
    from stage2_assets.market.refresh import failures_by_reason, named

    lines = [
        f"failed {named(symbols)}: {reason}"
        for reason, symbols in failures_by_reason(last.get("errors") or {}).items()
    ]
    for symbol in last.get("missing_symbols", []):
        lines.append(f"missing from the source since {last['missing_since'][symbol]}: {symbol}")
    for refused in last.get("refused_files", []):
        lines.append(f"refused file {refused['file']!r}: {refused['reason']}")
    gate = last.get("gate") or {}
    if gate.get("outcome") == "blocked":
        lines.append(
            f"the quality gate blocked it ({gate['failed_share']:.1%} of symbols failed; it allows "
            f"{gate['allowed']:.0%}: {named(gate['failing'])}): nothing downstream ran, "
            "validated_bars holds the last good data"
        )
    stale = last.get("stale_sessions")
    if stale is not None and stale > max_stale:
        lines.append(f"stale: the newest validated bar is {stale} sessions before the as-of date")
    return lines


def cmd_universe(args, settings) -> int:
    import pandas as pd

    from stage2_assets.market.membership import membership
    from stage2_assets.resources.warehouse import Warehouse

    day = args.at or clock.today()
    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        table = membership(conn, day, settings.data_refresh.max_stale_sessions)
    rows = [
        {
            "symbol": r.symbol,
            "first_date": r.first_date.isoformat(),
            "last_date": None if pd.isna(r.last_date) else r.last_date.isoformat(),
            "state": r.state,
            "missing_since": None if pd.isna(r.missing_since) else r.missing_since,
        }
        for r in table.itertuples()
    ]
    if args.json:
        print(json.dumps({"at": day.isoformat(), "symbols": rows}, indent=2))
        return 0
    counts = table["state"].value_counts().to_dict()
    print(
        f"universe on {day}: {counts.get('member', 0)} members, {counts.get('left', 0)} left, "
        f"{counts.get('not_yet', 0)} not yet listed"
    )
    for r in rows:
        gone = f", missing from the source since {r['missing_since']}" if r["missing_since"] else ""
        print(f"{r['symbol']:<8} {r['state']:<8} {r['first_date']} .. {r['last_date']}{gone}")
    return 0


def cmd_comparisons(args, settings) -> int:
    from stage2_assets.promotion.shadow import recompute_comparison, with_archive
    from stage2_assets.resources.warehouse import Warehouse
    from stage2_assets.status import gate_figures

    with Warehouse(database=str(settings.warehouse_path)).connect(read_only=True) as conn:
        logged = (
            with_archive(conn, settings.predictions_archive_path)
            if args.recompute
            else "predictions"
        )
        stored = conn.execute("SELECT * FROM shadow_comparisons ORDER BY as_of, candidate").df()
        listing = []
        for row in stored.itertuples():
            item = {
                "candidate": row.candidate,
                "production": row.production,
                "as_of": str(row.as_of)[:10],
                "rows": int(row.rows),
                "accuracy_diff": float(row.accuracy_diff),
                "ci": [float(row.ci_low), float(row.ci_high)],
                "p_values": {"mcnemar": float(row.p_mcnemar), "paired": float(row.p_paired)},
                "decision": row.decision,
                "reason": row.reason,
                **gate_figures(row._asdict()),
            }
            if args.recompute:
                again = recompute_comparison(
                    conn, row.candidate, row.as_of, settings.ab_testing, table=logged
                )
                same = (again.rows, again.decision, round(again.p_mcnemar, 12)) == (
                    int(row.rows),
                    row.decision,
                    round(float(row.p_mcnemar), 12),
                ) and _same_number(again.gate["statistic"], item["statistic"])
                item["recomputed"] = {
                    "decision": again.decision,
                    "p_mcnemar": again.p_mcnemar,
                    "statistic": again.gate["statistic"],
                    "rows": again.rows,
                    "matches": same,
                }
            listing.append(item)
    code = 0 if all(i.get("recomputed", {}).get("matches", True) for i in listing) else 1
    if args.json:
        print(json.dumps(listing, indent=2))
        return code
    for item in listing:
        check = ""
        if "recomputed" in item:
            check = "  recomputed: " + (
                "same" if item["recomputed"]["matches"] else f"DIFFERENT {item['recomputed']}"
            )
        gate = (
            f"{item['days']} days, {item['metric']} gain {item['effect']:+.5f} (lower bound "
            f"{item['lower_bound']:+.5f}, MDE {item['mde']:+.5f}), "
            if item["statistic"] is not None and item["effect"] is not None
            else ""
        )
        print(
            f"{item['as_of']} {item['candidate']} vs {item['production']}: {item['decision']} on "
            f"{item['rows']} rows, {gate}accuracy {item['accuracy_diff']:+.4f} CI "
            f"[{item['ci'][0]:+.4f}, {item['ci'][1]:+.4f}], McNemar p={item['p_values']['mcnemar']:.4g}"
            f"{check}"
        )
    if not listing:
        print("no comparisons yet")
    return code


def cmd_gate(args, settings) -> int:
    from stage2_assets.promotion.gate_file import judge_file, read_paired_predictions

    frame = read_paired_predictions(Path(args.predictions))
    verdicts = judge_file(frame, settings.ab_testing)
    if args.json:
        print(json.dumps(verdicts, indent=2))
        return 0
    ab = settings.ab_testing
    level = (
        f"{ab.alpha:.5g} per comparison (set by ab_testing.significance_level, not the yearly budget)"
        if ab.significance_level is not None
        else f"{ab.alpha:.5g} per comparison (yearly budget {ab.false_promotion_budget:g} / 52)"
    )
    print(
        f"rule: one-sided level {level}, {ab.metric} gain, first look after {ab.first_look} "
        f"labelled days, last after {ab.max_looks}, min_improvement {ab.min_improvement:g}"
    )
    for v in verdicts:
        name = f"comparison {v['comparison']}: " if v["comparison"] is not None else ""
        figures = (
            f" on {v['decided_on'] or 'the last day'} after {v['days']} days ({v['rows']} rows): "
            f"t={v['statistic']:.3f}, p={v['p_value']:.3g}, effect {v['effect']:+.5f}, "
            f"lower bound {v['lower_bound']:+.5f}, MDE {v['mde']:+.5f}"
            if v["statistic"] is not None
            else f": {v['reason']}"
        )
        print(f"{name}{v['decision']}{figures}")
    return 0


def _same_number(a, b) -> bool:
    """Equal to 9 decimals; a missing figure (None, NaN) equals only another missing one."""
    missing_a = a is None or a != a
    missing_b = b is None or b != b
    if missing_a or missing_b:
        return missing_a and missing_b
    return round(float(a), 9) == round(float(b), 9)


def cmd_replay(args, settings) -> int:
    from stage2_assets.replay.report import render_replay, replay_title, summary_lines
    from stage2_assets.replay.runner import (
        recorded_weeks,
        replay_report,
        replay_weeks,
        run_replay,
    )
    from stage2_assets.resources.warehouse import Warehouse

    def progress(week, as_of, status, seconds):
        print(f"week {week} (as of {as_of}): {status} in {seconds:.1f} s", flush=True)

    if args.sweep:
        return _sweep(args, settings)
    if settings.warehouse_path.exists():
        recorded = recorded_weeks(Warehouse(database=str(settings.warehouse_path)))
        done = {(r.week, str(r.as_of)[:10]) for r in recorded.itertuples()}
        weeks = replay_weeks(settings, args.from_date, args.to_date)
        skipped = sum((key, as_of.isoformat()) in done for key, as_of in weeks)
        if skipped:
            print(
                f"resuming: {skipped} of {len(weeks)} weeks already recorded in replay_log, skipped",
                flush=True,
            )
    log = run_replay(settings, args.from_date, args.to_date, on_week=progress)
    report = replay_report(settings, log, args.from_date, args.to_date)
    if args.json_out:
        _write(Path(args.json_out), json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.report:
        _write(
            Path(args.report),
            render_replay(report, replay_title(report)),
        )
    print("\n".join(summary_lines(report)))
    return 0


def _sweep(args, settings) -> int:
    """``replay --sweep``: the finished replay's figures under each setting, no training."""
    from stage2_assets.replay.report import render_replay, replay_title, sweep_lines
    from stage2_assets.replay.runner import recorded_weeks, replay_report, replay_weeks
    from stage2_assets.replay.sweep import apply_setting, parse_sweep, sweep
    from stage2_assets.resources.warehouse import Warehouse

    settings_list = parse_sweep(args.sweep)
    for setting in settings_list:  # every value checked before any work
        apply_setting(settings, setting)
    weeks = replay_weeks(settings, args.from_date, args.to_date)
    log = (
        recorded_weeks(Warehouse(database=str(settings.warehouse_path)))
        if settings.warehouse_path.exists()
        else None
    )
    # a week counts as run whatever its recorded as-of (a replay run to a mid-week date and swept
    # to another one)
    done = set() if log is None else set(log["week"])
    missing = [key for key, _ in weeks if key not in done]
    if missing:
        raise Stage2Error(
            f"--sweep re-scores a finished replay; {len(missing)} of its {len(weeks)} weeks "
            f"(first: {missing[0]}) have not run: run the same replay without --sweep first"
        )
    report = replay_report(settings, log, args.from_date, args.to_date)
    result = sweep(settings, log, args.from_date, args.to_date, settings_list)
    report["sweep"] = result["settings"]
    report["sweep_check"] = result["check"]
    if args.json_out:
        _write(Path(args.json_out), json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.report:
        _write(Path(args.report), render_replay(report, replay_title(report)))
    print("\n".join(sweep_lines(report)))
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def cmd_backup(args, settings) -> int:
    from stage2_assets.backup import backup

    manifest = backup(settings, Path(args.path))
    print(f"backed up {len(manifest['files'])} files to {Path(args.path).resolve()}")
    return 0


def cmd_restore(args, settings) -> int:
    from stage2_assets.backup import restore

    manifest = restore(settings, Path(args.path))
    print(
        f"restored {len(manifest['files'])} files into {settings.warehouse_path} and {settings.models_path}"
    )
    return 0


def cmd_dashboard(args, settings) -> int:
    from stage2_assets.reporting.dashboard import gather, render
    from stage2_assets.resources.warehouse import Warehouse

    page = render(gather(Warehouse(database=str(settings.warehouse_path)), _store(settings)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(page)
    tmp.replace(out)
    print(f"wrote {out.resolve()} ({len(page) // 1024} KiB)")
    return 0


def cmd_history(args, settings) -> int:
    from stage2_assets.promotion.history import pointer_history

    moves = pointer_history(_store(settings))
    if args.json:
        print(json.dumps({"moves": moves}, indent=2))
        return 0
    if not moves:
        print("no pointer move yet: production has never been set")
        return 0
    for m in moves:
        stats = ""
        if "effect" in m:
            stats = (
                f"  effect {m['effect']:+.5f} (lower bound {m.get('lower_bound', float('nan')):+.5f}), "
                f"p {m.get('p_value', float('nan')):.2g}, {m.get('days', '?')} days"
            )
        print(f"{m['date']}  {m['how']:<9} {m['version']}{stats}")
        print(f"            {m['reason']}")
    return 0


def _status_at(settings, day: dt.date) -> dict:
    from stage2_assets.promotion.history import serving_on

    _check_at(day)
    move = serving_on(_store(settings), day)
    return {
        "at": day.isoformat(),
        "production": {
            "version": move["version"] if move else None,
            "since": move["date"] if move else None,
            "how": move["how"] if move else None,
            "reason": move["reason"] if move else None,
        },
    }


def cmd_status(args, settings) -> int:
    if args.at:
        status = _status_at(settings, args.at)
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            production = status["production"]
            if production["version"]:
                print(
                    f"production on {args.at}: {production['version']} ({production['how']} on "
                    f"{production['since']}, serving from the next day: {production['reason']})"
                )
            else:
                print(f"production on {args.at}: none (no pointer move before that date)")
        return 0
    from stage2_assets.status import collect_status

    status = collect_status(settings)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        if not settings.warehouse_path.exists():  # a mistyped path reads as an empty store
            print(
                f"warehouse {settings.warehouse_path} does not exist yet: nothing was refreshed "
                "into it (check storage.warehouse in the config, or run `stage2 refresh`)"
            )
        print(f"source: {status['source']}")
        for name, table in status["tables"].items():
            span = f"{table['first_date']} .. {table['last_date']}" if table["rows"] else "-"
            print(f"{name:16} {table['rows']:>9} rows {table['symbols']:>5} symbols  {span}")
        last = status["last_refresh"]
        from stage2_assets.market.refresh import named

        failed = named(last["failed_symbols"])
        print(
            f"last refresh (as of {last.get('as_of')}): fetched {last['fetched']}, new {last['new']}, "
            f"revised {last['revised']}, failed: {failed or 'none'}"
        )
        for line in _refresh_problems(last, settings.data_refresh.max_stale_sessions):
            print(f"  {line}")
        for item in status["quarantine"]:
            print(f"quarantined {item['symbol']}: {'; '.join(item['reasons'])}")
        production = status["production"]
        since = f" (since {production['since']})" if production["since"] else ""
        print(f"production: {production['version'] or 'none'}{since}")
        if production.get("problem"):
            print(f"WARNING: {production['problem']}", file=sys.stderr)
        print(f"shadow: {', '.join(status['shadow']) or 'none'}")
        for item in status["pending_approvals"]:
            print(
                f"awaiting approval: {item['version']} (passed on {item['as_of']}: {item['reason']}); "
                f"`stage2 approve {item['version']}` or `stage2 reject {item['version']}`"
            )
        last = status["last_comparison"]
        if last:
            print(
                f"last comparison: {last['candidate']} vs {last['production']}: {last['decision']} ({last['reason']})"
            )
    # a pointer that names a version that cannot be served is an emergency: say it in the exit code
    return 3 if status["production"].get("problem") else 0


# Commands that change the stores run one at a time per warehouse.
EXCLUSIVE = {
    "weekly",
    "refresh",
    "train",
    "promote",
    "approve",
    "reject",
    "rollback",
    "replay",
    "restore",
}


def exclusive(settings, command: str):
    """An exclusive lock beside the warehouse; a second stage2 cycle is refused with a clear message."""
    from filelock import FileLock, Timeout

    path = settings.warehouse_path.with_name(settings.warehouse_path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = path.with_suffix(".owner")
        who = holder.read_text().strip() if holder.exists() else "another process"
        raise Stage2Error(
            f"another stage2 command is changing {settings.warehouse_path} ({who}); `stage2 {command}` was refused, "
            "nothing changed. Run it again when that one has finished."
        ) from None
    path.with_suffix(".owner").write_text(f"pid {os.getpid()}: stage2 {command}\n")
    return lock


def _story_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--quiet", action="store_true", help="print only the summary (no per-step lines)"
    )
    command.add_argument(
        "--json",
        action="store_true",
        help="print only the summary, as JSON (a contract); progress goes to standard error",
    )


def _pointer_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--reason", default="", help="why, for the audit log")
    command.add_argument(
        "--as-of",
        type=_date,
        help="the as-of date the move is dated by in the pointer's history (default: the newest "
        "week the store has run, else today)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stage2", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="settings file (default: $STAGE2_CONFIG or config/adaptation.yaml)"
    )
    parser.add_argument(
        "--log-level",
        default="CRITICAL",
        help="Dagster console log level of runs (default CRITICAL: Dagster's errors and traces stay "
        "in the run log, the UI shows them; stage2 says what failed in one line)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    refresh = sub.add_parser(
        "refresh", help="fetch new bars, gate them, recompute features (refresh_market_data)"
    )
    refresh.add_argument("--as-of", type=_date, help="answer as of this date (default: today)")
    refresh.add_argument(
        "--full",
        nargs="*",
        metavar="SYMBOL",
        help="re-fetch whole histories (every symbol, or the ones named) and report what was revised",
    )
    _story_arguments(refresh)
    refresh.set_defaults(func=cmd_refresh)
    weekly = sub.add_parser(
        "weekly", help="run one week of the adaptation loop (weekly_adaptation)"
    )
    weekly.add_argument("--as-of", type=_date, help="the week's as-of date (default: today)")
    _story_arguments(weekly)
    weekly.set_defaults(func=cmd_weekly)
    train = sub.add_parser(
        "train", help="train a candidate for the week of a date (train_ensemble)"
    )
    train.add_argument("--as-of", type=_date, help="cut-off date (default: today)")
    _story_arguments(train)
    train.set_defaults(func=cmd_train)
    versions = sub.add_parser("versions", help="list model versions")
    versions.add_argument(
        "--json", action="store_true", help="machine-readable output (a contract)"
    )
    versions.set_defaults(func=cmd_versions)
    promote = sub.add_parser("promote", help="make a version production (manual override, logged)")
    promote.add_argument("version")
    _pointer_arguments(promote)
    promote.set_defaults(func=cmd_promote)
    approve = sub.add_parser(
        "approve", help="promote a candidate waiting for approval (ab_testing.approval: manual)"
    )
    approve.add_argument("version")
    _pointer_arguments(approve)
    approve.set_defaults(func=cmd_approve)
    reject = sub.add_parser("reject", help="turn down a candidate waiting for approval")
    reject.add_argument("version")
    _pointer_arguments(reject)
    reject.set_defaults(func=cmd_reject)
    rollback = sub.add_parser(
        "rollback", help="point production back at VERSION or the previous version"
    )
    rollback.add_argument("version", nargs="?")
    _pointer_arguments(rollback)
    rollback.set_defaults(func=cmd_rollback)
    predict = sub.add_parser("predict", help="probability of up and confidence per symbol")
    predict.add_argument("--version", help="version (default: production)")
    predict.add_argument(
        "--as-of", type=_date, help="use each symbol's latest features on or before this date"
    )
    predict.add_argument("--json", action="store_true")
    predict.add_argument(
        "--at",
        type=_date,
        help="what the version serving on this date predicted that day (logged predictions)",
    )
    predict.set_defaults(func=cmd_predict)
    comparisons = sub.add_parser(
        "comparisons",
        help="stored shadow comparisons, optionally recomputed from stored predictions",
    )
    comparisons.add_argument(
        "--recompute", action="store_true", help="recompute every decision; exit 1 if one differs"
    )
    comparisons.add_argument("--json", action="store_true")
    comparisons.set_defaults(func=cmd_comparisons)
    gate = sub.add_parser(
        "gate",
        help="apply the configured promotion rule to a CSV or Parquet file of paired predictions",
    )
    gate.add_argument(
        "--predictions",
        required=True,
        help="file with date, symbol, label, fwd_return, prob_candidate, prob_production "
        "[, comparison]",
    )
    gate.add_argument("--json", action="store_true", help="machine-readable output (a contract)")
    gate.set_defaults(func=cmd_gate)
    replay = sub.add_parser(
        "replay", help="replay the weekly loop over history (resumable) and score the arms"
    )
    replay.add_argument(
        "--from", dest="from_date", type=_date, required=True, help="first week's date"
    )
    replay.add_argument("--to", dest="to_date", type=_date, required=True, help="last as-of date")
    replay.add_argument("--report", help="write the HTML report here")
    replay.add_argument("--json-out", help="write the figures as JSON here (a contract)")
    replay.add_argument(
        "--sweep",
        nargs="+",
        metavar="KEY=V1,V2",
        help="re-decide the finished replay under other gate settings, from its logged "
        "predictions, without training (one row per combination of the values; e.g. "
        "ab_testing.false_promotion_budget=0.05,0.1,0.2)",
    )
    replay.set_defaults(func=cmd_replay)
    backup = sub.add_parser(
        "backup",
        help="copy the warehouse and the model store into a new folder",
        description="Copy the warehouse and the model store into a new folder (with the "
        "predictions archive and a manifest of SHA-256 checksums), while a read-only connection "
        "keeps writers out: see docs/runbook.md.",
    )
    backup.add_argument("path", help="a folder that does not exist yet, or is empty")
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser(
        "restore",
        help="restore a backup into the configured (empty) warehouse and model store",
        description="Restore a backup into the configured (empty) warehouse and model store, "
        "after checking every file's checksum; it never overwrites a store that holds data.",
    )
    restore.add_argument("path", help="a folder written by `stage2 backup`")
    restore.set_defaults(func=cmd_restore)
    dashboard = sub.add_parser("dashboard", help="write a self-contained HTML dashboard")
    dashboard.add_argument(
        "--out", default="report.html", help="file to write (default report.html)"
    )
    dashboard.set_defaults(func=cmd_dashboard)
    status = sub.add_parser("status", help="what the stores hold")
    status.add_argument("--json", action="store_true", help="machine-readable output (a contract)")
    status.add_argument(
        "--at",
        type=_date,
        help="the production version that served on this date (from the pointer's history)",
    )
    history = sub.add_parser(
        "history", help="every production pointer move: date, version, how, why"
    )
    history.add_argument("--json", action="store_true", help="machine-readable output (a contract)")
    history.set_defaults(func=cmd_history)
    universe = sub.add_parser(
        "universe", help="each symbol's first and last bar, and whether it was a member on a date"
    )
    universe.add_argument("--at", type=_date, help="the date asked about (default today)")
    universe.add_argument("--json", action="store_true", help="machine-readable output")
    universe.set_defaults(func=cmd_universe)
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except BrokenPipeError:  # `stage2 universe | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more may reach the closed pipe
        return 0


def _main(args) -> int:
    try:
        from stage2_assets.config import load_settings

        settings = load_settings(args.config)
        _prepare_instance(settings)
        if args.command in EXCLUSIVE:
            lock = exclusive(settings, args.command)
            try:
                return args.func(args, settings)
            finally:
                lock.release()
        return args.func(args, settings)
    except Stage2Error as exc:
        print(f"stage2: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
