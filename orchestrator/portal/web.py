"""The pages: server-rendered HTML, forms only (no JavaScript), each form with the session's CSRF token."""

from __future__ import annotations

import shlex
from itertools import groupby
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from orchestrator.errors import BadInput
from orchestrator.portal import operations as ops
from orchestrator.portal.accounts import LoginRefused, User
from orchestrator.portal.auth import COOKIE, StaffUser, WebSession, WebUser, check_csrf, portal
from orchestrator.portal.listing import rows_html
from orchestrator.portal.views import page

router = APIRouter()
Csrf = Annotated[str, Form()]
Text = Annotated[str, Form()]
Opt = Annotated[str, Form()]


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def _audit(request: Request, user: User, action: str, detail: str = "") -> None:
    p = portal(request)
    p.accounts.record(p.now(), user.login, user.tenant, action, detail, _address(request))


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---- login, logout, password -------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return page(request, "login.html", "Log in")


@router.post("/login")
def login(request: Request, login: Text, password: Text) -> Response:
    p = portal(request)
    try:
        user = p.accounts.authenticate(login, password, p.now())
    except LoginRefused as e:
        p.accounts.record(p.now(), login[:100], "", "login refused", str(e), _address(request))
        return page(request, "login.html", "Log in", status=401, error=str(e))
    token, _csrf = p.accounts.open_session(user, "web", p.now())  # always a new one: no session fixation
    p.accounts.record(p.now(), user.login, user.tenant, "login", "web", _address(request))
    resp = _see_other("/password" if user.must_change else "/")
    resp.set_cookie(COOKIE, token, httponly=True, secure=p.secure_cookies, samesite="strict", path="/")
    return resp


@router.post("/logout")
def logout(request: Request, session: WebSession, csrf: Csrf) -> Response:
    check_csrf(request, csrf)
    portal(request).accounts.close_session(request.cookies[COOKIE])
    _audit(request, session[0], "logout")
    resp = _see_other("/login")
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/password", response_class=HTMLResponse)
def password_form(request: Request, session: WebSession) -> Response:
    return page(request, "password.html", "Change your password")


@router.post("/password")
def password(request: Request, session: WebSession, csrf: Csrf, old_password: Text, new_password: Text,
             new_password2: Text) -> Response:
    check_csrf(request, csrf)
    p, user = portal(request), session[0]
    if new_password != new_password2:
        return page(request, "password.html", "Change your password", status=400,
                    error="the two new passwords differ")
    try:
        p.accounts.change_password(user, old_password, new_password)
    except BadInput as e:
        return page(request, "password.html", "Change your password", status=400, error=str(e))
    _audit(request, user, "password changed")
    fresh = User(**{**user.__dict__, "must_change": False})
    token, _csrf = p.accounts.open_session(fresh, "web", p.now())  # every older session ended with the change
    resp = _see_other("/")
    resp.set_cookie(COOKIE, token, httponly=True, secure=p.secure_cookies, samesite="strict", path="/")
    return resp


# ---- client and technician pages ---------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, user: WebUser) -> Response:
    p = portal(request)
    if user.staff:
        return console(request, user)
    notices = [f"{i['reference']} was closed on {i['closed'][:16].replace('T', ' ')} UTC: you may contest the "
               f"closure until {i['contest_until'][:16].replace('T', ' ')} UTC"
               for i in p.incidents.list(user, p.now()) if i["state"] == "closed"]
    return page(request, "dashboard.html", "Your backups", d=p.tenants.dashboard(p.catalog, user.tenant, p.now()),
                notices=notices)


@router.get("/console", response_class=HTMLResponse)
def console(request: Request, user: StaffUser) -> Response:
    p = portal(request)
    return page(request, "console.html", "Console", reqs=p.requests.list(user, open_only=True),
                sources=p.catalog.status(p.now()))


@router.get("/snapshots", response_class=HTMLResponse)
def snapshots(request: Request, user: WebUser, day: str | None = None, tenant: str | None = None) -> Response:
    rows = ops.snapshots(portal(request), user, day or None, tenant=tenant)
    days = [(d, list(g)) for d, g in groupby(rows, key=lambda s: s["time"][:10])]
    return page(request, "snapshots.html", "Backups by date", days=days, day=day, tenant=tenant)


@router.get("/snapshots/{snapshot_id}", response_class=HTMLResponse)
def browse(request: Request, user: WebUser, snapshot_id: str, path: str | None = None) -> Response:
    p = portal(request)
    snap = ops.snapshot(p, user, snapshot_id)
    entries = p.catalog.ls(snap, path or None)
    crumbs: list[tuple[str, str]] = []
    if path:
        head = "" if path.startswith("/") else path.split("/", 1)[0]
        acc = "" if path.startswith("/") else head
        parts = path.strip("/").split("/")[0 if path.startswith("/") else 1:]
        if head:
            crumbs.append((head, head))
        for part in parts:
            acc = f"{acc}/{part}"
            crumbs.append((part, acc))
    return page(request, "browse.html", "Browse a backup", snap=ops.public_snapshot(snap),
                rows=rows_html(entries, snap["id"], path), path=path, crumbs=crumbs)


@router.get("/snapshots/{snapshot_id}/download")
def download(request: Request, user: WebUser, snapshot_id: str, path: Annotated[str, Query()]) -> Response:
    name, chunks = ops.download(portal(request), user, snapshot_id, path)
    _audit(request, user, "download", f"{snapshot_id[:12]} {path}")
    return StreamingResponse(chunks, media_type="application/x-tar",
                             headers={"Content-Disposition": f'attachment; filename="{_ascii(name)}"'})


@router.post("/snapshots/{snapshot_id}/restore-request")
def restore_request(request: Request, user: WebUser, snapshot_id: str, csrf: Csrf, urgency: Text, description: Opt = "",
                    paths: Annotated[list[str] | None, Form()] = None) -> Response:
    check_csrf(request, csrf)
    req = ops.request_restore(portal(request), user, snapshot_id, paths or [], urgency, description)
    _audit(request, user, "restore requested", f"request {req['id']}: {', '.join(req['paths'])[:500]}")
    return _see_other(f"/requests/{req['id']}")


@router.get("/search", response_class=HTMLResponse)
def search(request: Request, user: WebUser, q: str = "") -> Response:
    return page(request, "search.html", "Search across dates", q=q, rows=ops.search(portal(request), user, q))


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, user: WebUser) -> Response:
    p = portal(request)
    return page(request, "jobs.html", "Job history", jobs=p.catalog.jobs(limit=500, client=p.scope(user)))


@router.get("/settings", response_class=HTMLResponse)
def settings_form(request: Request, user: WebUser) -> Response:
    p = portal(request)
    return page(request, "settings.html", "Settings", settings=p.tenants.settings(user.tenant) if user.tenant else [])


@router.post("/settings")
async def settings(request: Request, user: WebUser) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get("csrf", "")))
    p = portal(request)
    if user.staff:
        raise BadInput("the provider changes policies in their files; this form is the client's")
    lines = lambda v: [x.strip() for x in str(v or "").splitlines() if x.strip()]  # noqa: E731
    excludes = {str(k)[8:]: lines(v) for k, v in form.items() if str(k).startswith("exclude:")}
    name = str(form.get("policy", ""))
    try:
        await run_in_threadpool(p.tenants.update_settings, user.tenant, name, str(form.get("time", "")),
                                lines(form["emails"]) if "emails" in form else None, excludes)
    except BadInput as e:
        return page(request, "settings.html", "Settings", status=400, error=str(e),
                    settings=p.tenants.settings(user.tenant))
    _audit(request, user, "settings changed", f"policy {name}")
    return page(request, "settings.html", "Settings", notice="Saved: the next runs follow the new settings.",
                settings=p.tenants.settings(user.tenant))


# ---- restore requests --------------------------------------------------------------------------------------
@router.get("/requests", response_class=HTMLResponse)
def requests_page(request: Request, user: WebUser) -> Response:
    return page(request, "requests.html", "Restore requests", reqs=portal(request).requests.list(user))


@router.post("/requests")
def new_request(request: Request, user: WebUser, csrf: Csrf, kind: Text, urgency: Text, description: Opt = "",
                snapshot_id: Opt = "", tenant: Opt = "") -> Response:
    check_csrf(request, csrf)
    p = portal(request)
    owner = tenant.strip() if user.staff else user.tenant
    if not owner:
        raise BadInput("say which client the request is for")
    if snapshot_id.strip():
        snapshot_id = p.catalog.snapshot_of(snapshot_id.strip(), owner)["id"]
    req = p.requests.open(user, owner, kind, urgency, p.now(), snapshot_id=snapshot_id, description=description)
    _audit(request, user, "request opened", f"request {req['id']} ({kind}) for {owner}")
    return _see_other(f"/requests/{req['id']}")


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, user: WebUser, request_id: int) -> Response:
    r = portal(request).requests.get(user, request_id)
    default = " ".join(["--in-place" if not r["target"] else f"--target {shlex.quote(r['target'])}",
                        *[shlex.quote(x) for x in r["paths"]]]) if r["kind"] == "files" else ""
    return page(request, "request.html", f"Restore request {request_id}", r=r,
                commands=ops.RESTORE_COMMANDS[r["kind"]], default_args=default)


@router.post("/requests/{request_id}/move")
def move_request(request: Request, user: WebUser, request_id: int, csrf: Csrf, to: Text, note: Opt = "",
                 planned_for: Opt = "",
                 quote: Opt = "") -> Response:
    check_csrf(request, csrf)
    p = portal(request)
    p.requests.move(user, request_id, to, p.now(), note=note, planned_for=planned_for, quote=quote)
    _audit(request, user, "request moved", f"request {request_id} to {to}")
    return _see_other(f"/requests/{request_id}")


@router.post("/requests/{request_id}/run")
def run_request(request: Request, user: StaffUser, request_id: int, csrf: Csrf, command: Text,
                arguments: Opt = "") -> Response:
    check_csrf(request, csrf)
    try:
        args = shlex.split(arguments)
    except ValueError as e:
        raise BadInput(f"arguments: {e}") from None
    ops.run_restore(portal(request), user, request_id, command, args)
    _audit(request, user, "restore run", f"request {request_id}: {command} {arguments}"[:500])
    return _see_other(f"/requests/{request_id}")


# ---- incidents ---------------------------------------------------------------------------------------------
@router.get("/incidents", response_class=HTMLResponse)
def incidents_page(request: Request, user: WebUser) -> Response:
    p = portal(request)
    return page(request, "incidents.html", "Incidents", incs=p.incidents.list(user, p.now()))


@router.post("/incidents")
def new_incident(request: Request, user: WebUser, csrf: Csrf, title: Text, description: Opt = "",
                 tenant: Opt = "") -> Response:
    check_csrf(request, csrf)
    p = portal(request)
    owner = tenant.strip() if user.staff else user.tenant
    if not owner:
        raise BadInput("say which client the incident is for")
    inc = p.incidents.open(user, owner, title, description, p.now())
    _audit(request, user, "incident opened", inc["reference"])
    return _see_other(f"/incidents/{inc['reference']}")


@router.get("/incidents/{reference}", response_class=HTMLResponse)
def incident_page(request: Request, user: WebUser, reference: str) -> Response:
    p = portal(request)
    return page(request, "incident.html", f"Incident {reference}", i=p.incidents.get(user, reference, p.now()))


@router.post("/incidents/{reference}/act")
def incident_act(request: Request, user: WebUser, reference: str, csrf: Csrf, action: Text, note: Opt = "",
                 causes: Opt = "",
                 fixes: Opt = "") -> Response:
    check_csrf(request, csrf)
    p = portal(request)
    ops.incident_action(p, user, reference, action, note=note, causes=causes, fixes=fixes)
    _audit(request, user, f"incident {action}", reference)
    return _see_other(f"/incidents/{reference}")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, user: StaffUser) -> Response:
    return page(request, "audit.html", "Audit log", rows=portal(request).accounts.audit_log())


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
