"""The production deployment of ``deploy/``: its instance on a real PostgreSQL, its settings from
the environment, and its compose file and systemd units checked.

A throwaway PostgreSQL server (Debian's postgresql package: ``initdb``, ``pg_ctl``) listens on a
free loopback port with password authentication; ``deploy/dagster.yaml`` goes as shipped into a
temporary ``DAGSTER_HOME`` with its ``DAGSTER_PG_*`` variables pointing there. ``stage2 weekly`` and
``stage2 status`` run there as subprocesses, and the daemon, over a code server and
``deploy/workspace.yaml``, records its ticks there. Initdb and the server refuse to run as root:
as root the server runs as the ``postgres`` account that Debian's package creates.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import pytest
import yaml

from stage2_assets.config import load_settings
from stage2_assets.errors import ConfigError
from stage2_assets_tests.alert_servers import free_port
from stage2_assets_tests.conftest import make_project
from stage2_assets_tests.test_daemon import (
    DEPLOY,
    TINY_TRAINING,
    VENV_BIN,
    code_server_answers,
    code_server_args,
    daemon_args,
    service,
    service_env,
    ticks,
    wait_for,
)

pytestmark = pytest.mark.services

AS_OF = "2025-06-27"
UNITS = ["stage2-code-server.service", "stage2-webserver.service", "stage2-daemon.service"]
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


def server_account() -> str | None:
    """Who runs the server: this process's user, or as root (which initdb refuses) ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip(
            "running as root, which initdb refuses, and there is no 'postgres' account to run "
            "the server as (Debian's postgresql package creates it)"
        )
    return "postgres"


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of our own on 127.0.0.1, with a ``dagster`` database; stopped after."""
    import psycopg2

    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
            "/usr/lib/postgresql/*/bin: apt-get install postgresql (.ci/run does)"
        )
    account = server_account()
    base = Path(tempfile.mkdtemp(prefix="stage2-pg-"))
    base.chmod(0o711)  # the server's account must reach its folders inside
    data, sockets, logs = base / "data", base / "sockets", base / "logs"
    pwfile = base / "pwfile"
    password = f"pw-{secrets.token_hex(8)}"
    pwfile.write_text(password + "\n")
    for folder in (data, sockets, logs):
        folder.mkdir(mode=0o700)
    if account:
        owner = pwd.getpwnam(account)
        for path in (data, sockets, logs, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def as_server(*args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args],
            user=account,
            cwd=base,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    init = as_server(
        bin_dir / "initdb",
        "-D",
        data,
        "-U",
        "stage2",
        f"--pwfile={pwfile}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
    )
    assert init.returncode == 0, init.stdout + init.stderr
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = as_server(
        bin_dir / "pg_ctl", "-D", data, "-l", logs / "server.log", "-w", "-o", options, "start"
    )
    try:
        log = logs / "server.log"
        assert start.returncode == 0, (
            start.stdout + start.stderr + (log.read_text() if log.exists() else "")
        )
        server = {"host": "127.0.0.1", "port": port, "user": "stage2", "password": password}
        conn = psycopg2.connect(dbname="postgres", **server)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE dagster")
        conn.close()
        yield {**server, "db": "dagster"}
    finally:
        as_server(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def deployment(postgres, tmp_path_factory):
    """A stage2 project whose DAGSTER_HOME holds deploy/dagster.yaml as shipped, and the
    environment that points it at the server (in this process too, to read the instance)."""
    folder = tmp_path_factory.mktemp("pg-deploy")
    settings, home = make_project(
        folder,
        {"retraining": TINY_TRAINING, "alerts": {"jsonl_path": "alerts.jsonl"}},
    )
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    pg_env = {
        "DAGSTER_PG_HOST": postgres["host"],
        "DAGSTER_PG_PORT": str(postgres["port"]),
        "DAGSTER_PG_USER": postgres["user"],
        "DAGSTER_PG_PASSWORD": postgres["password"],
        "DAGSTER_PG_DB": postgres["db"],
    }
    monkeypatch = pytest.MonkeyPatch()
    for name, value in {**pg_env, "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    env = service_env(home, settings.config_path, free_port(), **pg_env)
    yield settings, home, env, folder
    monkeypatch.undo()


def stage2(env: dict, settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "stage2"), "--config", str(settings.config_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def query(postgres: dict, sql: str) -> list[tuple]:
    import psycopg2

    server = {k: postgres[k] for k in ("host", "port", "user", "password")}
    with psycopg2.connect(dbname=postgres["db"], **server) as conn, conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_the_shipped_instance_is_postgres_backed_queued_and_monitored(deployment):
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled


def test_a_weekly_cycle_is_recorded_in_postgres(deployment, postgres):
    settings, _, env, _ = deployment
    weekly = stage2(env, settings, "weekly", "--as-of", AS_OF)
    assert weekly.returncode == 0, weekly.stdout + weekly.stderr
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs(dg.RunsFilter(job_name="weekly_adaptation"))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["stage2/as_of"] == AS_OF
    assert ("weekly_adaptation", "SUCCESS") in query(
        postgres, "SELECT pipeline_name, status FROM runs"
    )
    (materialized,) = query(
        postgres,
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
    )
    assert materialized[0] >= 8  # every asset of the loop


def test_status_works_on_the_postgres_instance(deployment):
    settings, _, env, _ = deployment
    status = stage2(env, settings, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["production"]["problem"] is None
    assert report["tables"]["features"]["rows"] > 0
    assert str(report["tables"]["validated_bars"]["last_date"])[:10] <= AS_OF


def test_the_daemon_records_its_ticks_in_postgres(deployment, postgres):
    settings, home, env, folder = deployment
    port = int(env["STAGE2_CODE_SERVER_PORT"])
    logs = [folder / "code-server.log", folder / "daemon.log"]
    with service(code_server_args(port), env, logs[0], folder):
        wait_for("the code server", lambda: code_server_answers(port), 120, logs)
        with service(daemon_args(), env, logs[1], folder), dg.DagsterInstance.get() as instance:
            (tick, *_) = wait_for(
                "a finished sensor tick in the Postgres instance",
                lambda: [
                    t
                    for t in ticks(instance, "pointer_events_sensor")
                    if t.status.value in ("SUCCESS", "SKIPPED", "FAILURE")
                ],
                120,
                logs,
            )
    assert tick.status.value in ("SUCCESS", "SKIPPED"), tick.error
    (count,) = query(postgres, "SELECT count(*) FROM job_ticks")
    assert count[0] >= 1


def test_deploy_settings_take_stores_and_channels_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STAGE2_WAREHOUSE", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("STAGE2_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("STAGE2_ALERTS_JSONL", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("STAGE2_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("STAGE2_SMTP_PORT", "2525")
    monkeypatch.setenv("STAGE2_ALERT_TO", "quant@example.com")
    monkeypatch.setenv("STAGE2_SOURCE", "")  # empty: the file's default, yfinance
    settings = load_settings(DEPLOY / "stage2.yaml")
    assert settings.warehouse_path == tmp_path / "w.duckdb"
    assert settings.models_path == tmp_path / "models"
    assert settings.data_source.kind == "yfinance"
    assert settings.resolve(settings.data_source.universe_file).is_file()
    alerts = settings.alerts
    assert (alerts.smtp_host, alerts.smtp_port, alerts.smtp_to) == (
        "smtp.example.com",
        2525,
        ["quant@example.com"],
    )
    assert alerts.jsonl_path == tmp_path / "alerts.jsonl"


def test_empty_alert_variables_turn_email_off(monkeypatch, tmp_path):
    monkeypatch.setenv("STAGE2_WAREHOUSE", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("STAGE2_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("STAGE2_ALERTS_JSONL", str(tmp_path / "alerts.jsonl"))
    monkeypatch.setenv("STAGE2_SMTP_HOST", "")
    monkeypatch.delenv("STAGE2_ALERT_TO", raising=False)
    alerts = load_settings(DEPLOY / "stage2.yaml").alerts
    assert (alerts.smtp_host, alerts.smtp_to, alerts.smtp_port) == (None, [], 587)


def test_an_unset_variable_is_named_with_its_key(monkeypatch, tmp_path):
    monkeypatch.delenv("STAGE2_WAREHOUSE", raising=False)
    monkeypatch.setenv("STAGE2_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("STAGE2_ALERTS_JSONL", str(tmp_path / "alerts.jsonl"))
    with pytest.raises(
        ConfigError,
        match=r"storage\.warehouse: the environment variable STAGE2_WAREHOUSE is not set",
    ):
        load_settings(DEPLOY / "stage2.yaml")


def _env_names(node) -> set[str]:
    """The variables a Dagster YAML file reads through ``env:``."""
    if isinstance(node, dict):
        found = {node["env"]} if set(node) == {"env"} else set()
        return found.union(*(_env_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_env_names(v) for v in node))
    return set()


def _strings(node) -> list[str]:
    """Every string value of a parsed YAML file."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def test_every_variable_the_deploy_files_read_is_provided():
    dagster_names = _env_names(yaml.safe_load((DEPLOY / "dagster.yaml").read_text()))
    dagster_names |= _env_names(yaml.safe_load((DEPLOY / "workspace.yaml").read_text()))
    required = {
        name
        for value in _strings(yaml.safe_load((DEPLOY / "stage2.yaml").read_text()))
        for name, default in ENV_REFERENCE.findall(value)
        if not default
    }
    assert {"DAGSTER_PG_PASSWORD", "STAGE2_CODE_SERVER_HOST", "STAGE2_WAREHOUSE"} <= (
        dagster_names | required
    )
    example = _env_file(DEPLOY / "stage2.env.example")
    assert dagster_names | required | {"DAGSTER_HOME", "STAGE2_CONFIG"} <= set(example)
    services = _compose()["services"]
    for name in ("code-server", "webserver", "daemon"):
        environment = services[name]["environment"]
        assert dagster_names | required | {"DAGSTER_HOME", "STAGE2_CONFIG"} <= set(environment)
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"  # one image
    # The code server listens where the workspace sends the webserver and the daemon.
    command = services["code-server"]["command"]
    port = command[command.index("--port") + 1]
    assert port == services["webserver"]["environment"]["STAGE2_CODE_SERVER_PORT"]
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text()
        assert "EnvironmentFile=/etc/stage2/stage2.env" in text
    code_server = (DEPLOY / "systemd" / UNITS[0]).read_text()
    assert (
        f"--host {example['STAGE2_CODE_SERVER_HOST']} --port {example['STAGE2_CODE_SERVER_PORT']}"
        in code_server
    )


def test_the_compose_file_is_valid():
    docker = shutil.which("docker")
    plugin = (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if plugin:
        command = [docker, "compose"]
    elif shutil.which("docker-compose"):
        command = [shutil.which("docker-compose")]
    else:
        pytest.skip(
            "neither the docker compose plugin nor docker-compose is installed here "
            "(test_every_variable_the_deploy_files_read_is_provided still reads the file)"
        )
    check = subprocess.run(
        [*command, "-f", str(DEPLOY / "docker-compose.yaml"), "config", "--quiet"],
        env={**os.environ, "DAGSTER_PG_PASSWORD": "validation-only"},
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_systemd_units_verify():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    check = subprocess.run(
        [analyze, "verify", *(str(DEPLOY / "systemd" / unit) for unit in UNITS)],
        capture_output=True,
        text=True,
    )
    # The units start the virtual environment of /opt/stage2 (docs/deploy.md), not installed here.
    absent = re.compile(r"Command /opt/stage2/\.venv/bin/[\w-]+ is not executable: No such file")
    complaints = [
        line
        for line in (check.stdout + check.stderr).splitlines()
        if line.strip() and not absent.search(line)
    ]
    assert complaints == []
