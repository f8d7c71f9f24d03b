"""The JSON API under /api/v1, for scripts and tests: the same operations and rules as the pages, a bearer token
instead of the cookie (so no CSRF exposure), and nothing but the password change until a default one is changed."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from orchestrator.errors import BadInput
from orchestrator.portal import operations as ops
from orchestrator.portal.accounts import LoginRefused, User
from orchestrator.portal.auth import ApiSession, ApiUser, portal

router = APIRouter(prefix="/api/v1")


class Credentials(BaseModel):
    login: str = Field(max_length=100)
    password: str = Field(max_length=1000)


class PasswordChange(BaseModel):
    old_password: str = Field(max_length=1000)
    new_password: str = Field(max_length=1000)


class RestoreIn(BaseModel):
    snapshot_id: str = ""
    paths: list[str] = Field(default_factory=list, max_length=10_000)
    kind: Literal["files", "tree", "vm", "database"] = "files"
    urgency: Literal["critical", "high", "normal", "low"] = "normal"
    description: str = Field(default="", max_length=10_000)
    tenant: str = ""  # technicians: the client the request is for


class Move(BaseModel):
    to: Literal["planned", "in_progress", "awaiting_check", "closed"]
    note: str = Field(default="", max_length=10_000)
    planned_for: str = ""
    quote: str = ""


class IncidentIn(BaseModel):
    title: str = Field(max_length=300)
    description: str = Field(default="", max_length=100_000)
    tenant: str = ""


class IncidentAct(BaseModel):
    action: Literal["confirm", "close", "contest", "report"]
    note: str = ""
    causes: str = ""
    fixes: str = ""


def _json(obj: object) -> Response:
    """Plain data (rows of the catalog) serialized directly: a 10,000-entry listing in milliseconds, where the
    generic response encoder takes most of a second."""
    return Response(json.dumps(obj, ensure_ascii=False), media_type="application/json")


def _audit(request: Request, user: User, action: str, detail: str = "") -> None:
    p = portal(request)
    p.accounts.record(p.now(), user.login, user.tenant, action, detail,
                      request.client.host if request.client else "")


@router.post("/session")
def session(request: Request, body: Credentials) -> dict:
    p = portal(request)
    try:
        user = p.accounts.authenticate(body.login, body.password, p.now())
    except LoginRefused as e:
        p.accounts.record(p.now(), body.login, "", "login refused", f"api: {e}",
                          request.client.host if request.client else "")
        raise _http(401, str(e)) from None
    token, _csrf = p.accounts.open_session(user, "api", p.now())
    _audit(request, user, "login", "api")
    return {"token": token, "must_change_password": user.must_change, "role": user.role, "tenant": user.tenant}


@router.post("/password")
def password(request: Request, user: ApiSession, body: PasswordChange) -> dict:
    p = portal(request)
    p.accounts.change_password(user, body.old_password, body.new_password)
    _audit(request, user, "password changed", "api")
    token, _csrf = p.accounts.open_session(User(**{**user.__dict__, "must_change": False}), "api", p.now())
    return {"token": token, "must_change_password": False}


@router.get("/snapshots")
def snapshots(request: Request, user: ApiUser, day: str | None = None, source: str | None = None,
              tenant: str | None = None) -> list[dict]:
    return ops.snapshots(portal(request), user, day, source, tenant)


@router.get("/snapshots/{snapshot_id}")
def snapshot(request: Request, user: ApiUser, snapshot_id: str) -> dict:
    return ops.public_snapshot(ops.snapshot(portal(request), user, snapshot_id))


@router.get("/snapshots/{snapshot_id}/tree")
def tree(request: Request, user: ApiUser, snapshot_id: str, path: str = "") -> Response:
    return _json({"snapshot": snapshot_id, "path": path or None,
                  "entries": ops.tree(portal(request), user, snapshot_id, path or None)})


@router.get("/snapshots/{snapshot_id}/download")
def download(request: Request, user: ApiUser, snapshot_id: str, path: str) -> Response:
    name, chunks = ops.download(portal(request), user, snapshot_id, path)
    _audit(request, user, "download", f"{snapshot_id[:12]} {path}")
    return StreamingResponse(chunks, media_type="application/x-tar",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'.encode(
                                 "ascii", "replace").decode()})


@router.get("/search")
def search(request: Request, user: ApiUser, q: str) -> Response:
    return _json(ops.search(portal(request), user, q))


@router.get("/jobs")
def jobs(request: Request, user: ApiUser) -> list[dict]:
    p = portal(request)
    return [{k: v for k, v in j.items() if k != "holder"} for j in p.catalog.jobs(limit=500, client=p.scope(user))]


@router.get("/dashboard")
def dashboard(request: Request, user: ApiUser) -> dict:
    p = portal(request)
    if user.staff:
        raise _http(400, "the dashboard is a client's; technicians read /api/v1/restores and /api/v1/incidents")
    return p.tenants.dashboard(p.catalog, user.tenant, p.now())


@router.post("/restores", status_code=201)
def new_restore(request: Request, user: ApiUser, body: RestoreIn) -> dict:
    p = portal(request)
    if body.kind == "files" and not user.staff:
        req = ops.request_restore(p, user, body.snapshot_id, body.paths, body.urgency, body.description)
    else:
        owner = body.tenant if user.staff else user.tenant
        if not owner:
            raise BadInput("say which client the request is for (tenant)")
        sid = p.catalog.snapshot_of(body.snapshot_id, owner)["id"] if body.snapshot_id else ""
        req = p.requests.open(user, owner, body.kind, body.urgency, p.now(), snapshot_id=sid, paths=body.paths,
                              description=body.description)
    _audit(request, user, "request opened", f"request {req['id']} ({body.kind})")
    return req


@router.get("/restores")
def restores(request: Request, user: ApiUser) -> list[dict]:
    return portal(request).requests.list(user)


@router.get("/restores/{request_id}")
def restore(request: Request, user: ApiUser, request_id: int) -> dict:
    return portal(request).requests.get(user, request_id)


@router.post("/restores/{request_id}/state")
def move(request: Request, user: ApiUser, request_id: int, body: Move) -> dict:
    p = portal(request)
    out = p.requests.move(user, request_id, body.to, p.now(), body.note, body.planned_for, body.quote)
    _audit(request, user, "request moved", f"request {request_id} to {body.to}")
    return out


@router.get("/incidents")
def incidents(request: Request, user: ApiUser) -> list[dict]:
    p = portal(request)
    return p.incidents.list(user, p.now())


@router.post("/incidents", status_code=201)
def new_incident(request: Request, user: ApiUser, body: IncidentIn) -> dict:
    p = portal(request)
    owner = body.tenant if user.staff else user.tenant
    if not owner:
        raise BadInput("say which client the incident is for (tenant)")
    inc = p.incidents.open(user, owner, body.title, body.description, p.now())
    _audit(request, user, "incident opened", inc["reference"])
    return inc


@router.get("/incidents/{reference}")
def incident(request: Request, user: ApiUser, reference: str) -> dict:
    p = portal(request)
    return p.incidents.get(user, reference, p.now())


@router.post("/incidents/{reference}/actions")
def incident_act(request: Request, user: ApiUser, reference: str, body: IncidentAct) -> dict:
    p = portal(request)
    out = ops.incident_action(p, user, reference, body.action, body.note, body.causes, body.fixes)
    _audit(request, user, f"incident {body.action}", reference)
    return out


def _http(status: int, detail: str):
    from fastapi import HTTPException

    return HTTPException(status, detail)
