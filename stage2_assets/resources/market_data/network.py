"""Reaching a live provider: one TCP probe before any download, and the provider's chatter kept
in our log (logger ``stage2.yfinance`` at DEBUG) rather than on the terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator

from stage2_assets.errors import DataSourceError

log = logging.getLogger("stage2.yfinance")

OFFLINE_HINT = "for an offline run set data_source.kind to csv or simulated"


class NetworkUnreachableError(DataSourceError):
    """The provider's host cannot be reached at all; retrying within the run will not help."""


def probe_network(host: str, port: int, timeout_seconds: float) -> None:
    """Return if ``host:port`` (or the HTTPS proxy in the environment that leads there) accepts a
    TCP connection within ``timeout_seconds``; otherwise raise ``NetworkUnreachableError`` naming
    the host and the error.

    The attempt runs in a daemon thread that is waited for at most ``timeout_seconds``: the
    timeout of ``socket.create_connection`` does not bound the name lookup, and a resolver with no
    route can take far longer than that.
    """
    target, target_port, via = _probe_target(host, port)
    outcome: dict[str, object] = {}

    def attempt() -> None:
        try:
            addresses = socket.getaddrinfo(target, target_port, type=socket.SOCK_STREAM)
            outcome["resolved"] = True
            error: OSError | None = None
            for *_, address in addresses:
                try:
                    with socket.create_connection(address[:2], timeout=timeout_seconds):
                        outcome["ok"] = True
                        return
                except OSError as exc:
                    error = exc
            outcome["error"] = error
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=attempt, name="stage2-yfinance-probe", daemon=True)
    thread.start()
    thread.join(timeout_seconds)
    if outcome.get("ok"):
        return
    error = outcome.get("error")
    where = f"{target}:{target_port}{via}"
    if isinstance(error, socket.gaierror):
        reason = f"cannot resolve the name {target}{via} ({error})"
    elif error is not None:
        reason = f"cannot connect to {where} ({type(error).__name__}: {error})"
    elif outcome.get("resolved"):
        reason = f"no answer from {where} within {timeout_seconds:g} s"
    else:
        reason = f"the name lookup of {target}{via} did not answer within {timeout_seconds:g} s"
    raise NetworkUnreachableError(
        f"network unreachable: {reason}; no download was attempted; {OFFLINE_HINT}"
    )


def _probe_target(host: str, port: int) -> tuple[str, int, str]:
    """Where a connection to ``host`` really goes: the environment's HTTPS proxy when one applies
    (yfinance's HTTP client honours it), else the host itself."""
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return host, port, ""
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname or proxy, parts.port or default_port, f" (the HTTPS proxy for {host})"


class _LogLines(io.TextIOBase):
    """A text stream that sends each complete line written to it to ``log`` at DEBUG."""

    def __init__(self, stream: str) -> None:
        self._stream = stream
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                log.debug("yfinance %s: %s", self._stream, line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            log.debug("yfinance %s: %s", self._stream, self._pending.rstrip())
        self._pending = ""


class _ToStage2Log(logging.Handler):
    """Hands a ``yfinance`` logger record to ``log`` at DEBUG, keeping its level in the text."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug(
            "yfinance %s: %s", record.levelname, record.getMessage(), exc_info=record.exc_info
        )


@contextlib.contextmanager
def yfinance_quietly() -> Iterator[None]:
    """Route yfinance's logger and anything printed meanwhile to ``log``, then restore both.

    ``sys.stdout``/``sys.stderr`` are process-wide, so the swap is made (and undone) by the
    waiting thread, never by the download thread, which may outlive a timed-out call.
    """
    yf_logger = logging.getLogger("yfinance")
    saved = (yf_logger.handlers[:], yf_logger.propagate)
    yf_logger.handlers = [_ToStage2Log()]
    yf_logger.propagate = False
    out, err = _LogLines("stdout"), _LogLines("stderr")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.flush()
        err.flush()
        yf_logger.handlers, yf_logger.propagate = saved
