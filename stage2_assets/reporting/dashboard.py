"""The operator's dashboard: one self-contained HTML page (inline SVG charts, no external files).

Sections: accuracy and calibration over time per version, the production model's reliability
diagram, the production timeline (promotions and rollbacks), the latest shadow comparison, data
quality per symbol, and the refresh history.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from stage2_assets.resources.model_store import POINTER_MOVES, ModelStore  # noqa: E402
from stage2_assets.resources.warehouse import Warehouse, has_table  # noqa: E402

# A fixed hash salt and no creation date keep the SVG output identical run after run.
plt.rcParams.update(
    {
        "svg.fonttype": "none",
        "svg.hashsalt": "stage2",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)

_CSS = """
.blocked{color:#c62828;font-weight:600} .warn{color:#9a3412}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1f2933}
h1{font-size:22px;margin-bottom:2px} h2{font-size:16px;margin-top:28px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
.meta{color:#627d98;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #d9e2ec;padding:4px 8px;text-align:left} th{background:#f0f4f8}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px} .chart svg{max-width:100%;height:auto}
.promote{color:#0b7a3e;font-weight:600} .keep{color:#9a6700;font-weight:600} .none{color:#627d98}
"""


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


_BLOCKED_CELL = '<td class="blocked">blocked</td>'
_BLOCKED_COLOR = "#c62828"


def _table(frame: pd.DataFrame, limit: int = 40) -> str:
    if frame.empty:
        return '<p class="none">none</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>"
        + "".join(
            (_BLOCKED_CELL if v == "blocked" else f"<td>{html.escape(_fmt(v))}</td>") for v in row
        )
        + "</tr>"
        for row in frame.head(limit).itertuples(index=False)
    )
    more = f'<p class="meta">… {len(frame) - limit} more</p>' if len(frame) > limit else ""
    return f"<table><tr>{head}</tr>{rows}</table>{more}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _performance_chart(perf: pd.DataFrame) -> str:
    if perf.empty:
        return '<p class="none">no live performance yet: predictions need outcomes first</p>'
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for version, rows in perf.groupby("model_version"):
        rows = rows.sort_values("as_of")
        top.plot(rows["as_of"], rows["accuracy"], marker="o", ms=3, label=version)
        bottom.plot(rows["as_of"], rows["ece"], marker="o", ms=3, label=version)
    if "always_up_accuracy" in perf and perf["always_up_accuracy"].notna().any():
        always = perf.groupby("as_of")["always_up_accuracy"].first().sort_index()
        top.plot(always.index, always, color="#9fb3c8", lw=1.2, ls="--", label="always up")
    else:
        top.axhline(0.5, color="#9fb3c8", lw=1, ls="--")
    top.set_ylabel("accuracy")
    bottom.set_ylabel("ECE (lower is better)")
    # beside the axes, not in them: "best" still covers a line when the lines fill the plot
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.autofmt_xdate()
    return _svg(fig)


def _reliability_chart(perf: pd.DataFrame) -> str:
    production = perf[perf["role"] == "production"].sort_values("as_of")
    if production.empty:
        return '<p class="none">no production performance yet</p>'
    last = production.iloc[-1]
    table = pd.DataFrame(json.loads(last["reliability"]))
    if "mean_prob_up" not in table:  # a row stored before equal-mass bins of P(up)
        return '<p class="none">the latest reliability table predates bins of P(up)</p>'
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], color="#9fb3c8", ls="--", label="perfect calibration")
    ax.plot(table["mean_prob_up"], table["share_up"], marker="o", label=last["model_version"])
    for row in table.itertuples():
        ax.annotate(
            str(row.rows),
            (row.mean_prob_up, row.share_up),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    low = min(table["mean_prob_up"].min(), table["share_up"].min()) - 0.05
    high = max(table["mean_prob_up"].max(), table["share_up"].max()) + 0.05
    ax.set_xlabel("mean P(up) of the bin (equal-mass bins)")
    ax.set_ylabel("share of up days")
    ax.set_xlim(max(low, 0), min(high, 1))
    ax.set_ylim(max(low, 0), min(high, 1))
    # below the x label, so no bin, row count or the diagonal is covered
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_title(f"reliability, {str(last['as_of'])[:10]} (labels: rows)", fontsize=9)
    return _svg(fig)


def _timeline_chart(events: list[dict]) -> str:
    moves = [e for e in events if e["event"] in POINTER_MOVES]
    if not moves:
        return '<p class="none">production has not moved yet</p>'
    versions = sorted({e["version"] for e in moves})
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.35 * len(versions)))
    colors = {"promoted": "#0b7a3e", "rolled_back": "#c62828", "manual_promote": "#6b46c1"}
    for event in moves:
        at = pd.Timestamp(event.get("as_of") or event["at"])
        ax.scatter([at], [versions.index(event["version"])], color=colors[event["event"]], zorder=3)
    ax.step(
        [pd.Timestamp(e.get("as_of") or e["at"]) for e in moves],
        [versions.index(e["version"]) for e in moves],
        where="post",
        color="#486581",
        lw=1,
    )
    ax.set_yticks(range(len(versions)), versions)
    for name, color in colors.items():
        ax.scatter([], [], color=color, label=name.replace("_", " "))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.autofmt_xdate()
    fig.subplots_adjust(right=0.78)
    return _svg(fig)


def _refresh_chart(history: pd.DataFrame) -> str:
    if history.empty:
        return '<p class="none">no refresh yet</p>'
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = list(range(len(history)))
    blocked = (history["gate"] == "blocked").to_numpy()
    # side by side, each from zero: on a log axis a stacked segment's height would not read its count
    ax.bar([i - 0.2 for i in x], history["new"], width=0.4, label="new bars", color="#2f80ed")
    ax.bar([i + 0.2 for i in x], history["revised"], width=0.4, label="revised", color="#f2994a")
    top = max(float(history[["new", "revised"]].max().max()), 1.0)
    for i in [i for i, b in enumerate(blocked) if b]:
        ax.axvspan(i - 0.45, i + 0.45, color=_BLOCKED_COLOR, alpha=0.15, lw=0)
    ax.set_xticks(x, [str(d)[:10] for d in history["as_of"]], rotation=45, ha="right")
    ax.set_ylabel("bars written (log scale)")
    ax.set_yscale("symlog")
    ax.set_ylim(0, top * 4)
    # whole bars as plain numbers (1, 10, 1,000), not 10^k
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    twin = ax.twinx()
    twin.plot(x, history["failed"], color="#c62828", marker="x", label="failed symbols")
    twin.set_ylabel("failed symbols")
    # whole symbols only, from zero: no ±0.04 ticks on a week without failures
    twin.set_ylim(0, max(int(history["failed"].max()), 1) + 1)
    twin.yaxis.set_major_locator(MaxNLocator(integer=True))
    # the swatch of a band is a patch of the band's own colour (an empty bar draws the default blue)
    blocked_swatch = Patch(color=_BLOCKED_COLOR, alpha=0.15, lw=0)
    handles = [*ax.get_legend_handles_labels()[0], blocked_swatch]
    handles += twin.get_legend_handles_labels()[0]
    labels = [*ax.get_legend_handles_labels()[1], "gate blocked"]
    labels += twin.get_legend_handles_labels()[1]
    # below the axes, so no bar or line is covered
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=4, frameon=False)
    fig.subplots_adjust(bottom=0.38)
    return _svg(fig)


def gather(warehouse: Warehouse, store: ModelStore) -> dict:
    with warehouse.connect(read_only=True) as conn:
        # the gate's outcome per refresh run (a store from before gate notes: unknown)
        gate = (
            "coalesce((SELECT max(subject) FROM refresh_notes n WHERE n.run_id = runs.run_id "
            "AND n.kind = 'gate'), 'not recorded')"
            if has_table(conn, "refresh_notes")
            else "'not recorded'"
        )
        frames = {
            "performance": conn.execute("SELECT * FROM model_performance ORDER BY as_of").df(),
            "comparison": conn.execute(
                "SELECT * FROM shadow_comparisons ORDER BY decided_at DESC LIMIT 5"
            ).df(),
            "quarantine": conn.execute(
                "SELECT symbol, reasons, since FROM quarantine ORDER BY symbol"
            ).df(),
            "flags": conn.execute(
                """SELECT symbol, warnings, checked_at FROM quality_log WHERE warnings <> '[]'
                   QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY checked_at DESC) = 1 ORDER BY symbol"""
            ).df(),
            "refresh": conn.execute(
                f"""WITH runs AS (
                       SELECT run_id, CAST(max(as_of) AS VARCHAR) AS as_of, CAST(sum(fetched) AS BIGINT) AS fetched,
                              CAST(sum(new) AS BIGINT) AS new, CAST(sum(revised) AS BIGINT) AS revised,
                              count(error) AS failed, min(logged_at) AS logged_at
                       FROM refresh_log GROUP BY run_id)
                   SELECT runs.*, {gate} AS gate FROM runs
                   ORDER BY logged_at DESC LIMIT 30"""
            )
            .df()
            .iloc[::-1]
            .reset_index(drop=True),
            "tables": {
                t: conn.execute(
                    f"SELECT count(*), count(DISTINCT symbol), max(date) FROM {t}"
                ).fetchall()[0]
                for t in ("raw_bars", "validated_bars", "features")
            },
        }
    frames["events"] = store.events()
    frames["production"] = store.production()
    frames["pending"] = store.pending_approvals()
    return frames


def _pointer_note(data: dict) -> str:
    """Why production is where it is: the last weekly decision that left it, and any candidate
    waiting for approval."""
    parts = []
    moves = [e for e in data["events"] if e["event"] in POINTER_MOVES]
    kept = [e for e in data["events"] if e["event"] == "pointer_unchanged"]
    if kept and (not moves or kept[-1]["at"] >= moves[-1]["at"]):
        last = kept[-1]
        parts.append(
            f"<p>Production has not moved since the weekly decision of {html.escape(str(last.get('as_of')))}: "
            f"{html.escape(last['reason'])}</p>"
        )
    for event in data.get("pending", []):
        parts.append(
            f'<p class="warn">Waiting for approval: <b>{html.escape(event["version"])}</b> '
            f"({html.escape(event['reason'])}); <code>stage2 approve {html.escape(event['version'])}</code> "
            f"or <code>stage2 reject {html.escape(event['version'])}</code></p>"
        )
    return "".join(parts)


def render(data: dict, title: str = "stage2 dashboard") -> str:
    comparison = data["comparison"]
    latest = ""
    if not comparison.empty:
        c = comparison.iloc[0]
        latest = (
            f"<p>Candidate <b>{html.escape(c['candidate'])}</b> vs production <b>{html.escape(str(c['production']))}</b> "
            f"on {int(c['rows'])} paired rows over {int(c['days'])} days ({str(c['period_start'])[:10]} .. {str(c['period_end'])[:10]}): "
            f'decision <span class="{str(c["decision"]).split()[0]}">{html.escape(c["decision"])}</span>. {html.escape(c["reason"])}</p>'
            + _table(
                pd.DataFrame(
                    [
                        {
                            "candidate accuracy": c["candidate_accuracy"],
                            "production accuracy": c["production_accuracy"],
                            "difference": c["accuracy_diff"],
                            "95% CI": f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}]",
                            "McNemar p": c["p_mcnemar"],
                            "paired log-loss p": c["p_paired"],
                        }
                    ]
                )
            )
        )
    quarantine = data["quarantine"].assign(
        reasons=lambda f: f["reasons"].map(lambda r: "; ".join(json.loads(r)))
    )
    flags = data["flags"].assign(
        warnings=lambda f: f["warnings"].map(lambda r: "; ".join(json.loads(r)))
    )
    tables = pd.DataFrame(
        [
            {"table": t, "rows": v[0], "symbols": v[1], "last date": v[2]}
            for t, v in data["tables"].items()
        ]
    )
    moves = pd.DataFrame(
        [
            {
                "at": e["at"],
                "event": e["event"],
                "version": e["version"],
                "previous": e.get("previous"),
                "reason": e["reason"],
            }
            for e in data["events"]
            if e["event"] in POINTER_MOVES
        ]
    )
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1><p class="meta">generated {generated} · production: <b>{html.escape(str(data["production"] or "none"))}</b></p>
{_table(tables)}
<h2>Accuracy and calibration over time, per version</h2><div class="chart">{_performance_chart(data["performance"])}</div>
<div class="grid"><div><h2>Reliability of production</h2><div class="chart">{_reliability_chart(data["performance"])}</div></div>
<div><h2>Latest shadow comparison</h2>{latest or '<p class="none">no comparison yet</p>'}</div></div>
<h2>Production timeline</h2>{_pointer_note(data)}<div class="chart">{_timeline_chart(data["events"])}</div>{_table(moves)}
<h2>Data quality per symbol</h2><h3>Quarantined</h3>{_table(quarantine)}<h3>Flagged (let through)</h3>{_table(flags)}
<h2>Refresh history</h2><div class="chart">{_refresh_chart(data["refresh"])}</div>
{_table(data["refresh"][["as_of", "fetched", "new", "revised", "failed", "gate"]].iloc[::-1])}
</body></html>"""
