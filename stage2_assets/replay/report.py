"""The replay report as HTML: no timestamps, no version names, so it is reproducible bit for bit."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import pandas as pd

from stage2_assets.reporting.dashboard import _CSS, _svg, _table

LABELS = {
    "adaptive": "adaptive (shadow + tests)",
    "frozen": "frozen first model",
    "always_promote": "retrained, always promoted",
}


def _marks(ax, report: dict, regime_changes: list[dict]) -> None:
    for change in regime_changes:
        ax.axvline(pd.Timestamp(change["change"]), color="#c62828", ls=":", lw=1)
    for move in report.get("production_timeline", []):
        ax.axvline(pd.Timestamp(move["after"]), color="#2e7d32", ls="-", lw=0.6, alpha=0.5)


def _weekly_chart(report: dict, regime_changes: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for arm, figures in report["arms"].items():
        series = pd.Series(figures["weekly_accuracy"])
        series.index = pd.to_datetime(series.index)
        ax.plot(series.index, series.rolling(4, min_periods=1).mean(), label=LABELS[arm])
    _marks(ax, report, regime_changes)
    ax.axhline(0.5, color="#9fb3c8", ls="--", lw=1)
    ax.set_ylabel("accuracy (4-week mean)")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return _svg(fig)


def _cumulative_chart(report: dict, regime_changes: list[dict]) -> str:
    cumulative = report["cumulative"]
    dates = pd.to_datetime(cumulative["dates"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True)
    for arm in report["arms"]:
        top.plot(dates, cumulative[arm]["accuracy"], label=LABELS[arm])
        bottom.plot(dates, cumulative[arm]["return"], label=LABELS[arm])
    up = report.get("baselines", {}).get("always_up", {}).get("accuracy")
    if up is not None:
        top.axhline(up, color="#6b7b8c", ls="--", lw=1, label="always up (whole replay)")
    for ax in (top, bottom):
        _marks(ax, report, regime_changes)
    top.set_ylabel("accuracy so far")
    bottom.set_ylabel("book return so far")
    bottom.axhline(0.0, color="#9fb3c8", ls="--", lw=1)
    top.legend(fontsize=7)
    fig.autofmt_xdate()
    return _svg(fig)


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _ci(ci, digits: int = 4) -> str:
    return "" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def differences_table(report: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "pair": pair,
                "metric": metric,
                "estimate": _fmt(f["estimate"], 5),
                "95% CI": _ci(f["ci"], 5),
                "reading": f["verdict"],
            }
            for pair, metrics in report.get("differences", {}).items()
            for metric, f in metrics.items()
        ]
    )


def _production_story(timeline: list[dict]) -> str:
    """When production began and how often it moved after that."""
    if not timeline:
        return "; no model reached production (the bootstrap rule refused every candidate)"
    moves = len(timeline) - 1
    return (
        f"; first production from {timeline[0]['after']}, then moved {moves} "
        f"time{'s' if moves != 1 else ''}"
    )


def summary_lines(report: dict) -> list[str]:
    """One line per arm and one for the decisions: what a replay prints when it ends."""
    lines = []
    for arm, f in report.get("arms", {}).items():
        lines.append(
            f"{arm:<15} accuracy {f['accuracy']:.4f} {_ci(f['ci']['accuracy'])}  "
            f"confidence {f['mean_confidence']:.4f}  ECE {f['ece']:.4f}  "
            f"Sharpe {_fmt(f['sharpe'], 2)} {_ci(f['ci']['sharpe'], 2)}  max drawdown {f['max_drawdown']:.3f}  "
            f"IC {_fmt(f.get('ic'))}  rank IC {_fmt(f.get('rank_ic'))}  ICIR {_fmt(f.get('icir'), 3)}"
        )
    base = report.get("baselines")
    if base:
        lines.append(
            f"{'always up':<15} accuracy {base['always_up']['accuracy']:.4f}  Brier "
            f"{base['always_up']['brier']:.4f};  climatology ({base['climatology']['rate']:.3f} up) "
            f"accuracy {base['climatology']['accuracy']:.4f}  Brier {base['climatology']['brier']:.4f}"
        )
    for pair in ("adaptive - frozen", "adaptive - always_promote", "adaptive - always_up"):
        figures = report.get("differences", {}).get(pair)
        if figures:
            parts = [
                f"{m} {f['estimate']:+.4f} {_ci(f['ci']) or '(too few days for an interval)'} {f['verdict']}"
                for m, f in figures.items()
                if f["estimate"] is not None
            ]
            lines.append(f"{pair:<26} " + "; ".join(parts))
    lines.append(
        "decisions: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["decisions"].items())
        + _production_story(report.get("production_timeline", []))
    )
    for change in report.get("regime_changes", []):
        weeks = change.get("weeks_to_promotion")
        lines.append(
            f"regime change {change['change']}: "
            + (
                f"a fitted model served after {weeks} week{'s' if weeks != 1 else ''} "
                f"(promoted {change['first_promotion_after']}, cut-off {change['model_cutoff']})"
                if weeks is not None
                else "no fitted model served by the end of the replay"
            )
        )
    return lines


def sweep_lines(report: dict) -> list[str]:
    """One line per swept setting: its decisions, weeks to adapt, and the adaptive arm against
    the others (paired intervals), under the line of the replay as it ran."""
    check = report["sweep_check"]
    lines = [
        "the replay's own settings, re-decided from the logs: "
        + (
            "every recorded decision and pointer move reproduced"
            if check["decisions_reproduced"] and check["moves_reproduced"]
            else "the recorded decisions were NOT reproduced (the figures below are suspect)"
        )
    ]
    for row in [{"setting": "as replayed (the config's settings)", **report}, *report["sweep"]]:
        setting = row["setting"]
        name = (
            setting
            if isinstance(setting, str)
            else ", ".join(f"{k}={v}" for k, v in setting.items())
        )
        d = row["decisions"]
        adapt = "/".join(
            "-" if c["weeks_to_promotion"] is None else str(c["weeks_to_promotion"])
            for c in row.get("regime_changes", [])
        )
        arms = row.get("arms", {})
        parts = [
            f"{name}:",
            f"promote {d['promote']} reject {d['reject']} keep {d['keep']} rollback {d['rollback']}",
            f"production moves {len(row['production_timeline'])}",
        ]
        if adapt:
            parts.append(f"weeks to adapt {adapt}")
        if "adaptive" in arms:
            parts.append(
                f"adaptive accuracy {arms['adaptive']['accuracy']:.4f} {_ci(arms['adaptive']['ci']['accuracy'])}"
            )
        for pair in ("adaptive - always_promote", "adaptive - frozen"):
            f = row.get("differences", {}).get(pair, {}).get("accuracy")
            if f and f["estimate"] is not None:
                parts.append(f"{pair} {f['estimate']:+.4f} {_ci(f['ci'])} {f['verdict']}")
        if row.get("exact") is False:
            parts.append(f"APPROXIMATE: {len(row['unlogged'])} version-weeks not logged")
        lines.append("  ".join(parts))
    return lines


def replay_title(report: dict) -> str:
    return f"stage2 replay {report['period']['from']} .. {report['period']['to']}"


def render_replay(report: dict, title: str) -> str:
    arms = report.get("arms", {})
    columns = (
        "accuracy",
        "log_loss",
        "brier_skill",
        "ece",
        "ic",
        "rank_ic",
        "icir",
        "sharpe",
        "max_drawdown",
        "turnover",
        "beta",
    )
    base = report.get("baselines", {})
    summary = pd.DataFrame(
        [
            {
                "arm": LABELS[a],
                **{k: f.get(k) for k in columns},
                "accuracy 95% CI": _ci(f["ci"]["accuracy"]),
                "Sharpe 95% CI": _ci(f["ci"]["sharpe"], 2),
            }
            for a, f in arms.items()
        ]
        + [
            {"arm": name, **{k: b.get(k) for k in ("accuracy", "log_loss", "brier_skill")}}
            for name, b in (
                ("always up (baseline)", base.get("always_up")),
                ("climatology (baseline)", base.get("climatology")),
            )
            if b
        ]
    )
    summary = summary.astype(object).where(summary.notna(), "")
    quarters = pd.DataFrame(
        [
            {
                "quarter": q,
                **{f"{a} accuracy": arms[a]["by_quarter"][q]["accuracy"] for a in arms},
                **{f"{a} rank IC": arms[a]["by_quarter"][q].get("rank_ic") for a in arms},
                **{f"{a} Sharpe": arms[a]["by_quarter"][q].get("sharpe") for a in arms},
            }
            for q in (next(iter(arms.values()))["by_quarter"] if arms else {})
        ]
    )
    long_term = pd.DataFrame(
        [{"arm": LABELS[a], **v} for a, v in report.get("long_term", {}).items()]
    )
    changes = report.get("regime_changes", [])
    decisions = pd.DataFrame([report["decisions"]])
    failed = pd.DataFrame(report["weeks_failed"])
    chart = _weekly_chart(report, changes) if arms else '<p class="none">no scored rows</p>'
    cumulative = (
        _cumulative_chart(report, changes)
        if report.get("cumulative")
        else '<p class="none">no scored rows</p>'
    )
    differences = differences_table(report)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>
<p class="meta">{report["weeks"]} weeks, {report["period"]["from"]} .. {report["period"]["to"]}; every arm scored on the same
{report["rows"]} (symbol, day) rows, from the predictions each logged (rows left out for want of a logged
prediction, per arm: {html.escape(", ".join(f"{arm} {n}" for arm, n in report.get("unlogged_rows", {}).items()) or "none")}). Intervals: bootstrap of 5-day blocks, 95%;
none under 20 days.</p>
<h2>Arms over the whole replay</h2>{_table(summary)}
<p class="meta">Every arm is scored from the predictions it logged. The book: long the top and short the bottom
fraction of symbols by P(up), dollar-neutral, costs on turnover; Sharpe annualized for the label horizon;
beta to the equal-weight market. IC and rank IC: per day across symbols, their mean; ICIR = mean / std.</p>
<h2>Paired differences (same rows, 5-day block bootstrap, 95%)</h2>{_table(differences)}
<p class="meta">"ahead" or "behind" only where the interval of the difference excludes 0; log loss: lower is better.</p>
<h2>Over time</h2><div class="chart">{cumulative}</div>
<p class="meta">Red dotted: regime changes. Green: production moves (promotions, rollbacks).</p>
<div class="chart">{chart}</div>
<h2>By quarter</h2>{_table(quarters)}
<h2>Long-term: static vs adaptive</h2>{_table(long_term)}
<p class="meta">Accuracy retention = last quarter's accuracy / first quarter's.</p>
<h2>Decisions</h2>{_table(decisions)}
<h2>Regime changes</h2>{_table(pd.json_normalize(changes))}
<p class="meta">weeks_to_promotion: to the first promotion of a model fitted to the new regime (at least half of
its training window after the change). accuracy_in_regime: from the change to the next one;
accuracy_after_promotion: from that promotion to the next change.</p>
<h2>Weeks that failed (production kept)</h2>{_table(failed)}
</body></html>"""
