"""PowerShell scripts shipped as ``.ps1`` files inside a plugin package, and how one is invoked with its
parameters: the script's text, unchanged, in a script block, followed by its parameters as PowerShell
literals. A Windows administrator can read each script, and run it by hand with the same parameters."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from importlib import resources

from orchestrator.errors import BadInput

#: the longest command line Windows accepts (cmd.exe and CreateProcess: 8191 characters)
MAX_COMMAND_LINE = 8191
POWERSHELL = "powershell.exe"
POWERSHELL_ARGS = ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"]

Value = str | int | bool | list[str] | None


@dataclass(frozen=True)
class Script:
    """One shipped script: its file name (``Get-HvVm.ps1``) and its text."""

    name: str
    text: str

    @classmethod
    def load(cls, package: str, name: str) -> Script:
        text = resources.files(package).joinpath("scripts", name).read_text(encoding="utf-8")
        return cls(name, text.replace("\r\n", "\n"))


def literal(value: Value) -> str:
    """A Python value as a PowerShell literal: single-quoted strings ('' inside), integers, $true/$false,
    $null, and @('a','b') arrays of strings."""
    if value is None:
        return "$null"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list):
        return "@(" + ",".join(literal(v) for v in value) + ")"
    raise TypeError(f"no PowerShell literal for {type(value).__name__}")


def invocation(script: Script, params: dict[str, Value]) -> str:
    """``& { <script text> } -Name 'value' …``: the script runs as a script block with its own param() block."""
    args = "".join(f" -{k} {literal(v)}" for k, v in params.items() if v is not None)
    return f"& {{\n{script.text.rstrip()}\n}}{args}"


def encoded(text: str) -> str:
    """-EncodedCommand's argument: base64 of the UTF-16LE text."""
    return base64.b64encode(text.encode("utf-16-le")).decode("ascii")


def command_line(script: Script, params: dict[str, Value]) -> list[str]:
    """The arguments of powershell.exe for this script; refused before sending when Windows would refuse it."""
    enc = encoded(invocation(script, params))
    length = len(POWERSHELL) + sum(len(a) + 1 for a in POWERSHELL_ARGS) + len(enc) + 1
    if length > MAX_COMMAND_LINE:
        raise BadInput(f"{script.name} with these parameters is {length} characters once encoded, over Windows' "
                       f"limit of {MAX_COMMAND_LINE}")
    return [*POWERSHELL_ARGS, enc]
