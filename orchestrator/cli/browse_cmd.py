"""``dobaas ls`` and ``dobaas find``: browse backed-up files by date, from the catalog (no passphrase needed)."""

from __future__ import annotations

import stat
from datetime import datetime
from typing import TYPE_CHECKING

import click

from orchestrator.cli.common import (
    catalog_option,
    emit_json,
    human_bytes,
    json_option,
    local_time,
    open_catalog,
    parse_when,
)
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.catalog.db import Catalog

_TYPE_CHAR = {"d": "d", "l": "l", "h": "-", "f": "-", "c": "c", "b": "b", "p": "p", "s": "s"}


def _fmt_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M") if ns else "-"


policy_option = click.option(
    "--policy", "policy_file", type=click.Path(dir_okay=False),
    help="Browse the catalog this policy records into (its `catalog:`), unless --catalog is given.")


def _catalog(catalog_url: str | None, policy_file: str | None) -> Catalog:
    """The catalog named by --catalog (or DOBAAS_CATALOG), else by the policy's ``catalog:``, else the default."""
    if policy_file and not catalog_url:
        from orchestrator.policy.model import load_policy

        catalog_url = load_policy(policy_file).catalog
    return open_catalog(catalog_url)


@click.command("ls")
@click.argument("args", nargs=-1)
@click.option("--source", help="With --at: the source to browse.")
@click.option("--at", "at", help="With --source: the latest snapshot at or before 'YYYY-MM-DD HH:MM'.")
@policy_option
@catalog_option
@json_option
def ls_cmd(args: tuple[str, ...], source: str | None, at: str | None, policy_file: str | None,
           catalog_url: str | None, as_json: bool) -> None:
    """List a directory of a snapshot: ``ls SNAPSHOT [PATH]`` or ``ls --source NAME --at DATE [PATH]``."""
    catalog = _catalog(catalog_url, policy_file)
    if at or source:
        if not (at and source):
            raise UsageError("--at and --source go together")
        if len(args) > 1:
            raise UsageError("with --at, give at most one PATH")
        snap = catalog.snapshot_at(source, parse_when(at, "--at", end_of_unit=True))
        path = args[0] if args else None
    else:
        if not args:
            raise UsageError("give a SNAPSHOT id, or --source NAME --at DATE")
        snap = catalog.snapshot(args[0])
        path = args[1] if len(args) > 1 else None
    rows = catalog.ls(snap, path)
    if as_json:
        emit_json({"snapshot": snap["id"], "time": snap["time"], "source": snap["source"], "path": path,
                   "entries": rows})
        return
    click.echo(f"snapshot {snap['id'][:12]} of {snap['source']} at {local_time(snap['time'])}: {path or '(roots)'}")
    for r in rows:
        mode = _TYPE_CHAR.get(r["type"], "?") + stat.filemode(r["mode"])[1:]
        click.echo(f"{mode} {r['owner'] or '-':8} {r['grp'] or '-':8} {r['size']:>12} {_fmt_time(r['mtime_ns'])} "
                   f"{r['name'] if path else r['path']}{'/' if r['type'] == 'd' else ''}")


@click.command("find")
@click.argument("pattern")
@click.option("--source", help="Only this source.")
@click.option("--since", help="Only snapshots taken since this date ('YYYY-MM-DD [HH:MM]').")
@policy_option
@catalog_option
@json_option
def find_cmd(pattern: str, source: str | None, since: str | None, policy_file: str | None, catalog_url: str | None,
             as_json: bool) -> None:
    """Find files across snapshots. PATTERN is a glob on the file name (e.g. '*.xlsx'), or on the whole path
    when it contains '/'."""
    catalog = _catalog(catalog_url, policy_file)
    rows = catalog.find(pattern, source, parse_when(since, "--since") if since else None)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        n = r["snapshot_count"]
        click.echo(f"{r['path']}  {human_bytes(r['size'])}  modified {_fmt_time(r['mtime_ns'])}  in {n} snapshot(s) "
                   f"from {local_time(r['first_time'])} to {local_time(r['last_time'])} "
                   f"(latest {r['last_snapshot'][:12]})")
    if not rows:
        click.echo(f"no match in the catalog {catalog.shown}")


def register(cli: click.Group) -> None:
    cli.add_command(ls_cmd)
    cli.add_command(find_cmd)
