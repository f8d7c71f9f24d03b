"""The portal's ASGI application: pages and API over one set of services, errors answered the same way
everywhere (404 for what is out of a user's scope), and the headers that keep a browser from framing or
sniffing the pages."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.catalog.db import Catalog, to_url
from orchestrator.errors import DobaasError, NotFound
from orchestrator.portal import api, web
from orchestrator.portal.auth import CSRF_REFUSED, LoginNeeded, PasswordChangeNeeded
from orchestrator.portal.context import Portal
from orchestrator.portal.tenants import Tenants
from orchestrator.portal.views import page

log = logging.getLogger("dobaas.portal")
_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            "Cache-Control": "no-store"}


def create_app(catalog_url: str | None, policies_dir: str | None, secure_cookies: bool = True,
               clock: Callable[[], datetime] | None = None) -> FastAPI:
    portal = Portal(Catalog(to_url(catalog_url) if catalog_url else None), Tenants(policies_dir),
                    secure_cookies=secure_cookies)
    if clock is not None:
        portal.clock = clock
    app = FastAPI(title="Do'BaaS portal", docs_url=None, redoc_url=None, openapi_url="/api/v1/openapi.json")
    app.state.portal = portal
    app.include_router(web.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=os.path.join(os.path.dirname(__file__), "static")), name="static")

    app.add_middleware(_Headers)

    def _is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(LoginNeeded)
    async def login_needed(request: Request, _e: LoginNeeded) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(PasswordChangeNeeded)
    async def change_needed(request: Request, _e: PasswordChangeNeeded) -> Response:
        return RedirectResponse("/password", status_code=303)

    @app.exception_handler(DobaasError)
    async def dobaas_error(request: Request, e: DobaasError) -> Response:
        status = 404 if isinstance(e, NotFound) else 400
        if _is_api(request):
            return JSONResponse({"error": str(e)}, status_code=status)
        return page(request, "error.html", "Not found" if status == 404 else "Cannot do that", status=status,
                    error=str(e))

    @app.exception_handler(OperationalError)
    async def catalog_down(request: Request, e: OperationalError) -> Response:
        """The catalog's database is down or unreachable: one clear answer, the portal stays up and serves again
        as soon as the database is back (the pool reconnects)."""
        log.error("catalog database unreachable: %s", str(e.orig).strip().splitlines()[0] if e.orig else e)
        message = (f"the catalog database ({portal.catalog.shown}) cannot be reached right now; nothing was "
                   "changed: try again in a moment")
        if _is_api(request):
            return JSONResponse({"error": message}, status_code=503)
        return page(request, "error.html", "Temporarily unavailable", status=503, error=message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        if _is_api(request) or e.status_code == 405:
            return JSONResponse({"error": e.detail}, status_code=e.status_code, headers=e.headers)
        return page(request, "error.html", "Refused" if e.status_code == 403 else "Error", status=e.status_code,
                    error=str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> Response:
        if any(err["loc"][-1] == "csrf" for err in e.errors()):  # a form without its token: a forged one
            return page(request, "error.html", "Refused", status=403, error=CSRF_REFUSED)
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'][1:])}: {err['msg']}" for err in e.errors())
        if _is_api(request):
            return JSONResponse({"error": problems}, status_code=422)
        return page(request, "error.html", "Cannot do that", status=422, error=problems)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    return app


class _Headers:
    """Adds the security headers and Server-Timing (the server's time to the response's start) to every
    response. Plain ASGI, not BaseHTTPMiddleware: a streamed body passes through untouched, and a stream that
    fails (a download cut for damage) still fails at the client instead of ending as if complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in _HEADERS.items():
                    if k not in headers:
                        headers[k] = v
                headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the pages and the API (the isolation tests try each one)."""
    return [(m, getattr(r, "path", "")) for router in (web.router, api.router) for r in router.routes
            for m in sorted(getattr(r, "methods", ()) or ()) if m != "HEAD"]
