"""Rendering: the Jinja2 templates and the filters that show sizes, times (Paris time) and states."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from orchestrator.portal.business_days import PARIS

templates = Jinja2Templates(directory=os.path.join(os.path.dirname(__file__), "templates"))


def size_text(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(PARIS).strftime("%Y-%m-%d %H:%M")


def _due(iso: str | None) -> str:
    """A deadline at midnight shown as the day it ends."""
    if not iso:
        return "—"
    return (datetime.fromisoformat(iso).astimezone(PARIS) - timedelta(seconds=1)).strftime("%Y-%m-%d (end of day)")


def _mtime(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, PARIS).strftime("%Y-%m-%d %H:%M") if ns else "—"


def _hours(h: float | None) -> str:
    return "never" if h is None else (f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days")


templates.env.filters.update(
    size=size_text, when=_when, due=_due, mtime=_mtime, hours=_hours,
    state=lambda s: (s or "").replace("_", " "),
    parent=lambda p: p.rsplit("/", 1)[0] or "/")


def page(request: Request, name: str, title: str, status: int = 200, **values) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {
        "title": title, "user": getattr(request.state, "user", None), "csrf": getattr(request.state, "csrf", ""),
        **values}, status_code=status)
