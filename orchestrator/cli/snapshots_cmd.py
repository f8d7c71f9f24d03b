"""``dobaas snapshots``: list snapshots by date."""

from __future__ import annotations

import click

from orchestrator.cli.common import emit_json, human_bytes, json_option, local_time, open_vault, vault_option
from orchestrator.errors import EXIT_DAMAGE, EXIT_OK


@click.command("snapshots")
@vault_option
@click.option("--name", help="Only snapshots with this name.")
@click.option("--source", help="Only snapshots of this policy source.")
@json_option
def snapshots_cmd(vault_path: str, name: str | None, source: str | None, as_json: bool) -> int:
    """List snapshots, oldest first. Damaged manifests are listed too, and make the exit code 3."""
    vault = open_vault(vault_path)
    snaps, broken = vault.list_snapshots()
    if name:
        snaps = [s for s in snaps if s.name == name]
    if source:
        snaps = [s for s in snaps if s.meta.get("source") == source or s.name == source]
    rows: list[dict] = [
        {
            "id": s.id, "time": s.time, "name": s.name, "hostname": s.hostname, "parent": s.parent,
            "client": s.meta.get("client"), "source": s.meta.get("source"), "plugin": s.meta.get("plugin"),
            "items": [{"name": i["name"], "type": i["type"], "size": i["size"]} for i in s.items],
            "size": sum(i["size"] for i in s.items), "stats": s.stats,
        }
        for s in snaps
    ]
    damaged: list[dict] = [{"id": sid, "damaged": True, "error": err} for sid, err in broken]
    if as_json:
        emit_json(rows + damaged)
    else:
        click.echo(f"{'ID':12}  {'TIME':19}  {'NAME':24}  {'SIZE':>10}  MODE")
        for r in rows:
            click.echo(f"{r['id'][:12]}  {local_time(r['time'])}  {r['name'][:24]:24}  "
                       f"{human_bytes(r['size']):>10}  {r['stats'].get('mode', '')}")
        for d in damaged:
            click.echo(f"{d['id'][:12]}  DAMAGED: {d['error']}")
    return EXIT_DAMAGE if broken else EXIT_OK


def register(cli: click.Group) -> None:
    cli.add_command(snapshots_cmd)
