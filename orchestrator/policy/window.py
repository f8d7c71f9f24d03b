"""Backup windows ('22:00-06:00', local time, may wrap midnight). The daemon enforces a window's end by firing the
run's AbortSignal (orchestrator/backup/abort.py)."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*-\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_window(text: str) -> tuple[time, time]:
    m = _WINDOW.match(text)
    if not m:
        raise ValueError("a window is 'HH:MM-HH:MM' (local time, may wrap midnight), e.g. '22:00-06:00'")
    h1, m1, s1, h2, m2, s2 = (int(x) if x else 0 for x in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or s1 > 59 or s2 > 59:
        raise ValueError(f"window {text!r}: hours 0-23, minutes and seconds 0-59")
    start, end = time(h1, m1, s1), time(h2, m2, s2)
    if start == end:
        raise ValueError(f"window {text!r} is empty")
    return start, end


def window_state(text: str, now: datetime) -> tuple[bool, datetime, datetime]:
    """(inside, end of the current or next window, start of the next window) around ``now`` (aware)."""
    start, end = parse_window(text)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in (-1, 0, 1):
        s = datetime.combine((day + timedelta(days=offset)).date(), start, now.tzinfo)
        e = datetime.combine((day + timedelta(days=offset)).date(), end, now.tzinfo)
        if e <= s:
            e += timedelta(days=1)
        if s <= now < e:
            return True, e, s
    nxt = datetime.combine(day.date(), start, now.tzinfo)
    if nxt <= now:
        nxt += timedelta(days=1)
    e = datetime.combine(nxt.date(), end, now.tzinfo)
    return False, e if e > nxt else e + timedelta(days=1), nxt
