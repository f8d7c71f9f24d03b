"""Incident tickets and their contractual clocks [9]: one reference per ticket (INC-2026-00042); the interruption
counts from the ticket's time when the client confirms in writing within 30 minutes (else from the
confirmation); a closure is notified to the client, who has 24 hours to contest it (then it stands accepted); the
incident report (causes, fixes, resolution time) is due 20 French business days after the closure."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from orchestrator.catalog.portal_tables import incident_events, incidents
from orchestrator.errors import BadInput
from orchestrator.portal.accounts import User, iso
from orchestrator.portal.business_days import deadline_after
from orchestrator.portal.scoped import row_with_events

CONFIRM_WITHIN = timedelta(minutes=30)
CONTEST_WITHIN = timedelta(hours=24)
REPORT_BUSINESS_DAYS = 20


def clocks(row: dict, now: datetime) -> dict:
    """What the contract's clocks say of a ticket at ``now``: its state, when the interruption counts from, the
    contest deadline, the resolution time, the report's deadline and whether it is late."""
    opened = datetime.fromisoformat(row["opened"])
    confirmed = datetime.fromisoformat(row["confirmed"]) if row["confirmed"] else None
    closed = datetime.fromisoformat(row["closed"]) if row["closed"] else None
    start = None
    if confirmed is not None:
        start = opened if confirmed - opened <= CONFIRM_WITHIN else confirmed
    out: dict = {"interruption_start": iso(start) if start else None, "confirm_by": iso(opened + CONFIRM_WITHIN),
                 "state": "open", "contest_until": None, "resolution_minutes": None, "report_due": None,
                 "report_late": False}
    if closed is None:
        return out
    contest_until = closed + CONTEST_WITHIN
    out["state"] = "accepted" if now >= contest_until else "closed"
    out["contest_until"] = iso(contest_until)
    if start is not None:
        out["resolution_minutes"] = round(max((closed - start).total_seconds(), 0) / 60)
    due = deadline_after(closed, REPORT_BUSINESS_DAYS)
    out["report_due"] = iso(due)
    filed = datetime.fromisoformat(row["report_filed"]) if row["report_filed"] else None
    out["report_late"] = (filed or now) > due
    return out


class Incidents:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, user: User, tenant: str, title: str, description: str, now: datetime) -> dict:
        """A new ticket. Opened by the client on the portal, it is the client's written confirmation too."""
        title = title.strip()
        if not title:
            raise BadInput("an incident needs a title")
        for _attempt in range(5):  # two tickets opened at the same instant: the unique number decides
            try:
                with self.engine.begin() as conn:
                    number = (conn.execute(select(func.max(incidents.c.number))
                                           .where(incidents.c.year == now.year)).scalar() or 0) + 1
                    ref = f"INC-{now.year}-{number:05d}"
                    key = conn.execute(insert(incidents).values(
                        reference=ref, year=now.year, number=number, tenant=tenant, opened_by=user.login,
                        opened=iso(now), title=title[:300], description=description,
                        confirmed="" if user.staff else iso(now), closed="", contested="", report_causes="",
                        report_fixes="", report_filed="")).inserted_primary_key
                    assert key is not None
                    self._event(conn, key[0], user, "opened", now, title)
                    if not user.staff:
                        self._event(conn, key[0], user, "confirmed", now, "opened by the client on the portal")
                return self.get(user, ref, now)
            except IntegrityError:
                continue
        raise BadInput("could not number the ticket; try again")

    def list(self, user: User, now: datetime) -> list[dict]:
        q = select(incidents).order_by(incidents.c.opened.desc())
        if not user.staff:
            q = q.where(incidents.c.tenant == user.tenant)
        with self.engine.connect() as conn:
            return [{**dict(r), **clocks(dict(r), now)} for r in conn.execute(q).mappings()]

    def get(self, user: User, reference: str, now: datetime) -> dict:
        """A ticket with its events; another tenant's ticket is NotFound, like one that does not exist."""
        row, events = row_with_events(self.engine, user, incidents, incidents.c.reference, reference,
                                      incident_events, incident_events.c.incident_id, f"no incident {reference}")
        return {**row, **clocks(row, now), "events": events}

    def act(self, user: User, reference: str, action: str, now: datetime, note: str = "",
            causes: str = "", fixes: str = "") -> dict:
        """confirm (client), close (staff), contest (client, within 24 h of the closure), report (staff)."""
        inc = self.get(user, reference, now)
        values: dict = {}
        if action == "confirm":
            if user.staff:
                raise BadInput("only the client confirms an incident in writing")
            if inc["confirmed"]:
                raise BadInput(f"{reference} is confirmed already")
            values = {"confirmed": iso(now)}
        elif action == "close":
            if not user.staff:
                raise BadInput("a technician closes an incident")
            if inc["closed"]:
                raise BadInput(f"{reference} is closed already")
            values = {"closed": iso(now)}
        elif action == "contest":
            if user.staff:
                raise BadInput("only the client contests a closure")
            if inc["state"] != "closed":
                raise BadInput(f"{reference} cannot be contested: " + (
                    "it is not closed" if inc["state"] == "open" else
                    f"the 24 hours to contest its closure ended at {inc['contest_until'][:16]}"))
            values = {"closed": "", "contested": iso(now)}
        elif action == "report":
            if not user.staff:
                raise BadInput("a technician files the incident report")
            if not inc["closed"]:
                raise BadInput(f"{reference} is not closed: the report comes after the closure")
            if not causes.strip() or not fixes.strip():
                raise BadInput("the report states the causes and the fixes")
            values = {"report_causes": causes, "report_fixes": fixes, "report_filed": iso(now)}
        else:
            raise BadInput(f"unknown action {action!r}")
        with self.engine.begin() as conn:
            conn.execute(update(incidents).where(and_(incidents.c.id == inc["id"])).values(**values))
            self._event(conn, inc["id"], user, {"confirm": "confirmed", "close": "closed", "contest": "contested",
                                                "report": "report"}[action], now, note)
            if action == "close":  # the closure is notified to the client on its portal (and in its audit)
                self._event(conn, inc["id"], user, "notified", now,
                            f"closure notified to {inc['tenant']}: 24 hours to contest it")
        return self.get(user, reference, now)

    def note(self, user: User, incident_id: int, event: str, note: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            self._event(conn, incident_id, user, event, now, note)

    @staticmethod
    def _event(conn, incident_id: int, user: User, event: str, now: datetime, note: str) -> None:
        conn.execute(insert(incident_events).values(incident_id=incident_id, time=iso(now), login=user.login,
                                                    event=event, note=note))
