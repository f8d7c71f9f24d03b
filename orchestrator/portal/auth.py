"""Who is asking: a browser session (an HttpOnly, SameSite=Strict cookie, a CSRF token in every form) or an API
bearer token. Until a default password is changed, nothing but the password change is served."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from orchestrator.portal.accounts import User
from orchestrator.portal.context import Portal

COOKIE = "dobaas_session"
CSRF_REFUSED = ("the form is stale or did not come from this portal (CSRF check failed): reload the page and "
                "try again")


class LoginNeeded(Exception):
    """A browser without a valid session: sent to the login page."""


class PasswordChangeNeeded(Exception):
    """A default password is still in use: sent to the password form (403 on the API)."""


def portal(request: Request) -> Portal:
    return request.app.state.portal


def web_session(request: Request) -> tuple[User, str]:
    """(user, csrf token) of the browser's session, whatever its password state (the password form uses it)."""
    token = request.cookies.get(COOKIE)
    p = portal(request)
    found = p.accounts.session(token, "web", p.now()) if token else None
    if found is None:
        raise LoginNeeded()
    request.state.user = found[0]
    request.state.csrf = found[1]
    return found


def web_user(session: WebSession) -> User:
    if session[0].must_change:
        raise PasswordChangeNeeded()
    return session[0]


def staff_user(user: WebUser) -> User:
    if not user.staff:
        raise HTTPException(403, "technicians only")
    return user


def check_csrf(request: Request, token: str) -> None:
    """Every form posts the session's CSRF token; a form from another site cannot know it."""
    if not hmac.compare_digest(token or "", getattr(request.state, "csrf", "") or "\0"):
        raise HTTPException(403, CSRF_REFUSED)


def api_session(request: Request) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    p = portal(request)
    found = p.accounts.session(token.strip(), "api", p.now()) if scheme.lower() == "bearer" and token else None
    if found is None:
        raise HTTPException(401, "a valid bearer token is needed (POST /api/v1/session)",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.user = found[0]
    return found[0]


def api_user(user: ApiSession) -> User:
    if user.must_change:
        raise HTTPException(403, "the default password must be changed first (POST /api/v1/password)")
    return user


WebSession = Annotated[tuple[User, str], Depends(web_session)]
WebUser = Annotated[User, Depends(web_user)]
StaffUser = Annotated[User, Depends(staff_user)]
ApiSession = Annotated[User, Depends(api_session)]
ApiUser = Annotated[User, Depends(api_user)]
