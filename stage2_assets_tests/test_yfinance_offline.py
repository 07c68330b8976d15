"""The yfinance source offline: one probe, a message that says the network is unreachable, and
yfinance's chatter in our log instead of on the terminal."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stage2_assets.resources.market_data.network import NetworkUnreachableError, probe_network
from stage2_assets.resources.market_data.yfinance_source import YAHOO_HOST, YFinanceSource
from stage2_assets_tests.conftest import make_project, subprocess_env
from stage2_assets_tests.test_market_data_sources import _yf_frame

REPO = Path(__file__).resolve().parent.parent
STARTS = dict.fromkeys(["AAA", "BBB", "CCC"], dt.date(2024, 1, 1))
END = dt.date(2024, 1, 31)


@pytest.fixture(autouse=True)
def _no_proxy_in_the_environment(monkeypatch):
    """A proxy set on the test machine would redirect the probe; these tests pick its target."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def refused_port() -> int:
    """A port on 127.0.0.1 that refuses connections: bound, then closed, so nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def listening_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


class RecordingDownloader:
    """A downloader that records its calls and answers with a recorded frame."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return _yf_frame(kwargs["tickers"])


def _probing_source(host: str, port: int, downloader) -> YFinanceSource:
    return YFinanceSource(
        symbols_file="unused",
        backoff_seconds=0,
        probe_host=host,
        probe_port=port,
        probe_timeout_seconds=2,
    ).with_downloader(downloader, probe=True)


def test_a_refused_connection_fails_every_symbol_without_a_download(refused_port):
    downloader = RecordingDownloader()
    result = _probing_source("127.0.0.1", refused_port, downloader).fetch(STARTS, END)
    assert downloader.calls == []
    assert result.bars == {}
    assert set(result.errors) == set(STARTS)
    for symbol, error in result.errors.items():
        assert error.startswith(f"{symbol}: network unreachable: cannot connect to 127.0.0.1:")
        assert f"127.0.0.1:{refused_port}" in error and "ConnectionRefusedError" in error
        assert "data_source.kind to csv or simulated" in error


def test_an_unresolvable_name_fails_every_symbol_and_says_so():
    downloader = RecordingDownloader()
    result = _probing_source("stage2-probe.invalid", 443, downloader).fetch(STARTS, END)
    assert downloader.calls == []
    assert set(result.errors) == set(STARTS)
    error = result.errors["AAA"]
    assert error.startswith(
        "AAA: network unreachable: cannot resolve the name stage2-probe.invalid"
    )
    assert "no download was attempted" in error


def test_a_listening_host_lets_the_download_proceed(listening_port):
    downloader = RecordingDownloader()
    result = _probing_source("127.0.0.1", listening_port, downloader).fetch(STARTS, END)
    assert len(downloader.calls) == 1
    assert sorted(result.bars) == ["AAA", "BBB", "CCC"] and result.errors == {}


def test_a_recorded_downloader_skips_the_probe_by_default():
    downloader = RecordingDownloader()
    source = YFinanceSource(
        symbols_file="unused", probe_host="stage2-probe.invalid"
    ).with_downloader(downloader)
    result = source.fetch(STARTS, END)
    assert len(downloader.calls) == 1 and result.errors == {}


def test_the_probe_goes_to_the_https_proxy_when_the_environment_names_one(
    monkeypatch, refused_port
):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{refused_port}")
    with pytest.raises(NetworkUnreachableError) as raised:
        probe_network(YAHOO_HOST, 443, 2)
    message = str(raised.value)
    assert f"cannot connect to 127.0.0.1:{refused_port} (the HTTPS proxy for {YAHOO_HOST})" in (
        message
    )


def test_yfinance_chatter_goes_to_the_stage2_log_not_the_terminal(capsys, caplog):
    def chatty(**kwargs):
        print("Failed to get ticker 'AAA' reason: curl: (6) Could not resolve host")
        print("progress on stderr", file=sys.stderr)
        logging.getLogger("yfinance").error("1 Failed download: ['AAA']: DNSError")
        return _yf_frame(kwargs["tickers"])

    caplog.set_level(logging.DEBUG, logger="stage2.yfinance")
    yf_logger = logging.getLogger("yfinance")
    handlers_before = yf_logger.handlers[:]
    result = YFinanceSource(symbols_file="unused").with_downloader(chatty).fetch(STARTS, END)
    assert sorted(result.bars) == ["AAA", "BBB", "CCC"]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    ours = [r for r in caplog.records if r.name == "stage2.yfinance"]
    assert all(r.levelno == logging.DEBUG for r in ours)
    assert [r.getMessage() for r in ours] == [
        "yfinance stdout: Failed to get ticker 'AAA' reason: curl: (6) Could not resolve host",
        "yfinance stderr: progress on stderr",
        "yfinance ERROR: 1 Failed download: ['AAA']: DNSError",
    ]
    assert not [r for r in caplog.records if r.name == "yfinance"]
    assert yf_logger.handlers == handlers_before and yf_logger.propagate  # restored afterwards


@pytest.mark.reliability
def test_an_offline_refresh_of_the_default_universe_stops_at_once_with_the_reason(tmp_path):
    try:
        probe_network(YAHOO_HOST, 443, 5)
    except NetworkUnreachableError:
        pass
    else:
        pytest.skip(f"{YAHOO_HOST} is reachable here; this test covers the offline path")
    settings, home = make_project(tmp_path, {"data_source": {"kind": "yfinance"}})
    shutil.copy(REPO / "config" / "universe.txt", settings.config_path.parent / "universe.txt")
    command = [sys.executable, "-m", "stage2_assets.cli", "--config", str(settings.config_path)]
    done = subprocess.run(
        [*command, "refresh", "--as-of", "2025-06-27"],
        env=subprocess_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("stage2: step raw_bars failed:")
    assert "failed for all 143 symbols as of 2025-06-27 (first: AAPL: network unreachable" in last
    assert YAHOO_HOST in last and "data_source.kind to csv or simulated" in last
    assert "Failed to get ticker" not in done.stderr and "Cookie/crumb" not in done.stderr
