"""The Dagster UI and the dashboard in a real browser: dagster-webserver on loopback over a
temporary instance, and the dashboard's HTML page, driven by headless Chromium (Debian's chromium
package) through Playwright."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from stage2_assets_tests.alert_servers import free_port
from stage2_assets_tests.conftest import SMALL_SIM

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# As the probe found: without the background-networking flags Chromium tries to phone home.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GROUPS = {
    "market_data": ["raw_bars", "validated_bars"],
    "features": ["features"],
    "training": ["ensemble_vN"],
    "shadow": ["predictions", "shadow_comparison"],
    "monitoring": ["model_performance"],
    "deployment": ["production_pointer"],
}


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is a dev dependency: pip install -e '.[dev]'"
    )


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    _require_browser()
    folder = tmp_path_factory.mktemp("ui")
    (folder / "adaptation.yaml").write_text(yaml.safe_dump(SMALL_SIM))
    home = folder / "dagster_home"
    home.mkdir()
    # No daemon here: launch runs at once instead of queueing them (`dagster dev` runs the daemon).
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "STAGE2_CONFIG": str(folder / "adaptation.yaml"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "GX_ANALYTICS_ENABLED": "False",
    }
    root = Path(__file__).resolve().parent.parent
    log = (folder / "webserver.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(root / "workspace.yaml"),
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/server_info", timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(
            f"dagster-webserver did not answer within 90 s: {(folder / 'webserver.log').read_text()[-2000:]}"
        )
    yield base, folder
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(webserver, browser):
    page = browser.new_page(viewport={"width": 1800, "height": 1000})
    yield page
    page.close()


def _materialize(
    base: str, asset: str, partition: str, as_of: str | None = None
) -> tuple[str, str]:
    """Launch one asset's partition as the UI does (GraphQL ``launchRun``); wait for the run's end."""
    tags = [{"key": "dagster/partition", "value": partition}]
    if as_of:
        tags.append({"key": "stage2/as_of", "value": as_of})
    launched = _graphql(
        base,
        """
        mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
          __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        {
            "params": {
                "selector": {
                    "repositoryLocationName": "stage2",
                    "repositoryName": "__repository__",
                    "jobName": "refresh_market_data",
                    "assetSelection": [{"path": [asset]}],
                },
                "executionMetadata": {"tags": tags},
            }
        },
    )
    assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["launchRun"]["run"]["runId"]
    deadline = time.monotonic() + 180
    status = None
    while time.monotonic() < deadline:
        status = _graphql(
            base,
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]["status"]
        # a run still queued after 30 s will not start: no daemon here dequeues it
        if status in ("SUCCESS", "FAILURE", "CANCELED") or (
            status == "QUEUED" and time.monotonic() > deadline - 150
        ):
            break
        time.sleep(1)
    return run_id, status


def _skip_community_dialog(page) -> None:
    """Dagster's first-visit community dialog covers the page until skipped."""
    if page.get_by_role("button", name="Skip").count():
        page.get_by_role("button", name="Skip").click()


def _wait_for_text(page, text: str) -> None:
    """Poll until the page's text holds ``text`` (what the test then asserts on; a long name may
    show truncated, its whole text in a hidden measuring element): a page that never shows it
    fails here, after 30 s."""
    page.wait_for_function("(t) => document.body.innerText.includes(t)", arg=text, timeout=30_000)


def _visible(page, text: str) -> int:
    loc = page.get_by_text(text, exact=True)
    return sum(loc.nth(i).is_visible() for i in range(loc.count()))


def test_lineage_page_shows_every_asset_in_its_group(webserver, page):
    base, _ = webserver
    page.goto(f"{base}/asset-groups")
    page.wait_for_timeout(4000)
    _skip_community_dialog(page)
    for _ in range(3):  # expand each collapsed group (expanding moves the others)
        for group, assets in GROUPS.items():
            if _visible(page, assets[-1]) >= (3 if assets[-1] == group else 1):
                continue
            header = page.get_by_text(group, exact=True)
            header.nth([i for i in range(header.count()) if header.nth(i).is_visible()][-1]).click()
            page.wait_for_timeout(800)
    page.get_by_role("button", name="Hide navigation").click()
    page.reload()  # expanded groups persist, and a fresh load fits the whole graph in view
    page.wait_for_timeout(5000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-lineage.png"))
    for group, assets in GROUPS.items():
        assert _visible(page, group) >= 1, f"group {group} not shown"
        for asset in assets:
            assert _visible(page, asset) >= 1, f"asset {asset} not shown in the lineage graph"


@pytest.mark.parametrize(
    ("asset", "check"),
    [
        ("raw_bars", "raw_bars_quality_gate"),
        ("model_performance", "model_performance_production_not_degraded"),
    ],
)
def test_asset_pages_show_their_checks(webserver, page, asset, check):
    base, _ = webserver
    page.goto(f"{base}/assets/{asset}?view=checks")
    _wait_for_text(page, check)
    assert check in page.inner_text("body")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/assets/raw_bars", "Daily OHLCV bars per symbol as the source gave them"),
        ("/assets/production_pointer", "The version production serves"),
        (
            "/assets/raw_bars?view=checks",
            "Great Expectations suite over the bars this refresh changed",
        ),
    ],
)
def test_asset_and_check_descriptions_are_shown(webserver, page, url, words):
    base, _ = webserver
    page.goto(f"{base}{url}")
    # the first page of a fresh webserver can take a while: wait for the words, then assert
    _wait_for_text(page, words)
    assert words in page.inner_text("body")


def test_automation_page_lists_schedules_and_sensors(webserver, page):
    base, _ = webserver
    page.goto(f"{base}/automation")
    _wait_for_text(page, "weekly_refresh_schedule")
    text = page.inner_text("body")
    for name in (
        "weekly_refresh_schedule",
        "weekly_retraining_schedule",
        "daily_predictions_schedule",
        "weekly_decision_schedule",
        "degradation_sensor",
        "data_quality_sensor",
        "pointer_events_sensor",
        "run_failure_sensor",
    ):
        assert name in text, name
    page.screenshot(path=str(ARTIFACTS / "ui-automation.png"))


def test_rematerializing_one_asset_from_the_ui_api_runs(webserver):
    base, folder = webserver
    run_id, status = _materialize(base, "raw_bars", "2025-06-22", as_of="2025-06-27")
    assert status == "SUCCESS"
    nodes = _graphql(
        base, """{ assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId } } }"""
    )["assetNodes"]
    materialized = {n["assetKey"]["path"][0]: n["assetMaterializations"] for n in nodes}
    assert materialized["raw_bars"][0]["runId"] == run_id
    assert materialized["validated_bars"] == []  # only the chosen asset ran
    import duckdb

    with duckdb.connect(str(folder / "data" / "stage2.duckdb"), read_only=True) as conn:
        assert (
            conn.execute("SELECT count(DISTINCT symbol), max(date) FROM raw_bars").fetchall()[0][0]
            == 6
        )


# What a node of the lineage says about itself: its text, and the background of its status row
# (the row that counts partitions), found from the asset's name up to the node's box.
_NODE_JS = """(name) => {
  const named = [...document.querySelectorAll('*')].find(
    (e) => e.children.length === 0 && e.textContent.trim() === name && e.offsetParent !== null);
  let node = named;
  const isCount = (e) => /^\\d+ partitions$/.test(e.textContent.trim()) && e.children.length === 0;
  while (node && ![...node.querySelectorAll('*')].some(isCount)) node = node.parentElement;
  if (!node) return null;  // not drawn yet, or its partition count not arrived: wait_for_function polls
  let row = [...node.querySelectorAll('*')].find(isCount);
  while (row !== node && getComputedStyle(row).backgroundColor === 'rgba(0, 0, 0, 0)') row = row.parentElement;
  return {text: node.innerText, statusBackground: getComputedStyle(row).backgroundColor};
}"""


def _reddish(css_color: str) -> bool:
    red, green, blue = (float(v) for v in css_color[css_color.index("(") + 1 : -1].split(",")[:3])
    return red > 1.5 * green and red > 1.5 * blue


def test_lineage_colours_a_weekly_asset_by_every_week_not_by_the_latest(webserver, page):
    """What Dagster 1.13 (open source) shows when the latest week succeeded and a rerun of an old
    week then failed: the asset's node turns red ("(1 failed)", and the gate's check counts as not
    passed, since it never ran in the failed run) and names no week, the same as if the latest
    week had failed. The latest week's state is one click away, on the asset's Partitions tab
    (Dagster's "Latest" button), and the failed week under the Failed filter. Asset health, which
    would weigh partitions, is a Dagster+ feature; the open-source node counts every partition."""
    base, _ = webserver
    keys = _graphql(
        base,
        '{ assetNodes(assetKeys: [{path: ["raw_bars"]}]) { partitionKeysByDimension { partitionKeys } } }',
    )["assetNodes"][0]["partitionKeysByDimension"][0]["partitionKeys"]
    latest, old = keys[-1], "2025-06-22"
    assert _materialize(base, "raw_bars", old, as_of="2025-06-27")[1] == "SUCCESS"
    assert _materialize(base, "raw_bars", latest)[1] == "SUCCESS"
    # the old week's rerun fails: its as-of tag lies outside the week, which the partition refuses
    assert _materialize(base, "raw_bars", old, as_of=latest)[1] == "FAILURE"

    page.goto(f"{base}/locations/stage2/asset-groups/market_data")
    page.get_by_text("validated_bars", exact=True).first.wait_for(timeout=30_000)
    _skip_community_dialog(page)
    # live data (partition counts, run status, checks) arrives after the graph, in any order and
    # on a slow machine seconds later: poll until raw_bars' node shows its failed run (a node that
    # never does fails here, on the timeout)
    page.wait_for_function(
        f"(name) => {{ const n = ({_NODE_JS})(name); return n && n.text.includes('failed') && n.text.includes('Passed'); }}",
        arg="raw_bars",
        timeout=60_000,
    )
    page.wait_for_function(f"(name) => ({_NODE_JS})(name)", arg="validated_bars", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "ui-lineage-old-week-failed.png"))
    node = page.evaluate(_NODE_JS, "raw_bars")
    untouched = page.evaluate(_NODE_JS, "validated_bars")
    assert _reddish(node["statusBackground"]), node  # red at a glance...
    assert not _reddish(untouched["statusBackground"]), untouched
    assert "(1 failed)" in node["text"] and "0 / 1 Passed" in node["text"], node["text"]
    assert latest not in node["text"] and old not in node["text"]  # ...naming no week

    page.goto(f"{base}/assets/raw_bars?view=partitions")
    page.get_by_role("button", name="Latest", exact=True).click()
    page.get_by_text("1 Partitions Selected").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "ui-partitions-latest-week.png"))
    text = page.inner_text("body")
    assert "Materialized (1)" in text and "Failed (0)" in text, text
    assert latest in text

    page.goto(f"{base}/assets/raw_bars?view=partitions&status=FAILED")
    page.get_by_text("Failed (1)").wait_for(timeout=30_000)
    listed = page.inner_text("body").split("Missing (")[-1]  # the list below the status filters
    assert old in listed and latest not in listed


BLOCKED_WEEKS = ("2025-05-02", "2025-05-30")


def _dashboard_data() -> dict:
    """Ten weeks of the loop as `dashboard.gather` returns them: three versions whose accuracy
    lines cross the whole plot, a promotion and a rollback, a refresh per week (two blocked by the
    gate, some with failed symbols), so that a legend placed inside any chart covers something."""
    import numpy as np
    import pandas as pd

    weeks = [d.date().isoformat() for d in pd.date_range("2025-04-04", periods=10, freq="7D")]
    bins = np.linspace(0.30, 0.70, 10)
    reliability = json.dumps(
        [
            {"bucket": f"{p:.2f}", "rows": 95, "mean_prob_up": p, "share_up": s}
            for p, s in zip(
                bins, [0.70, 0.31, 0.45, 0.40, 0.52, 0.47, 0.60, 0.55, 0.66, 0.30], strict=True
            )
        ]
    )
    performance = pd.DataFrame(
        [
            {
                "model_version": version,
                "role": "production" if version == "v1" else "shadow",
                "as_of": pd.Timestamp(week),
                "accuracy": start + (end - start) * i / 9,
                "ece": 0.02 + 0.12 * abs(np.sin(i + offset)),
                "always_up_accuracy": 0.52 + 0.03 * np.sin(i),
                "reliability": reliability,
            }
            for version, start, end, offset in (
                ("v1", 0.62, 0.44, 0.0),
                ("v2", 0.45, 0.61, 1.0),
                ("v3", 0.58, 0.47, 2.0),
            )
            for i, week in enumerate(weeks)
        ]
    )
    refresh = pd.DataFrame(
        [
            {
                "run_id": f"run-{i}",
                "as_of": week,
                "fetched": 12_500 if i == 0 else 260,
                "new": 12_500 if i == 0 else 250,
                "revised": 0 if i == 0 else 3 * (i % 3),
                "failed": [0, 0, 1, 0, 1, 0, 0, 1, 0, 0][i],
                "logged_at": pd.Timestamp(week),
                "gate": "blocked" if week in BLOCKED_WEEKS else "passed",
            }
            for i, week in enumerate(weeks)
        ]
    )
    events = [
        {
            "at": f"{weeks[i]}T18:00:00+00:00",
            "as_of": weeks[i],
            "event": event,
            "version": version,
            "previous": previous,
            "reason": reason,
        }
        for i, event, version, previous, reason in (
            (0, "promoted", "v1", None, "bootstrap"),
            (5, "promoted", "v2", "v1", "candidate is better"),
            (8, "rolled_back", "v1", "v2", "production degraded"),
        )
    ]
    return {
        "performance": performance,
        "comparison": pd.DataFrame(),
        "quarantine": pd.DataFrame(columns=["symbol", "reasons", "since"]),
        "flags": pd.DataFrame(columns=["symbol", "warnings", "checked_at"]),
        "refresh": refresh,
        "tables": {t: (7_500, 6, weeks[-1]) for t in ("raw_bars", "validated_bars", "features")},
        "events": events,
        "production": "v1",
        "pending": [],
    }


# Geometry of one matplotlib SVG chart as the browser lays it out (client pixels): per axes its
# plotting area, axis labels and tick labels, and what is plotted (marker and bar boxes, points
# along each line, annotations); per legend its box and entries with the fill of their swatch.
_CHART_JS = """(svg) => {
  const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const kids = (e, prefix) => [...e.children].filter((c) => (c.id || '').startsWith(prefix));
  const drawn = (e) => [...e.querySelectorAll('path, use')].filter((p) => !p.closest('defs'));
  const fill = (e) => { const p = drawn(e)[0]; return p ? getComputedStyle(p).fill : 'none'; };
  let host = null;
  const axes = [...svg.querySelectorAll('g[id^="axes_"]')].map((ax) => {
    // a twin's background is not drawn: it plots over its host's area
    const [first, ...rest] = kids(ax, 'patch_');
    const background = fill(first) !== 'none' ? first : null;
    const patches = background ? rest : [first, ...rest];
    const area = background ? box(background) : host;
    host = area;
    const within = (x, y) => x >= area[0] - 1 && x <= area[2] + 1 && y >= area[1] - 1 && y <= area[3] + 1;
    const points = [], rects = [];
    for (const line of [...kids(ax, 'line2d_'), ...kids(ax, 'PathCollection_')]) {
      for (const el of drawn(line)) {
        if (el.tagName === 'use') { rects.push({box: box(el), fill: fill(line)}); continue; }
        const ctm = el.getScreenCTM(), length = el.getTotalLength();
        for (let d = 0; d <= length; d += 2) {
          const p = el.getPointAtLength(d).matrixTransform(ctm);
          if (within(p.x, p.y)) points.push([p.x, p.y]);
        }
      }
    }
    for (const patch of patches) if (fill(patch) !== 'none') rects.push({box: box(patch), fill: fill(patch)});
    for (const note of kids(ax, 'text_')) {  // annotations inside the plotting area, not the title
      const b = box(note);
      if (within((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)) rects.push({box: b, fill: 'text'});
    }
    const axis = {};
    for (const a of kids(ax, 'matplotlib.axis_')) {
      const ticks = [...kids(a, 'xtick_'), ...kids(a, 'ytick_')];
      if (!ticks.length) continue;
      const label = kids(a, 'text_').pop();
      axis[ticks[0].id.startsWith('x') ? 'x' : 'y'] = {
        label: label ? label.textContent.trim() : '',
        ticks: ticks.filter((t) => t.querySelector('text')).map((t) => {
          const mark = box(t.querySelector('use')), text = t.querySelector('text');
          return {text: text.textContent.trim(), plain: text.children.length === 0, box: box(text),
                  at: [(mark[0] + mark[2]) / 2, (mark[1] + mark[3]) / 2]};
        }),
      };
    }
    return {area, points, rects, axis};
  });
  const legends = [...svg.querySelectorAll('g[id^="legend_"]')].map((legend) => ({
    box: box(legend),
    entries: [...legend.children].filter((c) => c.id.startsWith('text_')).map((t) => ({
      label: t.textContent.trim(), fill: fill(t.previousElementSibling)})),
  }));
  return {axes, legends};
}"""


def _overlap(a, b) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def _inside(point, box, margin: float = 0.5) -> bool:
    return (
        box[0] + margin < point[0] < box[2] - margin
        and box[1] + margin < point[1] < box[3] - margin
    )


@pytest.fixture(scope="module")
def dashboard(browser, tmp_path_factory):
    """The dashboard page open in the browser, with a full-page screenshot and every chart's geometry."""
    from stage2_assets.reporting.dashboard import render

    out = tmp_path_factory.mktemp("dashboard") / "dashboard.html"
    out.write_text(render(_dashboard_data()))
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(out.as_uri())
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    charts = [svg.evaluate(_CHART_JS) for svg in page.locator(".chart svg").all()]
    yield page, charts
    page.close()


def test_dashboard_shows_every_chart(dashboard):
    _, charts = dashboard
    assert len(charts) == 4  # performance, reliability, timeline, refresh
    assert all(chart["legends"] and chart["axes"] for chart in charts)


def test_dashboard_legends_cover_no_data_and_no_tick_label(dashboard):
    """No legend box holds a point of a line, or meets a marker, bar, band, annotation or tick label."""
    _, charts = dashboard
    for n, chart in enumerate(charts):
        for legend in chart["legends"]:
            labels = [e["label"] for e in legend["entries"]]
            for axes in chart["axes"]:
                covered = [p for p in axes["points"] if _inside(p, legend["box"])]
                assert not covered, f"chart {n}: legend {labels} covers line points {covered[:3]}"
                for rect in axes["rects"]:
                    assert _overlap(rect["box"], legend["box"]) < 1, (
                        f"chart {n}: legend {labels} covers a marker, bar or label at {rect}"
                    )
                for axis in axes["axis"].values():
                    for tick in axis["ticks"]:
                        assert _overlap(tick["box"], legend["box"]) < 1, (
                            f"chart {n}: legend {labels} covers tick label {tick['text']}"
                        )


def test_dashboard_count_axes_have_whole_number_ticks(dashboard):
    """Bars written and failed symbols are counted: their ticks read as whole numbers."""
    import re

    _, charts = dashboard
    count_axes = {
        axis["label"]: axis["ticks"]
        for chart in charts
        for axes in chart["axes"]
        for axis in axes["axis"].values()
        if axis["label"].startswith(("bars written", "failed symbols"))
    }
    assert len(count_axes) == 2, count_axes.keys()
    for label, ticks in count_axes.items():
        values = []
        for tick in ticks:
            # plain text: a 10^k label is drawn as text with a raised exponent, read as "104"
            assert tick["plain"] and re.fullmatch(r"\d{1,3}(,\d{3})*", tick["text"]), (label, tick)
            values.append(int(tick["text"].replace(",", "")))
        upward = [
            v
            for _, v in sorted(zip([t["at"][1] for t in ticks], values, strict=True), reverse=True)
        ]
        assert upward == sorted(set(upward)), (label, upward)  # each count once, rising upward


def test_dashboard_marks_gate_blocked_refreshes(dashboard):
    """A band the height of the chart, in the colour of the legend's "gate blocked" swatch, stands
    at each blocked week's tick and nowhere else; the table marks the same weeks in red."""
    page, charts = dashboard
    [refresh] = [
        (chart, axes)
        for chart in charts
        for axes in chart["axes"]
        if axes["axis"].get("y", {}).get("label", "").startswith("bars written")
    ]
    chart, axes = refresh
    [swatch] = [
        e["fill"]
        for leg in chart["legends"]
        for e in leg["entries"]
        if e["label"] == "gate blocked"
    ]
    assert _reddish(swatch), swatch
    bands = [
        r["box"]
        for r in axes["rects"]
        if r["fill"] == swatch
        and r["box"][3] - r["box"][1] > 0.9 * (axes["area"][3] - axes["area"][1])
    ]
    ticks = axes["axis"]["x"]["ticks"]
    marked = {
        min(ticks, key=lambda t: abs(t["at"][0] - (band[0] + band[2]) / 2))["text"]
        for band in bands
    }
    assert len(bands) == len(BLOCKED_WEEKS) and marked == set(BLOCKED_WEEKS), marked
    cells = page.locator("td.blocked")
    assert cells.count() == len(BLOCKED_WEEKS)
    assert all(
        _reddish(cells.nth(i).evaluate("e => getComputedStyle(e).color"))
        for i in range(cells.count())
    )
