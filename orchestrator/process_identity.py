"""Who holds something (a vault lock, a running job): host, pid and the process's start time, so a pid that the
system reused for another program is not taken for the holder still running."""

from __future__ import annotations

import os
import socket


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])  # fields after the command name, which may hold spaces


def me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pstart": start_time(os.getpid())}


def is_gone(host: str, pid: int, pstart: int | None) -> bool:
    """True only when we can tell: the holder ran on this host and that process no longer runs."""
    if host != socket.gethostname():
        return False
    now = start_time(pid)
    return now is None or (pstart is not None and now != pstart)
