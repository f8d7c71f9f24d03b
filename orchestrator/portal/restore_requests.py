"""Restore requests [7]: complex restores (a directory tree, a virtual server, a database) asked for by the client
or opened by a technician, planned by urgency, carried out by a technician, checked by the client. Every state
change is recorded with who made it and when."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Engine, case, insert, select, update

from orchestrator.catalog.portal_tables import request_events, requests
from orchestrator.errors import BadInput
from orchestrator.portal.accounts import User, iso
from orchestrator.portal.scoped import row_with_events

KINDS = ("files", "tree", "vm", "database")
URGENCIES = ("critical", "high", "normal", "low")
STATES = ("requested", "planned", "in_progress", "awaiting_check", "closed")
#: (from, to) -> who may make the move: a technician plans, starts and hands over; the client confirms or reopens
MOVES = {
    ("requested", "planned"): "staff",
    ("planned", "in_progress"): "staff",
    ("in_progress", "awaiting_check"): "staff",
    ("awaiting_check", "closed"): "client",
    ("awaiting_check", "in_progress"): "client",
}


class RestoreRequests:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, user: User, tenant: str, kind: str, urgency: str, now: datetime, snapshot_id: str = "",
             paths: list[str] | None = None, target: str = "", description: str = "") -> dict:
        if kind not in KINDS:
            raise BadInput(f"kind must be one of {', '.join(KINDS)}")
        if urgency not in URGENCIES:
            raise BadInput(f"urgency must be one of {', '.join(URGENCIES)}")
        with self.engine.begin() as conn:
            key = conn.execute(insert(requests).values(
                tenant=tenant, opened_by=user.login, opened=iso(now), kind=kind, snapshot_id=snapshot_id,
                paths=json.dumps(paths or []), target=target, urgency=urgency, description=description, quote="",
                planned_for="", state="requested", log="")).inserted_primary_key
            assert key is not None
            conn.execute(insert(request_events).values(request_id=key[0], time=iso(now), login=user.login,
                                                       from_state="", to_state="requested", note=description))
        return self.get(user, int(key[0]))

    def list(self, user: User, open_only: bool = False) -> list[dict]:
        """Most urgent first, then oldest first: the technicians' queue."""
        rank = case({u: i for i, u in enumerate(URGENCIES)}, value=requests.c.urgency, else_=len(URGENCIES))
        q = select(requests).order_by(rank, requests.c.opened)
        if not user.staff:
            q = q.where(requests.c.tenant == user.tenant)
        if open_only:
            q = q.where(requests.c.state != "closed")
        with self.engine.connect() as conn:
            return [_request(r) for r in conn.execute(q).mappings()]

    def get(self, user: User, request_id: int) -> dict:
        """A request with its history; another tenant's request is NotFound, like one that does not exist."""
        row, events = row_with_events(self.engine, user, requests, requests.c.id, request_id, request_events,
                                      request_events.c.request_id, f"no restore request {request_id}")
        return {**_request(row), "events": events}

    def move(self, user: User, request_id: int, to: str, now: datetime, note: str = "", planned_for: str = "",
             quote: str = "") -> dict:
        req = self.get(user, request_id)
        who = MOVES.get((req["state"], to))
        if who is None:
            raise BadInput(f"a request {req['state'].replace('_', ' ')} cannot go to {to.replace('_', ' ')}")
        if (who == "staff") != user.staff:
            raise BadInput(f"{'a technician' if who == 'staff' else 'the client'} moves a request from "
                           f"{req['state'].replace('_', ' ')} to {to.replace('_', ' ')}")
        if to == "planned" and not planned_for.strip():
            raise BadInput("say when the restore is planned for")
        if (req["state"], to) == ("awaiting_check", "in_progress") and not note.strip():
            raise BadInput("say what does not work, so the technician knows what to look at")
        values: dict = {"state": to}
        if to == "planned":
            values.update(planned_for=planned_for.strip(), quote=quote.strip())
        with self.engine.begin() as conn:
            conn.execute(update(requests).where(requests.c.id == request_id).values(**values))
            conn.execute(insert(request_events).values(request_id=request_id, time=iso(now), login=user.login,
                                                       from_state=req["state"], to_state=to, note=note))
        return self.get(user, request_id)

    def attach_log(self, user: User, request_id: int, text: str, now: datetime) -> None:
        req = self.get(user, request_id)
        with self.engine.begin() as conn:
            conn.execute(update(requests).where(requests.c.id == request_id)
                         .values(log=(req["log"] + f"--- {iso(now)} {user.login}\n{text}\n")[-1_000_000:]))


def _request(row) -> dict:
    d = dict(row)
    d["paths"] = json.loads(d["paths"] or "[]")
    return d
