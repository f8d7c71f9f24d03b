"""Reading what Windows PowerShell 5.1's ``ConvertTo-Json`` emits: a one-element result is a bare object (the
scripts force arrays with @() but a reader must not rely on it), DateTime is ``"\\/Date(ms)\\/"``, enums are
integers, and the output may be preceded by a byte-order mark or followed by CR/LF."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from orchestrator.errors import DobaasError

_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def parse(text: str, what: str) -> Any:
    text = text.lstrip("\ufeff").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise DobaasError(f"{what}: the answer is not JSON ({e}): {text[:200]!r}") from None


def as_list(value: Any) -> list:
    """A PowerShell result that may be one object, several, or nothing, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def as_datetime(value: Any) -> datetime | None:
    """``"\\/Date(1764576000000)\\/"`` (what json.loads leaves of it: ``/Date(…)/``) or ISO 8601, in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        m = _DATE.match(value)
        if m:
            return datetime.fromtimestamp(int(m.group(1)) / 1000, UTC)
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            pass
    raise DobaasError(f"not a date: {value!r}")
