"""Points in time as technicians type them for a point-in-time restore: 'YYYY-MM-DD HH:MM:SS' in this
machine's local time (as mariadb-binlog reads --stop-datetime), shown back the same way."""

from __future__ import annotations

from datetime import datetime

from orchestrator.plugin.errors import UsageError

FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_local_time(text: str, option: str = "--to-time") -> float:
    """The epoch of ``text``; a UsageError naming ``option`` when it is not a real local date and time."""
    try:
        return datetime.strptime(text, FORMAT).timestamp()
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected 'YYYY-MM-DD HH:MM:SS' (this machine's local time)") from None


def show_local_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime(FORMAT)
