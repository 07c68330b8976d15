"""Alert channels: the Dagster log, a JSONL file, a Slack-compatible webhook, email over SMTP.

Each sink is tried on its own: one that fails (a bad SMTP host, a webhook answering 500) is
logged and reported, and the others still deliver. Secrets (webhook URL, SMTP user and password)
come from environment variables named in the config, never from the file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path

import dagster as dg
from pydantic import Field

logger = logging.getLogger("stage2.alerts")

SEVERITIES = ("info", "warning", "critical")


@dataclass
class Alert:
    kind: str  # degradation | run_failure | data_quality | promotion | rollback
    severity: str
    title: str
    body: str
    details: dict = field(default_factory=dict)
    key: str = ""  # what makes this event unique (the sensor's run key)
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def text(self) -> str:
        return f"[stage2 {self.severity}] {self.title}\n{self.body}"


class AlertChannels(dg.ConfigurableResource):
    """Where alerts go. A sink with no setting is off; the log sink is always on."""

    jsonl_path: str | None = Field(None, description="Append each alert as one JSON line here.")
    webhook_url_env: str | None = Field(
        None, description="Environment variable holding the webhook URL."
    )
    smtp_host: str | None = Field(None, description="SMTP server; email is off when empty.")
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_from: str = "stage2@localhost"
    smtp_to: list[str] = []
    smtp_user_env: str = "STAGE2_SMTP_USER"
    smtp_password_env: str = "STAGE2_SMTP_PASSWORD"
    smtp_ca_file: str | None = Field(
        None, description="CA bundle for a server with a private certificate."
    )
    timeout_seconds: float = 10.0

    def send(self, alert: Alert, log: logging.Logger | None = None) -> dict[str, str]:
        """Deliver to every configured sink; return {sink: "sent" | the error}."""
        log = log or logger
        outcome: dict[str, str] = {}
        sinks = [("log", self._to_log)]
        if self.jsonl_path:
            sinks.append(("jsonl", self._to_jsonl))
        if self.webhook_url_env and os.environ.get(self.webhook_url_env):
            sinks.append(("webhook", self._to_webhook))
        if self.smtp_host and self.smtp_to:
            sinks.append(("email", self._to_email))
        for name, sink in sinks:
            try:
                sink(alert, log)
                outcome[name] = "sent"
            except Exception as exc:  # one sink failing must never stop the others
                outcome[name] = f"{type(exc).__name__}: {exc}"
                log.error(f"alert sink {name} failed for '{alert.title}': {outcome[name]}")
        return outcome

    def _to_log(self, alert: Alert, log: logging.Logger) -> None:
        level = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}[
            alert.severity
        ]
        log.log(level, alert.text())

    def _to_jsonl(self, alert: Alert, log: logging.Logger) -> None:
        path = Path(self.jsonl_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps(asdict(alert), sort_keys=True, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _to_webhook(self, alert: Alert, log: logging.Logger) -> None:
        payload = {"text": alert.text(), "stage2": asdict(alert)}
        request = urllib.request.Request(
            os.environ[self.webhook_url_env],
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"webhook answered HTTP {exc.code}") from None

    def _to_email(self, alert: Alert, log: logging.Logger) -> None:
        message = EmailMessage()
        message["Subject"] = f"[stage2 {alert.severity}] {alert.title}"
        message["From"] = self.smtp_from
        message["To"] = ", ".join(self.smtp_to)
        message.set_content(f"{alert.body}\n\n{json.dumps(alert.details, indent=2, default=str)}")
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout_seconds) as client:
            client.ehlo()
            if self.smtp_starttls:
                client.starttls(context=ssl.create_default_context(cafile=self.smtp_ca_file))
                client.ehlo()
            user, password = (
                os.environ.get(self.smtp_user_env),
                os.environ.get(self.smtp_password_env),
            )
            if user and password:
                client.login(user, password)
            client.send_message(message)


def alerts_from_settings(settings) -> AlertChannels:
    a = settings.alerts
    return AlertChannels(
        jsonl_path=str(settings.resolve(a.jsonl_path)) if a.jsonl_path else None,
        webhook_url_env=a.webhook_url_env,
        smtp_host=a.smtp_host,
        smtp_port=a.smtp_port,
        smtp_starttls=a.smtp_starttls,
        smtp_from=a.smtp_from,
        smtp_to=list(a.smtp_to),
        smtp_user_env=a.smtp_user_env,
        smtp_password_env=a.smtp_password_env,
        smtp_ca_file=str(settings.resolve(a.smtp_ca_file)) if a.smtp_ca_file else None,
    )
