"""Alerts through a real SMTP server (aiosmtpd) and a real HTTP receiver on loopback, deduplicated."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from orchestrator.alerts.notify import deliver, stale
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from tests.conftest import Cli

pytestmark = pytest.mark.scheduler


class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


@pytest.fixture
def receivers():  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        smtp_port = s.getsockname()[1]
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    posts: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    http = HTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=http.serve_forever, daemon=True)
    t.start()
    try:
        yield inbox, smtp_port, posts, http.server_address[1]
    finally:
        http.shutdown()
        smtp.stop()


def test_alerts_are_sent_once_per_condition(cli: Cli, tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    inbox, smtp_port, posts, http_port = receivers
    src, broken = tmp_path / "src", tmp_path / "broken"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 100_000)
    vault = tmp_path / "vault"
    policy = tmp_path / "p.yaml"
    policy.write_text(f"""policy: nightly
client: acme
vault: {vault}
quota: 1MiB
alerts:
  webhook: http://127.0.0.1:{http_port}/hook
  email: {{to: [ops@example.test], from: dobaas@example.test, smtp: "127.0.0.1:{smtp_port}"}}
  no_success_hours: 24
sources:
  - {{name: docs, plugin: files, paths: [{src}]}}
  - {{name: other, plugin: files, paths: [{broken}]}}
""")
    env = Cli({"DOBAAS_CATALOG": str(tmp_path / "cat.db")})
    env("vault", "init", str(vault), "--kdf-cost", "12")

    env("run", str(policy), check=False)
    keys = sorted(p["key"] for p in posts)
    assert keys == ["acme/other/failed"], keys
    assert len(inbox.messages) == 1 and "acme/other" in inbox.messages[0] and "FAILED" in inbox.messages[0]

    env("run", str(policy), check=False)  # still failing: no new alert
    assert len(posts) == 1 and len(inbox.messages) == 1

    broken.mkdir()
    (src / "b.bin").write_bytes(__import__("os").urandom(1_500_000))  # a big change, and over the 1 MiB quota
    env("run", str(policy))
    keys = sorted(p["key"] for p in posts[1:])
    assert keys == ["acme/docs/change-rate", "acme/quota100", "acme/quota90"], keys

    broken.rmdir()
    env("run", str(policy), check=False)  # the failure came back after clearing: alerted again
    assert [p["key"] for p in posts[4:]] == ["acme/other/failed"]
    assert len(inbox.messages) == len(posts)

    p = load_policy(str(policy))
    catalog = Catalog(f"sqlite:///{tmp_path / 'cat.db'}")
    later = datetime.now(UTC) + timedelta(hours=30)
    sent = deliver(p, catalog, stale(p, catalog, later))
    assert sorted(sent) == ["acme/docs/no-success", "acme/other/no-success"]  # both last succeeded in run 3
    assert deliver(p, catalog, stale(p, catalog, later)) == []  # and only once


@pytest.mark.ops
def test_alerts_go_only_where_configured(cli: Cli, tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    _inbox, _smtp_port, posts, http_port = receivers
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 100_000)
    vault = tmp_path / "vault"
    env = Cli({"DOBAAS_CATALOG": str(tmp_path / "cat.db")})
    env("vault", "init", str(vault), "--kdf-cost", "12")
    head = f"client: acme\nvault: {vault}\nsources:\n  - {{name: docs, plugin: files, paths: [{src}]}}\n" \
           f"  - {{name: gone, plugin: files, paths: [{tmp_path / 'missing'}]}}\n"
    silent = tmp_path / "silent.yaml"
    silent.write_text("policy: silent\n" + head)
    run = env("-v", "run", str(silent), check=False)
    assert run.returncode == 1 and "ALERT" not in run.stderr, run.stderr  # no alerts: section, no alert
    assert "condition acme/gone/failed" in run.stderr and "not an alert" in run.stderr

    chosen = tmp_path / "chosen.yaml"  # only failures are sent; a change over the budget is only recorded
    chosen.write_text(f"policy: chosen\nalerts: {{webhook: 'http://127.0.0.1:{http_port}/h', "
                      "conditions: [failed]}\n" + head.replace("docs", "docs2").replace("gone", "gone2"))
    env("run", str(chosen), check=False)
    (src / "b.bin").write_bytes(__import__("os").urandom(500_000))
    env("run", str(chosen), check=False)
    assert [p["key"] for p in posts] == ["acme/gone2/failed"], posts
    active = {a["key"] for a in Catalog(f"sqlite:///{tmp_path / 'cat.db'}").alert_states() if a["active"]}
    assert {"acme/docs2/change-rate", "acme/gone/failed"} <= active  # recorded for status and metrics
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: bad\nalerts: {conditions: [fire]}\n" + head)
    p = env("policy", "check", str(bad), check=False)
    assert p.returncode == 6 and "alerts.conditions" in p.stderr, p.stderr
