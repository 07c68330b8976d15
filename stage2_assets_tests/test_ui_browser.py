"""The Dagster UI in a real browser: dagster-webserver on loopback over a temporary instance,
driven by headless Chromium (Debian's chromium package) through Playwright."""

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


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is a dev dependency: pip install -e '.[dev]'"
    )
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
def page(webserver):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        yield page
        browser.close()


def _visible(page, text: str) -> int:
    loc = page.get_by_text(text, exact=True)
    return sum(loc.nth(i).is_visible() for i in range(loc.count()))


def test_lineage_page_shows_every_asset_in_its_group(webserver, page):
    base, _ = webserver
    page.goto(f"{base}/asset-groups")
    page.wait_for_timeout(4000)
    if page.get_by_role("button", name="Skip").count():  # Dagster's first-visit community dialog
        page.get_by_role("button", name="Skip").click()
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
    page.wait_for_timeout(3000)
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
    page.get_by_text(words).first.wait_for(timeout=30_000)
    assert words in page.inner_text("body")


def test_automation_page_lists_schedules_and_sensors(webserver, page):
    base, _ = webserver
    page.goto(f"{base}/automation")
    page.wait_for_timeout(3000)
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
                    "assetSelection": [{"path": ["raw_bars"]}],
                },
                "executionMetadata": {
                    "tags": [
                        {"key": "dagster/partition", "value": "2025-06-22"},
                        {"key": "stage2/as_of", "value": "2025-06-27"},
                    ]
                },
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
        if status in ("SUCCESS", "FAILURE", "CANCELED") or (
            status == "QUEUED" and time.monotonic() > deadline - 150
        ):
            break
        time.sleep(1)
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
