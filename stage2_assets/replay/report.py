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


def _weekly_chart(report: dict, regime_changes: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for arm, figures in report["arms"].items():
        series = pd.Series(figures["weekly_accuracy"])
        series.index = pd.to_datetime(series.index)
        ax.plot(series.index, series.rolling(4, min_periods=1).mean(), label=LABELS[arm])
    for change in regime_changes:
        ax.axvline(pd.Timestamp(change["change"]), color="#c62828", ls=":", lw=1)
    ax.axhline(0.5, color="#9fb3c8", ls="--", lw=1)
    ax.set_ylabel("accuracy (4-week mean)")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return _svg(fig)


def summary_lines(report: dict) -> list[str]:
    """One line per arm and one for the decisions: what a replay prints when it ends."""
    lines = []
    for arm, f in report.get("arms", {}).items():
        acc, sharpe = f["ci"]["accuracy"], f["ci"]["sharpe"]
        lines.append(
            f"{arm:<15} accuracy {f['accuracy']:.4f} [{acc[0]:.4f}, {acc[1]:.4f}]  "
            f"confidence {f['mean_confidence']:.4f}  ECE {f['ece']:.4f}  "
            f"Sharpe {f['sharpe']:.2f} [{sharpe[0]:.2f}, {sharpe[1]:.2f}]  max drawdown {f['max_drawdown']:.3f}"
        )
    base = report.get("baselines")
    if base:
        lines.append(
            f"{'always up':<15} accuracy {base['always_up']['accuracy']:.4f}  Brier "
            f"{base['always_up']['brier']:.4f};  climatology ({base['climatology']['rate']:.3f} up) "
            f"accuracy {base['climatology']['accuracy']:.4f}  Brier {base['climatology']['brier']:.4f}"
        )
    lines.append(f"decisions: {report['decisions']}")
    return lines


def replay_title(report: dict) -> str:
    return f"stage2 replay {report['period']['from']} .. {report['period']['to']}"


def render_replay(report: dict, title: str) -> str:
    arms = report.get("arms", {})
    summary = pd.DataFrame(
        [
            {
                "arm": LABELS[a],
                **{
                    k: f[k]
                    for k in (
                        "accuracy",
                        "balanced_accuracy",
                        "mean_confidence",
                        "ece",
                        "sharpe",
                        "max_drawdown",
                    )
                },
                "accuracy 95% CI": f"[{f['ci']['accuracy'][0]:.4f}, {f['ci']['accuracy'][1]:.4f}]",
                "Sharpe 95% CI": f"[{f['ci']['sharpe'][0]:.2f}, {f['ci']['sharpe'][1]:.2f}]",
            }
            for a, f in arms.items()
        ]
        + [
            {"arm": name, "accuracy": b["accuracy"], "brier": b["brier"]}
            for name, b in (
                ("always up (baseline)", report.get("baselines", {}).get("always_up")),
                ("climatology (baseline)", report.get("baselines", {}).get("climatology")),
            )
            if b
        ]
    )
    quarters = pd.DataFrame(
        [
            {"quarter": q, **{LABELS[a]: arms[a]["by_quarter"][q]["accuracy"] for a in arms}}
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
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>
<p class="meta">{report["weeks"]} weeks, {report["period"]["from"]} .. {report["period"]["to"]}; every arm scored on the same
{report["rows"]} (symbol, day) rows. Intervals: day-block bootstrap, 95%.</p>
<h2>Arms over the whole replay</h2>{_table(summary)}
<h2>Accuracy over time</h2><div class="chart">{chart}</div>
<h2>By quarter (accuracy)</h2>{_table(quarters)}
<h2>Long-term: static vs adaptive</h2>{_table(long_term)}
<p class="meta">Accuracy retention = last quarter's accuracy / first quarter's.</p>
<h2>Decisions</h2>{_table(decisions)}
<h2>Regime changes</h2>{_table(pd.json_normalize(changes))}
<p class="meta">weeks_to_promotion: to the first promotion of a model fitted to the new regime (at least half of
its training window after the change). accuracy_in_regime: from the change to the next one;
accuracy_after_promotion: from that promotion to the next change.</p>
<h2>Weeks that failed (production kept)</h2>{_table(failed)}
</body></html>"""
