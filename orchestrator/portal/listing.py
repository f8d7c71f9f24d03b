"""A directory's rows as HTML, built in Python: a folder of 10,000 entries renders in a fraction of the time the
template engine takes for the same markup (the benchmark holds the page to 300 ms of server time)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from urllib.parse import quote

from markupsafe import Markup

from orchestrator.portal.business_days import PARIS
from orchestrator.portal.views import size_text


def rows_html(entries: list[dict], snapshot_id: str, under: str | None) -> Markup:
    """One <tr> per entry: a tick box (its path), its name (a link into a folder), size, time, a download link."""
    minutes: dict[int, str] = {}
    out = []
    base = f"/snapshots/{snapshot_id}"
    for e in entries:
        path = e["path"]
        attr, link = escape(path, quote=True), quote(path, safe="/")
        shown = escape(e["name"] if under else path)
        if e["type"] == "d":
            name = f'<a href="{base}?path={link}">{shown}/</a>'
            size = ""
        else:
            name, size = shown, size_text(e["size"])
        minute = e["mtime_ns"] // 60_000_000_000
        when = minutes.get(minute)
        if when is None:
            when = minutes[minute] = datetime.fromtimestamp(minute * 60, PARIS).strftime(
                "%Y-%m-%d %H:%M") if e["mtime_ns"] else "—"
        out.append(f'<tr><td><input type="checkbox" name="paths" value="{attr}"></td><td>{name}</td>'
                   f'<td class="num">{size}</td><td>{when}</td><td><a href="{base}/download?path={link}">download</a>'
                   "</td></tr>")
    return Markup("\n".join(out))
