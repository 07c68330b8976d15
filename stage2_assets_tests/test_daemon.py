"""The daemon runs stage2: the service layout of ``deploy/`` started for real.

A code server (``dagster code-server start``), ``dagster-daemon run`` and ``dagster-webserver``,
started as the systemd units start them (the venv's commands by path, ``deploy/workspace.yaml``,
the instance settings of ``deploy/dagster.yaml`` with SQLite storage in a temporary
``DAGSTER_HOME``), over the small simulated market whose refresh cron fires every even minute and
retraining cron every odd one, and a local SMTP server. The tests follow one story in order: the
refresh schedule launches ``refresh_market_data``, the retraining schedule launches
``train_ensemble`` only once that week's refresh has succeeded, a degradation planted in
``degradation_log`` reaches the mailbox once, and a run whose process is killed is marked failed
(by the code server) and alerted; the webserver shows it all.

A schedule's run key is unique per tick in Dagster, not across ticks: with crons this frequent the
refresh runs again every other minute the loop is idle. The weekly crons of a real deployment tick
once a week.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from stage2_assets.partitions import AS_OF_TAG
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.alert_servers import free_port, smtp_server
from stage2_assets_tests.conftest import make_project

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
EVEN_MINUTES = "*/2 * * * *"
ODD_MINUTES = "1-59/2 * * * *"  # never in the same minute as the refresh, so never racing it
NEVER = "0 0 29 2 *"  # midnight of 29 February: not during a test run
# One small member, one epoch: a scheduled training takes seconds.
TINY_TRAINING = {"num_models": 1, "max_epochs": 1, "hidden_units": 8, "batch_size": 512}
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def wait_for(
    what: str,
    probe: Callable[[], object],
    timeout: float,
    logs: list[Path] = (),
    every: float = 1.0,
):
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline,
    with the tail of each service's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a service we started, wait, and kill it on timeout. Each service leads its own
    process group (a code server's worker and the runs it launched are its children): what is
    left of the group once the leader has exited is ended too."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)


@contextmanager
def service(args: list[str], env: dict, log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """Start one long-running process with its output in ``log``; stop it on the way out."""
    with log.open("w") as handle:
        process = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            stop_process(process)


def instance_yaml(storage: dict | None = None) -> str:
    """``deploy/dagster.yaml`` as shipped; without ``storage`` (SQLite in DAGSTER_HOME) unless one
    is given."""
    shipped = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    shipped.pop("storage")
    if storage is not None:
        shipped["storage"] = storage
    return yaml.safe_dump(shipped, sort_keys=False)


def service_env(home: Path, config: Path, code_server_port: int, **extra: str) -> dict[str, str]:
    """The environment of every service, as an EnvironmentFile gives it: no virtualenv on PATH."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "STAGE2_CONFIG": str(config),
        "STAGE2_CODE_SERVER_HOST": "127.0.0.1",
        "STAGE2_CODE_SERVER_PORT": str(code_server_port),
        **extra,
    }


def code_server_args(port: int) -> list[str]:
    return [
        str(VENV_BIN / "dagster"),
        "code-server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--module-name",
        "stage2_assets.definitions",
        "--location-name",
        "stage2",
    ]


def daemon_args() -> list[str]:
    return [str(VENV_BIN / "dagster-daemon"), "run", "--workspace", str(DEPLOY / "workspace.yaml")]


def webserver_args(port: int) -> list[str]:
    return [
        str(VENV_BIN / "dagster-webserver"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workspace",
        str(DEPLOY / "workspace.yaml"),
    ]


def code_server_answers(port: int) -> bool:
    check = subprocess.run(
        [str(VENV_BIN / "dagster"), "api", "grpc-health-check", "--port", str(port)],
        capture_output=True,
        text=True,
        env={**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1"},
    )
    return check.returncode == 0


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def ticks(instance: dg.DagsterInstance, name: str) -> list:
    """The recorded ticks of a schedule or sensor, oldest first."""
    found = []
    for state in instance.all_instigator_state():
        if state.instigator_name == name:
            found += instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100)
    return sorted(found, key=lambda tick: tick.timestamp)


def runs_of(instance: dg.DagsterInstance, job: str, **tags: str) -> list:
    return list(instance.get_run_records(dg.RunsFilter(job_name=job, tags=tags or None)))


def finished(instance: dg.DagsterInstance, record) -> object:
    current = instance.get_run_record_by_id(record.dagster_run.run_id)
    return current if current.dagster_run.is_finished else None


def subject(mail: dict) -> str:
    """A received mail's subject, unfolded."""
    parsed = email.message_from_string(mail["data"], policy=email.policy.default)
    return " ".join(str(parsed["Subject"]).split())


class Stack:
    """What the tests look at: the instance, the settings, the environment, the mailbox, the
    logs, the UI's URL and the code server's process."""

    def __init__(self, folder, settings, home, env, mails, logs, base, code_server):
        self.folder, self.settings, self.home, self.env = folder, settings, home, env
        self.mails, self.logs, self.base, self.code_server = mails, logs, base, code_server
        self.instance = dg.DagsterInstance.get()

    def wait(self, what: str, probe: Callable[[], object], timeout: float = 240, every: float = 1):
        return wait_for(what, probe, timeout, self.logs, every)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("daemon")
    with ExitStack() as stop:
        smtp_port, ca_file, mails = stop.enter_context(smtp_server(folder))
        settings, home = make_project(
            folder,
            {
                "data_refresh": {"schedule": EVEN_MINUTES},
                "retraining": {"schedule": ODD_MINUTES, **TINY_TRAINING},
                "ab_testing": {"schedule": NEVER},
                "monitoring": {"predictions_schedule": NEVER},
                "alerts": {
                    "jsonl_path": "alerts.jsonl",
                    "webhook_url_env": None,
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp_port,
                    "smtp_to": ["quant@example.com"],
                    "smtp_ca_file": ca_file,
                },
            },
        )
        (home / "dagster.yaml").write_text(instance_yaml())
        grpc_port, web_port = free_port(), free_port()
        env = service_env(
            home,
            settings.config_path,
            grpc_port,
            STAGE2_SMTP_USER="ops",
            STAGE2_SMTP_PASSWORD="s3cret",
        )
        logs = [folder / "code-server.log", folder / "daemon.log", folder / "webserver.log"]
        code_server = stop.enter_context(service(code_server_args(grpc_port), env, logs[0], folder))
        wait_for("the code server", lambda: code_server_answers(grpc_port), 120, logs)
        stop.enter_context(service(daemon_args(), env, logs[1], folder))
        stop.enter_context(service(webserver_args(web_port), env, logs[2], folder))
        base = f"http://127.0.0.1:{web_port}"
        wait_for("the webserver's /server_info", lambda: answers(f"{base}/server_info"), 120, logs)
        monkeypatch = pytest.MonkeyPatch()
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        deployment = Stack(folder, settings, home, env, mails, logs, base, code_server)
        try:
            yield deployment
            # Nothing may be left running in the temporary stores when the services stop.
            deployment.wait(
                "the runs in progress to finish",
                lambda: not list(deployment.instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS))),
                timeout=180,
            )
        finally:
            deployment.instance.dispose()
            monkeypatch.undo()


def test_the_webserver_shows_the_code_servers_schedules_and_sensors(stack):
    data = graphql(
        stack.base,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { location { name } "
        "schedules { name scheduleState { status } } sensors { name sensorState { status } } } } } }",
    )
    (repository,) = data["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == "stage2"
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]}
    assert schedules["weekly_refresh_schedule"] == "RUNNING"
    assert schedules["weekly_retraining_schedule"] == "RUNNING"
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors["degradation_sensor"] == "RUNNING"


def scheduled(stack: Stack, job: str, schedule: str) -> list:
    """The runs a schedule launched for a job, oldest first."""
    records = runs_of(stack.instance, job, **{"dagster/schedule_name": schedule})
    return sorted(records, key=lambda record: record.create_timestamp)


def test_refresh_schedule_launches_refresh_market_data(stack):
    launched = stack.wait(
        "a refresh_market_data run from weekly_refresh_schedule",
        lambda: scheduled(stack, "refresh_market_data", "weekly_refresh_schedule"),
    )
    done = stack.wait("the refresh run to finish", lambda: finished(stack.instance, launched[0]))
    assert done.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    # It went through the queue (QueuedRunCoordinator) and answers for the week that ended.
    assert dg.DagsterEventType.RUN_ENQUEUED in {
        event.dagster_event.event_type
        for event in stack.instance.all_logs(done.dagster_run.run_id)
        if event.dagster_event
    }
    as_of = dt.date.fromisoformat(done.dagster_run.tags[AS_OF_TAG])
    with Warehouse(database=str(stack.settings.warehouse_path)).connect(read_only=True) as conn:
        newest = conn.execute("SELECT max(date) FROM features").fetchall()[0][0]
    assert newest is not None and newest <= as_of


def test_retraining_launches_only_after_that_weeks_refresh_succeeded(stack):
    (training, *_) = stack.wait(
        "a train_ensemble run from weekly_retraining_schedule",
        lambda: scheduled(stack, "train_ensemble", "weekly_retraining_schedule"),
    )
    week = training.dagster_run.tags["dagster/partition"]
    before = [
        record
        for record in scheduled(stack, "refresh_market_data", "weekly_refresh_schedule")
        if record.dagster_run.tags["dagster/partition"] == week
        and record.create_timestamp < training.create_timestamp
    ]
    # What the retraining tick looked at: that week's latest refresh, finished and successful.
    assert before and before[-1].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert before[-1].end_time <= training.create_timestamp.timestamp()
    done = stack.wait("the training run to finish", lambda: finished(stack.instance, training))
    assert done.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert ModelStore(root=str(stack.settings.models_path)).versions()
    # Any tick before the one that launched it waited for the refresh, saying so.
    (launching,) = stack.wait(
        "the tick that launched it to be recorded",
        lambda: [
            t
            for t in ticks(stack.instance, "weekly_retraining_schedule")
            if training.dagster_run.run_id in t.run_ids and t.status.value == "SUCCESS"
        ],
    )
    for tick in ticks(stack.instance, "weekly_retraining_schedule"):
        if tick.timestamp < launching.timestamp:
            assert tick.status.value == "SKIPPED"
            assert "refresh" in tick.skip_reason, tick.skip_reason


def test_a_planted_degradation_reaches_the_mailbox_once(stack):
    (training, *_) = scheduled(stack, "train_ensemble", "weekly_retraining_schedule")
    as_of = training.dagster_run.tags[AS_OF_TAG]
    version = ModelStore(root=str(stack.settings.models_path)).versions()[-1]
    stack.wait(
        "no run in progress before planting",
        lambda: not list(stack.instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS))),
    )
    with Warehouse(database=str(stack.settings.warehouse_path)).connect() as conn:
        conn.execute(
            "INSERT INTO degradation_log (model_version, as_of, recent_rows, baseline_rows, "
            'recent_accuracy, baseline_accuracy, "drop", p_value, degraded, reason) '
            "VALUES (?, ?, 120, 120, 0.41, 0.58, 0.17, 0.001, true, ?)",
            [version, as_of, "accuracy fell from 0.58 to 0.41 (planted by the test)"],
        )
    planted_at = time.time()

    def degradation_mails():
        return [m for m in stack.mails if f"production {version} degraded" in subject(m)]

    stack.wait("the degradation alert in the mailbox", degradation_mails)
    (retrain,) = stack.wait(
        "the retraining the degradation sensor requested",
        lambda: runs_of(stack.instance, "train_ensemble", **{"stage2/trigger": "degradation"}),
    )
    assert retrain.dagster_run.tags["dagster/sensor_name"] == "degradation_sensor"
    assert retrain.dagster_run.tags[AS_OF_TAG] == as_of
    # The sensor ticks again after the alert: the same event raises no second one.
    stack.wait(
        "two degradation_sensor ticks after the planting",
        lambda: (
            len(
                [t for t in ticks(stack.instance, "degradation_sensor") if t.timestamp > planted_at]
            )
            >= 2
        ),
    )
    (mail,) = degradation_mails()
    assert mail["to"] == ["quant@example.com"]
    assert subject(mail) == f"[stage2 critical] production {version} degraded as of {as_of}"


def run_process(stack: Stack, run_id: str) -> int | None:
    """The pid of a run's process, as the code server logs it when it starts the process, while
    that process lives in the code server's session (one of ours)."""
    logged = [
        re.search(r"Started process for run \(pid: (\d+)\)", event.message)
        for event in stack.instance.all_logs(run_id)
    ]
    pids = [int(match.group(1)) for match in logged if match]
    if not pids:
        return None
    session = subprocess.run(
        ["ps", "-o", "pid=", "-g", str(stack.code_server.pid)], capture_output=True, text=True
    ).stdout.split()
    return pids[0] if str(pids[0]) in session else None


def test_a_killed_run_is_marked_failed_and_alerted(stack):
    (training, *_) = scheduled(stack, "train_ensemble", "weekly_retraining_schedule")
    tags = {
        "dagster/partition": training.dagster_run.tags["dagster/partition"],
        AS_OF_TAG: training.dagster_run.tags[AS_OF_TAG],
        "stage2/purpose": "killed-by-test",
    }
    launch = subprocess.run(
        [
            str(VENV_BIN / "dagster"),
            "job",
            "launch",
            "--workspace",
            str(DEPLOY / "workspace.yaml"),
            "--job",
            "train_ensemble",
            "--tags",
            json.dumps(tags),
            "--config-json",
            "{}",
        ],
        env=stack.env,
        capture_output=True,
        text=True,
    )
    assert launch.returncode == 0, launch.stdout + launch.stderr
    (record,) = stack.wait(
        "the launched run to leave the queue",
        lambda: [
            r
            for r in runs_of(
                stack.instance, "train_ensemble", **{"stage2/purpose": "killed-by-test"}
            )
            if r.dagster_run.status != dg.DagsterRunStatus.QUEUED
        ],
        every=0.2,
    )
    # Its process imports stage2 for seconds before the first step: killed on the way.
    worker = stack.wait(
        "its run process", lambda: run_process(stack, record.dagster_run.run_id), every=0.2
    )
    os.kill(worker, signal.SIGKILL)
    done = stack.wait("the killed run to be marked", lambda: finished(stack.instance, record))
    assert done.dagster_run.status == dg.DagsterRunStatus.FAILURE
    run_id = done.dagster_run.run_id
    # Marked by the code server, which saw its run process die, not by a failing step.
    assert any("SIGKILL" in event.message for event in stack.instance.all_logs(run_id))
    alerts = stack.wait(
        "the run failure alert in the mailbox",
        lambda: [
            m for m in stack.mails if f"train_ensemble failed (run {run_id[:8]})" in subject(m)
        ],
    )
    assert len(alerts) == 1


def test_the_webserver_reads_the_runs_the_daemon_launched(stack):
    data = graphql(
        stack.base,
        "{ runsOrError { ... on Runs { results { jobName status tags { key value } } } } }",
    )
    seen = {
        (run["jobName"], run["status"])
        for run in data["runsOrError"]["results"]
        if any(tag["key"] == "dagster/schedule_name" for tag in run["tags"])
    }
    assert {("refresh_market_data", "SUCCESS"), ("train_ensemble", "SUCCESS")} <= seen
