"""What every command shares: the vault option, the passphrase, JSON output, sizes and progress bars."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import click

from orchestrator.errors import BadInput, UsageError
from orchestrator.units import human_bytes, parse_size  # noqa: F401  (re-exported for the commands)
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot

vault_option = click.option(
    "--vault", "vault_path", envvar="DOBAAS_VAULT", metavar="PATH",
    help="Vault location (or DOBAAS_VAULT).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
catalog_option = click.option(
    "--catalog", "catalog_url", envvar="DOBAAS_CATALOG", metavar="PATH|URL",
    help="Catalog database (or DOBAAS_CATALOG; default /var/lib/dobaas/catalog.db for root).",
)


_exit_without_teardown = False


def exit_without_teardown() -> None:
    """The command is done and its process holds large structures (a run's listings of 100,000 entries):
    ``main`` flushes the output and ends the process without freeing them one by one (0.15 s)."""
    global _exit_without_teardown
    _exit_without_teardown = True


def teardown_skipped() -> bool:
    return _exit_without_teardown


def open_catalog(url: str | None):
    from orchestrator.catalog.db import Catalog, to_url

    return Catalog(to_url(url) if url else None)


def parse_when(text: str, what: str, end_of_unit: bool = False) -> datetime:
    """'YYYY-MM-DD', 'YYYY-MM-DD HH:MM' or 'YYYY-MM-DD HH:MM:SS', local time unless an offset is given.
    With ``end_of_unit``, the whole day, minute or second written counts ("at 22:00" includes 22:00:03)."""
    from datetime import timedelta

    units = (("%Y-%m-%d %H:%M:%S", timedelta(seconds=1)), ("%Y-%m-%d %H:%M", timedelta(minutes=1)),
             ("%Y-%m-%d", timedelta(days=1)))
    for fmt, unit in units:
        try:
            start = datetime.strptime(text.strip(), fmt).astimezone()
        except ValueError:
            continue
        return start + unit - timedelta(microseconds=1) if end_of_unit else start
    try:
        return datetime.fromisoformat(text.strip()).astimezone()
    except ValueError:
        raise BadInput(f"{what}: cannot read date {text!r} (use 'YYYY-MM-DD HH:MM')") from None


def read_passphrase(confirm: bool = False, var: str = "DOBAAS_PASSPHRASE", prompt: bool = True) -> str:
    """From DOBAAS_PASSPHRASE, DOBAAS_PASSPHRASE_FILE, DOBAAS_PASSPHRASE_COMMAND (a command that prints it: a
    password manager, a vault agent), or an interactive prompt (``var``: another family of variables, such as
    the destination's of a copy)."""
    if var in os.environ:
        return os.environ[var]
    command = os.environ.get(f"{var}_COMMAND")
    if command:
        return passphrase_from_command(command, f"{var}_COMMAND")
    path = os.environ.get(f"{var}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().rstrip("\n")
        except OSError as e:
            raise BadInput(f"cannot read {var}_FILE {path}: {e.strerror}") from None
    if not prompt or not sys.stdin.isatty():
        raise UsageError(f"no passphrase: set {var}, {var}_FILE or {var}_COMMAND" + (
            ", or run interactively" if prompt else ""))
    pw = getpass.getpass("Vault passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != pw:
        raise UsageError("the two passphrases differ")
    return pw


def passphrase_from_command(command: str, what: str) -> str:
    """Run ``command`` (split like a shell would, never through one) and take its output as the passphrase."""
    import shlex
    import subprocess

    try:
        p = subprocess.run(shlex.split(command), capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        raise BadInput(f"{what}: {command!r} could not run ({e})") from None
    if p.returncode != 0:
        why = p.stderr.decode(errors="replace").strip().splitlines()
        raise BadInput(f"{what}: {command!r} exited {p.returncode}" + (f": {why[-1]}" if why else ""))
    text = p.stdout.decode("utf-8", "surrogateescape").rstrip("\n")
    if not text:
        raise BadInput(f"{what}: {command!r} printed nothing")
    return text


def new_passphrase(file: str | None, env: str | None) -> str:
    """A new passphrase from --new-passphrase-file / --new-passphrase-env, or typed twice at a terminal."""
    if file and env:
        raise UsageError("give --new-passphrase-file or --new-passphrase-env, not both")
    if env:
        if env not in os.environ or not os.environ[env]:
            raise UsageError(f"--new-passphrase-env names {env}, which is not set or empty")
        return os.environ[env]
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                text = f.read().rstrip("\n")
        except OSError as e:
            raise BadInput(f"--new-passphrase-file {file}: {e.strerror}") from None
        if not text:
            raise BadInput(f"--new-passphrase-file {file} is empty")
        return text
    if not sys.stdin.isatty():
        raise UsageError("no new passphrase: give --new-passphrase-file or --new-passphrase-env, or run interactively")
    pw = getpass.getpass("New passphrase: ")
    if getpass.getpass("Repeat new passphrase: ") != pw or not pw:
        raise UsageError("the two passphrases differ or are empty")
    return pw


def open_vault(path: str | None, provider: bool = False) -> Vault:
    """A vault by path or URL (sftp:// access from DOBAAS_SFTP_KNOWN_HOSTS / _IDENTITY / _PASSWORD(_FILE), s3://
    from DOBAAS_S3_ENDPOINT and AWS_*). ``provider``: the provider's maintenance commands (they may delete)."""
    from orchestrator.vault.backend.opener import open_backend

    if not path:
        raise UsageError("no vault given: use --vault PATH or set DOBAAS_VAULT")
    return Vault.open(open_backend(path, provider=provider), read_passphrase())


_ISO_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def select_snapshots(snaps: list[Snapshot], names: tuple[str, ...] | list[str], since: str | None,
                     latest: bool) -> list[Snapshot]:
    """The snapshots (oldest first) named ``names`` or below them (client/source), taken since ``since``, only the
    latest of each name with ``latest``: the selection of `copy` and `export`."""
    if names:
        snaps = [s for s in snaps if any(s.name == n or s.name.startswith(n.rstrip("/") + "/") for n in names)]
    if since:
        start = parse_when(since, "--since")
        snaps = [s for s in snaps if s.datetime >= start]
    if latest:
        last = {s.name: s for s in snaps}  # oldest first: the last one of each name wins
        snaps = list(last.values())
    return snaps


def in_local_time(obj: Any) -> Any:
    """``obj`` with every instant (an ISO 8601 string with an offset: the vault and catalog keep UTC) shown in
    this machine's time zone with its offset, so that every command speaks one time zone."""
    if isinstance(obj, str):
        if 20 <= len(obj) <= 32 and obj[:1].isdigit() and _ISO_INSTANT.fullmatch(obj):
            return datetime.fromisoformat(obj).astimezone().isoformat()
        return obj
    if isinstance(obj, dict):
        return {k: in_local_time(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [in_local_time(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    """Instants in local time with their offset. Indented for a person at a terminal; compact for scripts (the C
    encoder: indenting falls back to the pure-Python one, ten times slower on a 10,000-entry listing)."""
    obj = in_local_time(obj)
    if sys.stdout.isatty():
        click.echo(json.dumps(obj, indent=2, default=str))
    else:
        click.echo(json.dumps(obj, default=str, separators=(",", ":")))


def local_time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A byte progress bar on stderr when it is a terminal; yields an ``advance(nbytes)`` callback or None."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (  # imported here: rich costs ~70 ms of start-up that scripts should not pay
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    cols = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*cols, transient=True, console=None) as p:
        task = p.add_task(label, total=total)
        yield lambda n: p.advance(task, n)
