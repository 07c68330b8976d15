"""``replay --sweep``: a finished replay decided again under other gate settings, from its logs.

Training does not depend on the gate's decisions (each week's candidate is fitted to the window
ending at its cut-off, whatever production is), so the candidates, and every prediction they
logged, are the same under any gate setting. What changes is which candidates are promoted, and
so which version serves and which candidates are compared against it. This module steps through
the replay's weeks as ``shadow_comparison``, ``model_performance`` and ``production_pointer`` do
(the same functions: the gate's decision, the degradation verdict, the model confidence set),
over an in-memory log instead of the warehouse, and scores the arms with the report's own
``evaluate``.

It is exact where every version a setting needs logged its predictions on the days it needs them.
In a replay every candidate logs for ``replay.log_weeks`` after its cut-off, production and the
arms' versions for as long as they serve; a setting that keeps a version serving or in shadow
beyond what was logged is reported as approximate, with the versions and weeks that lacked logs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import ValidationError

from stage2_assets.errors import Stage2Error
from stage2_assets.partitions import partition_key_for
from stage2_assets.promotion.shadow import EXPIRY_PERIODS, judge_degradation
from stage2_assets.resources.model_store import POINTER_MOVES, ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets.stats.comparison import (
    FINAL_DECISIONS,
    INSUFFICIENT,
    KEEP,
    PROMOTE,
    decision_on_days,
    gate_decision,
)
from stage2_assets.stats.gate import GateRule, choose_among, daily_gains, row_scores

# The settings a sweep may vary: those that act only on decisions, never on training.
SWEEP_KEYS = {
    "ab_testing": (
        "shadow_mode_duration",
        "max_shadow_duration",
        "metric",
        "false_promotion_budget",
        "significance_level",
        "min_improvement",
        "spending_rho",
        "futility_level",
        "min_samples",
    ),
    "monitoring": ("degradation_threshold", "degradation_level"),
}
ALLOWED = tuple(f"{section}.{key}" for section, keys in SWEEP_KEYS.items() for key in keys)


def parse_sweep(items: list[str]) -> list[dict[str, str]]:
    """``KEY=V1,V2`` arguments -> one setting per combination of their values (in order)."""
    axes: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise Stage2Error(
                f"--sweep {item!r}: write KEY=V1,V2 (e.g. ab_testing.min_samples=100,200)"
            )
        if key not in ALLOWED:
            raise Stage2Error(
                f"--sweep: {key!r} is not a gate setting a sweep can vary; these are: {', '.join(ALLOWED)}"
            )
        if key in axes:
            raise Stage2Error(f"--sweep: {key} is given twice")
        axes[key] = [v.strip() for v in values.split(",")]
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def apply_setting(settings, setting: dict[str, str]):
    """A copy of ``settings`` with the setting's values, validated as the config file would be."""
    update = {}
    for section in SWEEP_KEYS:
        changes = {
            k.split(".", 1)[1]: (None if v.lower() in ("null", "none") else v)
            for k, v in setting.items()
            if k.startswith(section + ".")
        }
        if not changes:
            continue
        current = getattr(settings, section)
        try:
            update[section] = type(current).model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            wrong = "; ".join(
                f"{section}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            named = ", ".join(f"{k}={v}" for k, v in setting.items())
            raise Stage2Error(f"--sweep {named}: {wrong}") from None
    return settings.model_copy(update=update)


@dataclass
class ReplayLogs:
    """What a finished replay logged, in memory: the arrays the weekly decisions read."""

    weeks: list[dt.date]  # as-of dates of the weeks that ran (failed weeks decide nothing)
    cutoffs: dict[str, dt.date]
    label_rules: dict[str, object]
    # (as_of, version, previous) of the pointer moves before the replay's first week
    moves_before: list[tuple[dt.date, str, str | None]]
    # the replay's pointer moves by as-of; read only while no production serves (before its first
    # move: the bootstrap, which no gate setting changes)
    bootstraps: dict[dt.date, str]
    versions: list[str]  # column order of the wide tables
    dates: np.ndarray  # datetime64[ns] per row (rows: the (date, symbol) pairs, sorted)
    symbols: np.ndarray
    label: np.ndarray  # float, NaN where unknown
    label_date: np.ndarray  # datetime64[ns], NaT where unknown
    fwd_return: np.ndarray
    prob: np.ndarray  # rows x versions, NaN where not logged
    logged: np.ndarray  # rows x versions: the as-of (ns) of the run that logged it, _NEVER if none
    logging_weeks: dict[str, set] = field(default_factory=dict)


def load_logs(warehouse: Warehouse, store: ModelStore, weeks: pd.DataFrame) -> ReplayLogs:
    """The replay's predictions and events, read once."""
    done = weeks[weeks["status"] == "done"]
    as_ofs = sorted(pd.to_datetime(done["as_of"]).dt.date)
    first_week = dt.date.fromisoformat(str(weeks["week"].min())[:10])
    with warehouse.connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT model_version, symbol, date, prob_up, label, label_date, fwd_return, logged_as_of "
            "FROM predictions ORDER BY date, symbol, model_version"
        ).df()
    events = store.events()
    cutoffs = {v: dt.date.fromisoformat(c) for v, c in store.trained_cutoffs().items()}
    label_rules = {
        e["version"]: e.get("label_rule")
        for e in events
        if e["event"] == "trained" and e.get("version")
    }
    moves = [
        (dt.date.fromisoformat(e["as_of"][:10]), e["version"], e.get("previous"))
        for e in events
        if e["event"] in POINTER_MOVES and e.get("as_of")
    ]
    before = [move for move in moves if move[0] < first_week]
    bootstraps = {d: v for d, v, _ in moves if d >= first_week}
    for column in ("date", "label_date", "logged_as_of"):
        rows[column] = pd.to_datetime(rows[column]).astype("datetime64[ns]")
    versions = sorted(rows["model_version"].unique().tolist())
    keys = rows[["date", "symbol"]].drop_duplicates().reset_index(drop=True)
    index = pd.MultiIndex.from_frame(keys)
    prob = rows.pivot_table(
        index=["date", "symbol"], columns="model_version", values="prob_up", aggfunc="first"
    ).reindex(index=index, columns=versions)
    logged = (
        rows.assign(at=rows["logged_as_of"].astype("int64"))
        .pivot_table(
            index=["date", "symbol"], columns="model_version", values="at", aggfunc="first"
        )
        .reindex(index=index, columns=versions)
    )
    outcome = rows.groupby(["date", "symbol"], sort=False)[
        ["label", "label_date", "fwd_return"]
    ].first()
    outcome = outcome.reindex(index)
    logging_weeks = {
        v: {d.date() for d in pd.to_datetime(part)}
        for v, part in rows.groupby("model_version")["logged_as_of"].unique().items()
    }
    return ReplayLogs(
        weeks=as_ofs,
        cutoffs=cutoffs,
        label_rules=label_rules,
        moves_before=before,
        bootstraps=bootstraps,
        versions=versions,
        dates=keys["date"].to_numpy(dtype="datetime64[ns]"),
        symbols=keys["symbol"].to_numpy(),
        label=outcome["label"].to_numpy(dtype=float),
        label_date=outcome["label_date"].to_numpy(dtype="datetime64[ns]"),
        fwd_return=outcome["fwd_return"].to_numpy(dtype=float),
        prob=prob.to_numpy(dtype=float),
        logged=logged.fillna(float(_NEVER)).to_numpy(dtype="int64"),
        logging_weeks=logging_weeks,
    )


_NEVER = 2**62  # "logged at" of a row never logged: after any date (ns), exact as a float
_NO_DAYS = pd.DataFrame(
    {
        "date": pd.Series(dtype="datetime64[ns]"),
        "rows": pd.Series(dtype=int),
        "gain": pd.Series(dtype=float),
        "accuracy_gain": pd.Series(dtype=float),
    }
)


def _day(value: dt.date) -> np.datetime64:
    return np.datetime64(value, "ns")


class _Week:
    """One run's view of the logs: rows logged by its as-of whose outcome it knew."""

    def __init__(self, logs: ReplayLogs, as_of: dt.date):
        self.logs = logs
        end = _day(as_of)
        self.known = (logs.dates <= end) & ~np.isnan(logs.label) & (logs.label_date <= end)
        self.visible = logs.logged <= end.astype("int64")

    def rows_of(
        self, version: str, after: dt.date | None, until: dt.date | None = None
    ) -> np.ndarray:
        """The version's rows dated after ``after`` (None: all) up to ``until``, as
        ``resolved_rows`` reads them on this week's run."""
        col = self.logs.versions.index(version) if version in self.logs.versions else None
        if col is None:
            return np.zeros(len(self.logs.dates), dtype=bool)
        mask = self.known & self.visible[:, col]
        if after is not None:
            mask &= self.logs.dates > _day(after)
        if until is not None:
            mask &= self.logs.dates <= _day(until)
        return mask

    def frame(self, mask: np.ndarray, version: str) -> pd.DataFrame:
        col = self.logs.versions.index(version)
        return pd.DataFrame(
            {
                "symbol": self.logs.symbols[mask],
                "date": self.logs.dates[mask],
                "prob_up": self.logs.prob[mask, col],
                "label": self.logs.label[mask],
            }
        )


@dataclass
class _State:
    production: str | None = None
    previous: str | None = None
    since: dt.date | None = None
    moves: list[tuple[dt.date, str]] = field(default_factory=list)
    decided: set = field(default_factory=set)
    degraded: list[tuple[dt.date, str]] = field(default_factory=list)
    rollbacks: int = 0
    records: list[dict] = field(default_factory=list)
    gaps: set = field(default_factory=set)

    def move(self, as_of: dt.date, version: str) -> None:
        self.previous, self.production, self.since = self.production, version, as_of
        self.moves.append((as_of, version))


def _serving_index(logs: ReplayLogs, moves: list[tuple[dt.date, str]]) -> np.ndarray:
    """Per row, the column of the version production served that day (-1: none): the last move
    dated strictly before the day, as ``paired_rows`` finds production's logged rows."""
    if not moves:
        return np.full(len(logs.dates), -1)
    effective = np.array([_day(d) for d, _ in moves], dtype="datetime64[ns]")
    cols = np.array([logs.versions.index(v) if v in logs.versions else -1 for _, v in moves])
    pick = effective.searchsorted(logs.dates, side="left") - 1
    return np.where(pick >= 0, cols[np.clip(pick, 0, None)], -1)


def _paired(week: _Week, candidate: str, after: dt.date, against: np.ndarray) -> dict:
    """``paired_rows``: the candidate's known rows beside the ``against`` column's on each row
    (as columns of arrays)."""
    logs = week.logs
    rows = np.flatnonzero(week.rows_of(candidate, after))
    other = against[rows]
    ok = other >= 0
    rows, other = rows[ok], other[ok]
    col = logs.versions.index(candidate)
    # production's row of the day, logged by this run (a day it served itself does not pair)
    ok = week.visible[rows, other] & ~np.isnan(logs.prob[rows, other]) & (other != col)
    rows, other = rows[ok], other[ok]
    return {
        "symbol": logs.symbols[rows],
        "date": logs.dates[rows],
        "label": logs.label[rows],
        "fwd_return": logs.fwd_return[rows],
        "prob_candidate": logs.prob[rows, col],
        "prob_production": logs.prob[rows, other],
    }


def _frame(columns: list[dict], names: list[str] | None = None) -> pd.DataFrame:
    """One frame of several ``_paired`` results (``names``: a ``candidate`` column of each's)."""
    out = {k: np.concatenate([c[k] for c in columns]) for k in columns[0]}
    if names is not None:
        out["candidate"] = np.repeat(names, [len(c["date"]) for c in columns])
    return pd.DataFrame(out)


def simulate(logs: ReplayLogs, settings, shared: dict | None = None) -> _State:
    """The replay's weekly decisions under ``settings``' gate, from the logs alone.

    ``shared`` keeps, across the settings of one sweep, what depends only on its inputs: the
    degradation verdict of a version on a week, the model confidence set of some winners.
    """
    shared = {} if shared is None else shared

    ab, mon = settings.ab_testing, settings.monitoring
    rule = GateRule.from_settings(ab)
    memo: dict = {}  # the gate's looks, by their gains: a shadow's early looks repeat each week
    state = _State()
    for as_of, version, previous in logs.moves_before:
        state.move(as_of, version)
        state.previous = previous
    order = sorted(logs.cutoffs)
    for as_of in logs.weeks:
        week = shared.get(("week", as_of))
        if week is None:
            week = shared[("week", as_of)] = _Week(logs, as_of)
        serving = _serving_index(logs, state.moves)
        production = state.production
        # model_performance: production judged against its own first live window
        if production is not None:
            cutoff = logs.cutoffs[production]
            base_end = cutoff + dt.timedelta(days=mon.performance_window)
            key = (
                "degradation",
                production,
                as_of,
                mon.performance_window,
                mon.degradation_threshold,
                mon.degradation_level,
                ab.min_samples,
            )
            if key not in shared:  # (scipy warns of precision loss when the days are all equal)
                baseline = week.frame(week.rows_of(production, cutoff, base_end), production)
                recent_from = max(as_of - dt.timedelta(days=mon.performance_window), base_end)
                recent = week.frame(week.rows_of(production, recent_from, as_of), production)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
                    shared[key] = judge_degradation(
                        baseline,
                        recent,
                        mon.performance_window,
                        mon.degradation_threshold,
                        mon.degradation_level,
                        ab.min_samples,
                    )["degraded"]
            if shared[key]:
                state.degraded.append((as_of, production))
            if as_of not in logs.logging_weeks.get(production, set()):
                state.gaps.add((production, as_of))
        # shadow_comparison: every undecided candidate against what production served
        decisions = []
        if production is not None:
            compared = [
                c
                for c in order
                if c not in state.decided
                and c not in (production, state.previous)
                and logs.cutoffs[c] < as_of
                and logs.label_rules.get(c) == logs.label_rules.get(production)
            ]
            state.gaps |= {
                (c, as_of) for c in compared if as_of not in logs.logging_weeks.get(c, set())
            }
            gains = (
                daily_gains(
                    _frame(
                        [_paired(week, c, logs.cutoffs[c], serving) for c in compared], compared
                    ),
                    ab.metric,
                    by="candidate",
                )
                if compared
                else {}
            )
            for candidate in compared:
                cutoff = logs.cutoffs[candidate]
                gate = decision_on_days(gains.get(candidate, _NO_DAYS), rule, ab.min_samples, memo)
                decision = gate.decision
                if decision == INSUFFICIENT and as_of > cutoff + dt.timedelta(
                    days=EXPIRY_PERIODS * ab.max_shadow_duration
                ):
                    decision = KEEP
                decisions.append((candidate, decision))
                state.records.append({"candidate": candidate, "as_of": as_of, "decision": decision})
        # production_pointer
        if production is None:
            if as_of in logs.bootstraps:
                state.move(as_of, logs.bootstraps[as_of])
        else:
            winners = [c for c, d in decisions if d == PROMOTE and c != production]
            if winners and ab.approval == "auto":  # manual: the winner waits for a person
                winners.sort(key=lambda v: (logs.cutoffs[v], v))
                key = ("choice", tuple(winners), as_of, ab.metric)
                if key not in shared:
                    shared[key] = choose_among(
                        _daily_losses(week, winners, ab.metric),
                        winners,
                        size=0.10,
                        seed=int(as_of.strftime("%Y%m%d")),
                    )["chosen"]
                state.move(as_of, shared[key])
            elif not winners:
                _rollback_test(state, week, rule, ab, as_of)
        state.decided |= {c for c, d in decisions if d in FINAL_DECISIONS}
    return state


def _daily_losses(week: _Week, versions: list[str], metric: str) -> pd.DataFrame:
    frames = {}
    for version in versions:
        rows = week.frame(week.rows_of(version, None), version)
        frames[version] = (
            pd.Series(row_scores(rows["prob_up"], rows["label"], metric))
            .groupby(rows["date"].to_numpy())
            .mean()
        )
    return pd.DataFrame(frames).dropna()


def _rollback_test(state: _State, week: _Week, rule, ab, as_of: dt.date) -> None:
    """``pointer._rollback_test``: after an alert, the previous production against the current
    one on the rows since the alert."""

    production, previous = state.production, state.previous
    alerts = [d for d, v in state.degraded if v == production and d >= state.since]
    if not alerts or previous is None:
        return
    alert = min(alerts)
    column = week.logs.versions.index(production) if production in week.logs.versions else -1
    against = np.full(len(week.logs.dates), column)
    gate, _ = gate_decision(_frame([_paired(week, previous, alert, against)]), rule, ab.min_samples)
    if gate.decision == PROMOTE:
        state.move(as_of, previous)
        state.rollbacks += 1


def sweep(
    settings, weeks: pd.DataFrame, start: dt.date, end: dt.date, settings_list: list[dict]
) -> dict:
    """The report's figures once per setting (``settings``), and whether the replay's own
    settings reproduce the decisions and pointer moves it recorded (``check``)."""
    from stage2_assets.replay.evaluation import _logged, serving_rules

    warehouse = Warehouse(database=str(settings.warehouse_path))
    store = ModelStore(root=str(settings.models_path))
    logs = load_logs(warehouse, store, weeks)
    scored = weeks[
        (weeks["week"] >= partition_key_for(start))
        & (pd.to_datetime(weeks["as_of"]).dt.date <= end)
    ]
    first = pd.Timestamp(scored["week"].min()).date()
    last = pd.Timestamp(scored["as_of"].max()).date()
    shared: dict = {}
    own = simulate(logs, settings, shared)
    with warehouse.connect(read_only=True) as conn:
        recorded = conn.execute(
            "SELECT candidate, as_of, decision FROM shadow_comparisons ORDER BY as_of, candidate"
        ).df()
    recorded["as_of"] = pd.to_datetime(recorded["as_of"]).dt.date
    mine = pd.DataFrame(own.records, columns=["candidate", "as_of", "decision"])
    check = {
        "decisions_reproduced": bool(
            mine.sort_values(["as_of", "candidate"]).reset_index(drop=True).equals(recorded)
        ),
        "moves_reproduced": own.moves == serving_rules(store)["adaptive"],
        "decisions": int(len(recorded)),
    }
    global _JOB
    _JOB = {
        "settings": settings,
        "weeks": weeks,
        "start": start,
        "end": end,
        "logs": logs,
        "first": first,
        "last": last,
        "always": sorted((c, v) for v, c in logs.cutoffs.items()),
        # what every setting's report reads: the rows, the logs, the static arms
        "cache": {
            "logged": _logged(warehouse, logs.versions, first, last),
            "logged_versions": set(logs.versions),
        },
        "shared": shared,
    }
    workers = min(len(settings_list), os.cpu_count() or 1)
    if workers > 1:  # forked workers inherit the logs; each takes a run of neighbouring settings
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            out = pool.map(_one, settings_list, chunksize=-(-len(settings_list) // workers))
    else:
        out = [_one(setting) for setting in settings_list]
    return {"check": check, "settings": out}


_JOB: dict = {}


def _one(setting: dict) -> dict:
    """One setting of the sweep in ``_JOB``: its decisions and the report's figures."""
    from stage2_assets.replay.runner import replay_report

    job = _JOB
    applied = apply_setting(job["settings"], setting)
    state = simulate(job["logs"], applied, job["shared"])
    records = pd.DataFrame(state.records, columns=["candidate", "as_of", "decision"])
    records = records[(records["as_of"] >= job["first"]) & (records["as_of"] <= job["last"])]
    report = replay_report(
        applied,
        job["weeks"],
        job["start"],
        job["end"],
        rules={
            "adaptive": state.moves,
            "frozen": state.moves[:1],
            "always_promote": job["always"],
        },
        comparisons=records[["candidate", "as_of", "decision"]],
        rollbacks=state.rollbacks,
        cache=job["cache"],
    )
    report["setting"] = setting
    report["exact"] = not state.gaps
    # a version this setting needed in a week it had not logged
    report["unlogged"] = [{"version": v, "week": d.isoformat()} for v, d in sorted(state.gaps)]
    return report
