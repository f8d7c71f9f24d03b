"""Waiting for vSphere tasks by polling their ``info`` through the PropertyCollector, with a deadline, and
turning a failed task into a one-line error that names what was being done."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.plugin.errors import DobaasError
from plugins.vmware.connection import Session
from plugins.vmware.inventory import properties

TASK_TIMEOUT = 1800.0  # snapshot removal with consolidation can take long on a busy datastore


class TaskFailed(DobaasError):
    def __init__(self, what: str, fault: Any) -> None:
        self.fault = fault
        super().__init__(f"{what} failed: {fault_text(fault)}")


def fault_text(fault: Any) -> str:
    """``ApplicationQuiesceFault: <the host's message>`` (the class says what kind, the message why)."""
    kind = type(fault).__name__.rsplit(".", 1)[-1]
    msg = getattr(fault, "msg", None) or ""
    return f"{kind}: {msg}" if msg and not msg.startswith("*types.") and msg != kind else kind


def wait(session: Session, task: Any, what: str, timeout: float = TASK_TIMEOUT) -> Any:
    """The task's result once it succeeds; TaskFailed with the server's fault when it fails."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        info = properties(session, task, ["info.state", "info.error", "info.result"])
        state = str(info.get("info.state"))
        if state == "success":
            return info.get("info.result")
        if state == "error":
            err = info.get("info.error")
            raise TaskFailed(what, getattr(err, "fault", err))
        if time.monotonic() > deadline:
            raise DobaasError(f"{what}: the task did not finish within {timeout:.0f} s (still {state})")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
