"""Job hooks: commands run before and after a source (or a whole policy), e.g. to stop an application that has
no plugin, or to tell a monitoring system. Declared in policies (``hooks: {pre, post, timeout, on_error}``), run
as the daemon's user, never through a shell (the command line is split as a shell would split it), with the job
described in the environment; a failing ``pre`` fails the job unless ``on_error: continue``; ``post`` gets the
result (``DOBAAS_STATUS``, ``DOBAAS_SNAPSHOT``, ``DOBAAS_ERRORS``) and its failure is a warning."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import DobaasError

log = logging.getLogger(__name__)


class Hooks(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    pre: list[str] = Field(default_factory=list)
    post: list[str] = Field(default_factory=list)
    timeout: int = Field(default=300, ge=1, le=24 * 3600)
    on_error: Literal["fail", "continue"] = "fail"


class HookFailed(DobaasError):
    """A pre hook failed: the job does not run (unless on_error: continue)."""


def run_hooks(hooks: Hooks | None, phase: str, env: dict[str, str]) -> list[str]:
    """Run the ``phase`` commands in order; warnings to report. A failing pre hook raises HookFailed (unless
    on_error: continue); a failing post hook is a warning."""
    if hooks is None:
        return []
    warnings = []
    for command in getattr(hooks, phase):
        problem = _run_one(command, hooks.timeout, {**os.environ, **env, "DOBAAS_PHASE": phase})
        if problem is None:
            continue
        message = f"{phase} hook {command!r}: {problem}"
        if phase == "pre" and hooks.on_error == "fail":
            raise HookFailed(message + " (the job did not run)")
        warnings.append(message)
        log.warning("%s", message)
    return warnings


def _run_one(command: str, timeout: int, env: dict[str, str]) -> str | None:
    try:
        argv = shlex.split(command)
    except ValueError as e:
        return f"cannot be split into arguments ({e})"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)  # a hook may print anything: its bytes never fail the job
    except subprocess.TimeoutExpired:
        return f"still running after {timeout} s: stopped"
    except OSError as e:
        return f"cannot run ({e.strerror or e})"
    for line in (p.stdout + p.stderr).splitlines()[-20:]:
        log.info("hook %s: %s", argv[0], line)
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()
        return f"exited {p.returncode}" + (f": {last[-1]}" if last else "")
    return None
