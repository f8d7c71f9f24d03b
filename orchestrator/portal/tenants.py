"""What the portal knows of each client beyond the catalog: its policies (a directory of policy files, the same
ones the daemon runs), hence its vault and passphrase, its subscribed volume, its schedule and its provider
window; and the few settings the contract lets the client change itself, validated as `dobaas policy check`
validates them before the file is replaced."""

from __future__ import annotations

import glob
import io
import logging
import os
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from orchestrator.errors import BadInput, DobaasError, NotFound
from orchestrator.policy.budget import DAILY_CHANGE_BUDGET
from orchestrator.policy.model import Policy, load_policy, next_time, parse_policy
from orchestrator.policy.preflight import preflight
from orchestrator.policy.window import window_state
from orchestrator.units import parse_size

if TYPE_CHECKING:
    from orchestrator.catalog.db import Catalog
    from orchestrator.vault.repository import Vault

log = logging.getLogger("dobaas.portal")
#: the sources whose exclusions the client edits (the plugins with an ``exclude`` list)
EXCLUDING_PLUGINS = ("files", "shares")


class Tenants:
    def __init__(self, policies_dir: str | None) -> None:
        self.dir = policies_dir
        self._vaults: dict[tuple[str, str], Vault] = {}
        self._parsed: dict[str, tuple[tuple[int, int, int], Policy | None]] = {}
        self._lock = threading.RLock()  # vault() holds it while policies() reads the cache

    def policies(self, tenant: str) -> list[Policy]:
        """The tenant's valid policies. A file is parsed again when it changed (size or time), so a policy edited
        by the provider counts at once, and a directory of hundreds of clients is not parsed on every page."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.dir, "*.y*ml"))) if self.dir else []:
            p = self._load(path)
            if p is not None and p.client == tenant:
                out.append(p)
        return out

    def _load(self, path: str) -> Policy | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            known = self._parsed.get(path)
        if known is not None and known[0] == key:
            return known[1]
        try:
            policy: Policy | None = load_policy(path)
        except DobaasError as e:
            log.warning("policy %s skipped: %s", path, str(e).splitlines()[0])
            policy = None
        with self._lock:
            self._parsed[path] = (key, policy)
        return policy

    def policy(self, tenant: str, name: str) -> Policy:
        for p in self.policies(tenant):
            if p.policy == name:
                return p
        raise NotFound(f"no policy {name!r}")

    def vault(self, tenant: str, location: str) -> Vault:
        """The tenant's vault at ``location`` (a snapshot's), opened with the passphrase of the tenant's policy
        that writes there; kept open for the next request."""
        from orchestrator.vault.repository import Vault

        with self._lock:
            if (tenant, location) in self._vaults:
                return self._vaults[(tenant, location)]
            p = self.policy_for_vault(tenant, location)
            v = self._vaults[(tenant, location)] = Vault.open(p.backend(), p.passphrase() or "")
            return v

    def policy_for_vault(self, tenant: str, location: str) -> Policy:
        """The tenant's policy that writes to the vault at ``location`` (its access and passphrase)."""
        for p in self.policies(tenant):
            if p.vault.rstrip("/") == location.rstrip("/"):
                return p
        raise NotFound(f"no policy of {tenant} writes to the vault of this snapshot: ask the provider")

    def notify(self, tenant: str, subject: str, body: str) -> list[str]:
        """E-mail the alert recipients of the tenant's policies; returns who was reached (failures are logged)."""
        import smtplib

        from orchestrator.alerts.notify import send_email

        reached: list[str] = []
        for p in self.policies(tenant):
            cfg = p.alerts.email if p.alerts else None
            if cfg is None or set(cfg.to) <= set(reached):
                continue
            try:
                send_email(cfg, subject, body)
                reached += [a for a in cfg.to if a not in reached]
            except (OSError, smtplib.SMTPException) as e:
                log.error("notification to %s through %s failed: %s", ", ".join(cfg.to), cfg.smtp, e)
        return reached

    # ---- the dashboard -------------------------------------------------------------------------------------
    def dashboard(self, catalog: Catalog, tenant: str, now: datetime) -> dict:
        """Per source: last success and its age, next run, saved volume, the last day's change rate against the
        0.2% budget; and the volume used against the subscribed one."""
        status = {s["source"]: s for s in catalog.status(now, client=tenant)}
        snaps = catalog.snapshots(client=tenant)
        latest: dict[str, dict] = {}
        for s in snaps:
            latest[s["source"]] = s
        jobs = catalog.jobs(limit=2000, client=tenant)
        rows = []
        subscribed = 0
        names: set[str] = set(status) | set(latest)
        schedule: dict[str, str | None] = {}
        for p in self.policies(tenant):
            subscribed += parse_size(p.quota, "quota") if p.quota else 0
            nxt = _next_run(p, now)
            for cfg in p.source_configs:
                names.add(cfg.name)
                schedule[cfg.name] = nxt
        volume = 0
        for name in sorted(names):
            st = status.get(name, {})
            size = sum(i.get("size") or 0 for i in latest[name]["items"]) if name in latest else 0
            volume += size
            base = catalog.first_snapshot_size(tenant, name) or 0
            ok = [j for j in jobs if j["source"] == name and j["status"] in ("ok", "partial")]
            rate = ok[0]["bytes_stored"] / base if ok and base and len(ok) > 1 else None
            rows.append({"source": name, "last_success": st.get("last_success"),
                         "age_hours": st.get("success_age_hours"), "last_status": st.get("last_status"),
                         "next_run": schedule.get(name), "volume": size, "change_rate": rate,
                         "over_budget": rate is not None and rate > DAILY_CHANGE_BUDGET})
        return {"sources": rows, "volume": volume, "subscribed": subscribed or None, "budget": DAILY_CHANGE_BUDGET}

    # ---- settings the client may change --------------------------------------------------------------------
    def settings(self, tenant: str) -> list[dict]:
        out = []
        for p in self.policies(tenant):
            fields = p.schedule.split() if p.schedule else []
            out.append({"policy": p.policy, "window": p.window,
                        "time": f"{int(fields[1]):02d}:{int(fields[0]):02d}" if _fixed_time(fields) else "",
                        "schedule": p.schedule,
                        "emails": list(p.alerts.email.to) if p.alerts and p.alerts.email else None,
                        "excludes": {c.name: list(getattr(c, "exclude", [])) for c in p.source_configs
                                     if c.plugin in EXCLUDING_PLUGINS}})
        return out

    def update_settings(self, tenant: str, policy_name: str, at: str | None, emails: list[str] | None,
                        excludes: dict[str, list[str]]) -> Policy:
        """Change the run time (inside the provider's window), the alert e-mails and the exclusions of one of
        the tenant's policies. The new text is checked as `dobaas policy check` checks a file, then replaces
        the old one atomically; on any problem the old file stays and the problems are raised (file, line)."""
        from ruamel.yaml import YAML

        policy = self.policy(tenant, policy_name)
        yaml = YAML()  # round trip: the provider's comments and layout stay
        with open(policy.file, encoding="utf-8") as f:
            doc = yaml.load(f)
        if at is not None and at != "":
            try:
                hh, mm = (int(x) for x in at.split(":"))
                when = datetime.now().astimezone().replace(hour=hh, minute=mm, second=0, microsecond=0)
            except ValueError:
                raise BadInput(f"time {at!r}: expected HH:MM") from None
            if policy.window and not window_state(policy.window, when)[0]:
                raise BadInput(f"{at} is outside the provider's backup window {policy.window}")
            fields = (policy.schedule or "0 0 * * *").split()
            if not _fixed_time(fields):
                raise BadInput("this policy's schedule is not a daily time: ask the provider to change it")
            doc["schedule"] = " ".join([str(mm), str(hh), *fields[2:]])
        if emails is not None:
            if not (doc.get("alerts") and doc["alerts"].get("email")):
                raise BadInput("e-mail alerts are not set up for this policy: ask the provider")
            doc["alerts"]["email"]["to"] = emails
        for i, src in enumerate(doc["sources"]):
            if src.get("name") in excludes:
                if src.get("plugin") not in EXCLUDING_PLUGINS:
                    raise BadInput(f"source {src.get('name')} has no exclusions")
                doc["sources"][i]["exclude"] = excludes[src["name"]]
        buf = io.StringIO()
        yaml.dump(doc, buf)
        text = buf.getvalue()
        new = parse_policy(text, policy.file)  # raises PolicyError: file:line: field: message
        problems, _found = preflight(new, False)
        if problems:
            raise BadInput("\n".join(problems))
        tmp = f"{policy.file}.portal-tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, os.stat(policy.file).st_mode & 0o7777)
        os.replace(tmp, policy.file)
        return new


def _fixed_time(fields: list[str]) -> bool:
    return len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit()


def _next_run(p: Policy, now: datetime) -> str | None:
    if not p.schedule:
        return None
    t = next_time(p.schedule, now.astimezone())
    if t is None:
        return None
    if p.window:
        inside, _end, start = window_state(p.window, t)
        t = t if inside else start
    return t.astimezone(UTC).isoformat()
