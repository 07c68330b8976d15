"""Alert channels against real local servers: SMTP with STARTTLS and AUTH, an HTTP webhook."""

import json
import logging

from stage2_assets.resources.alerts import Alert, AlertChannels
from stage2_assets_tests.alert_servers import free_port, smtp_server, webhook_server

ALERT = Alert(
    kind="degradation",
    severity="critical",
    title="production v20250101-000000 degraded",
    body="accuracy 44% vs 55%",
    details={"p_value": 0.001},
    key="degraded-v20250101-000000-2025-06-13",
)


def test_every_sink_delivers(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STAGE2_SMTP_USER", "ops")
    monkeypatch.setenv("STAGE2_SMTP_PASSWORD", "s3cret")
    with smtp_server(tmp_path) as (port, ca_file, mails), webhook_server() as (url, posts):
        monkeypatch.setenv("STAGE2_WEBHOOK_URL", url)
        channels = AlertChannels(
            jsonl_path=str(tmp_path / "alerts.jsonl"),
            webhook_url_env="STAGE2_WEBHOOK_URL",
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_to=["quant@example.com"],
            smtp_ca_file=ca_file,
        )
        with caplog.at_level(logging.ERROR, logger="stage2.alerts"):
            outcome = channels.send(ALERT)
    assert outcome == {"log": "sent", "jsonl": "sent", "webhook": "sent", "email": "sent"}
    assert posts[0]["text"].startswith("[stage2 critical] production v20250101-000000 degraded")
    assert posts[0]["stage2"]["details"] == {"p_value": 0.001}
    assert len(mails) == 1 and mails[0]["to"] == ["quant@example.com"]
    assert "Subject: [stage2 critical] production v20250101-000000 degraded" in mails[0]["data"]
    assert json.loads((tmp_path / "alerts.jsonl").read_text())["key"] == ALERT.key


def test_a_failing_sink_is_logged_and_the_others_still_deliver(tmp_path, monkeypatch, caplog):
    with webhook_server(status=500) as (url, posts):
        monkeypatch.setenv("STAGE2_WEBHOOK_URL", url)
        channels = AlertChannels(
            jsonl_path=str(tmp_path / "alerts.jsonl"),
            webhook_url_env="STAGE2_WEBHOOK_URL",
            smtp_host="127.0.0.1",
            smtp_port=free_port(),
            smtp_to=["quant@example.com"],
            timeout_seconds=2,
        )
        with caplog.at_level(logging.ERROR, logger="stage2.alerts"):
            outcome = channels.send(ALERT)
    assert outcome["jsonl"] == "sent" and outcome["log"] == "sent"
    assert outcome["webhook"] == "RuntimeError: webhook answered HTTP 500" and len(posts) == 1
    assert outcome["email"].startswith("ConnectionRefusedError")
    assert "alert sink webhook failed" in caplog.text and "alert sink email failed" in caplog.text
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1


def test_wrong_smtp_password_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("STAGE2_SMTP_USER", "ops")
    monkeypatch.setenv("STAGE2_SMTP_PASSWORD", "wrong")
    with smtp_server(tmp_path) as (port, ca_file, mails):
        channels = AlertChannels(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_to=["q@example.com"],
            smtp_ca_file=ca_file,
            timeout_seconds=3,
        )
        outcome = channels.send(ALERT)
    # aiosmtpd answers 535 or lets smtplib's next mechanism time out: either way, reported, not raised
    assert outcome["email"].split(":")[0] in {"SMTPAuthenticationError", "SMTPServerDisconnected"}
    assert outcome["log"] == "sent" and mails == []


def test_an_untrusted_certificate_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("STAGE2_SMTP_USER", "ops")
    monkeypatch.setenv("STAGE2_SMTP_PASSWORD", "s3cret")
    with smtp_server(tmp_path) as (port, _, mails):
        outcome = AlertChannels(
            smtp_host="127.0.0.1", smtp_port=port, smtp_to=["q@example.com"]
        ).send(ALERT)
    assert "CERTIFICATE_VERIFY_FAILED" in outcome["email"] and mails == []
