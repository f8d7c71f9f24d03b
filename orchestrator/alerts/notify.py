"""Evaluate alert conditions and deliver the ones that just became active.

Conditions (keys are ``client/source/<kind>`` or ``client/quota<level>``): a failed source; a source that saved
with warnings or errors; a source without a success for ``no_success_hours``; a run whose new data exceeds
``change_rate_limit`` of the source's initially saved volume (the contract's 0.2% per day); the vault's stored
volume at 90% and 100% of the policy's ``quota``. Each is sent when it becomes active, not again until it has
cleared. A delivery failure is logged and never fails a backup.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING

from orchestrator.policy.budget import DAILY_CHANGE_BUDGET
from orchestrator.policy.model import EmailAlerts, Policy
from orchestrator.units import parse_size

if TYPE_CHECKING:  # the catalog may be a CatalogProcess standing for it
    from orchestrator.catalog.db import Catalog

log = logging.getLogger(__name__)


@dataclass
class Condition:
    key: str
    active: bool
    summary: str


def after_run(policy: Policy, report, catalog: Catalog, stored_bytes: int) -> list[Condition]:
    out: list[Condition] = []
    limit = policy.alerts.change_rate_limit if policy.alerts else DAILY_CHANGE_BUDGET
    for s in report.sources:
        base = f"{policy.client}/{s.source}"
        out.append(Condition(f"{base}/failed", s.status == "failed",
                             f"backup of {base} FAILED: {'; '.join(s.errors[:3])}"))
        out.append(Condition(f"{base}/interrupted", s.status == "interrupted",
                             f"backup of {base} did not finish inside its window: {'; '.join(s.errors[:1])}"))
        if s.status in ("ok", "partial"):
            problems = s.errors + s.warnings
            out.append(Condition(f"{base}/warnings", bool(problems),
                                 f"backup of {base} saved with {len(s.errors)} error(s) and {len(s.warnings)} "
                                 f"warning(s): {'; '.join(problems[:3])}"))
            initial = catalog.first_snapshot_size(policy.client, s.source)
            if initial and s.mode == "incremental":
                rate = s.bytes_new / initial
                out.append(Condition(f"{base}/change-rate", rate > limit,
                                     f"{base} changed {rate:.2%} since its last backup, above the {limit:.2%} "
                                     "the contract sizes daily backups on"))
    if policy.quota:
        quota = parse_size(policy.quota, "quota")
        used = stored_bytes / quota
        for level in (90, 100):
            out.append(Condition(f"{policy.client}/quota{level}", used * 100 >= level,
                                 f"{policy.client} stores {used:.0%} of its subscribed volume ({policy.quota})"))
    return out


def notify_after_run(policy: Policy, report, catalog: Catalog, vault) -> list[str]:
    """Everything to check after a run of ``policy``; the vault's stored volume is listed only for a quota."""
    stored = sum(vault.pack_names().values()) if policy.quota else 0
    return deliver(policy, catalog, after_run(policy, report, catalog, stored) + stale(policy, catalog))


def stale(policy: Policy, catalog: Catalog, now: datetime | None = None) -> list[Condition]:
    if not policy.alerts or not policy.alerts.no_success_hours:
        return []
    limit = policy.alerts.no_success_hours
    now = now or datetime.now(UTC)
    out = []
    for row in catalog.status(now):
        if row["client"] != policy.client or row["policy"] != policy.policy:
            continue
        age = row["success_age_hours"]
        # a source that never succeeded gets the same grace from its first run
        since_first = (now - datetime.fromisoformat(row["first_run"])).total_seconds() / 3600
        late = age > limit if age is not None else since_first > limit
        out.append(Condition(f"{policy.client}/{row['source']}/no-success", late,
                             f"{policy.client}/{row['source']} has had no successful backup for "
                             f"{'ever' if age is None else f'{age:.0f} hours'} (limit {limit:g} h)"))
    return out


def kind(key: str) -> str:
    """The condition kind of an alert key: ``acme/docs/change-rate`` → ``change-rate``, ``acme/quota90`` →
    ``quota``."""
    last = key.rpartition("/")[2]
    return "quota" if last.startswith("quota") else last


def deliver(policy: Policy, catalog: Catalog, conditions: list[Condition]) -> list[str]:
    """Send the conditions that just became active and that the policy's ``alerts`` asks for; return their keys.
    Every transition is recorded (status, metrics and reports show it) whether or not it is sent."""
    sent = []
    for c in conditions:
        if not catalog.alert_transition(c.key, c.active, c.summary):
            continue
        if policy.alerts is None or kind(c.key) not in policy.alerts.conditions:
            log.info("condition %s: %s (not an alert: the policy's alerts do not ask for it)", c.key, c.summary)
            continue
        sent.append(c.key)
        log.warning("ALERT %s: %s", c.key, c.summary)
        payload = {"key": c.key, "summary": c.summary, "policy": policy.policy, "client": policy.client,
                   "host": socket.gethostname(), "time": datetime.now(UTC).isoformat()}
        if policy.alerts.webhook:
            try:
                req = urllib.request.Request(policy.alerts.webhook, data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
            except OSError as e:
                log.error("alert %s: webhook %s failed: %s", c.key, policy.alerts.webhook, e)
        if policy.alerts.email:
            try:
                _email(policy, c, payload)
            except (OSError, smtplib.SMTPException) as e:
                log.error("alert %s: e-mail through %s failed: %s", c.key, policy.alerts.email.smtp, e)
    return sent


def _email(policy: Policy, c: Condition, payload: dict) -> None:
    cfg = policy.alerts.email if policy.alerts else None
    assert cfg is not None  # only called when the policy has e-mail alerts
    send_email(cfg, f"[Do'BaaS] {c.summary[:150]}", f"{c.summary}\n\n" + json.dumps(payload, indent=2))


def send_email(cfg: EmailAlerts, subject: str, body: str) -> None:
    """One message to a policy's alert recipients, through its SMTP relay (OSError / SMTPException on failure)."""
    host, _, port = cfg.smtp.rpartition(":")
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg.set_content(body)
    with smtplib.SMTP(host or cfg.smtp, int(port or 25), timeout=10) as smtp:
        if cfg.starttls:
            smtp.starttls()
        if cfg.username:
            password = os.environ.get(cfg.password_env or "", "")
            if cfg.password_file:
                with open(cfg.password_file, encoding="utf-8") as f:
                    password = f.read().rstrip("\n")
            smtp.login(cfg.username, password)
        smtp.send_message(msg)
