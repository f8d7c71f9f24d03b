"""``dobaas export``: snapshots handed back in standard formats (end of contract, or a copy for the client)."""

from __future__ import annotations

import sys

import click

from orchestrator.cli.common import (
    emit_json,
    human_bytes,
    json_option,
    open_vault,
    progress_bar,
    select_snapshots,
    vault_option,
)
from orchestrator.errors import EXIT_DAMAGE, NotFound, UsageError


@click.command("export")
@click.argument("snapshot", required=False)
@vault_option
@click.option("--client", help="Every snapshot of this client (see --latest, --since) instead of one SNAPSHOT.")
@click.option("--source", "names", multiple=True, metavar="NAME",
              help="With --client: only snapshots named client/NAME or below; repeatable.")
@click.option("--since", help="With --client: only snapshots taken since this date (YYYY-MM-DD[ HH:MM]).")
@click.option("--latest", is_flag=True, help="With --client: only the latest snapshot of each source.")
@click.option("--format", "formats", multiple=True, metavar="FMT",
              help="tar | dir for file trees (default tar); raw | qcow2 | vhdx | vmdk for disk images (default: "
                   "the hypervisor's own); repeatable, one of each kind.")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Folder to export into (created; an interrupted export into it resumes).")
@json_option
def export_cmd(snapshot: str | None, vault_path: str, client: str | None, names: tuple[str, ...], since: str | None,
               latest: bool, formats: tuple[str, ...], output: str, as_json: bool) -> None:
    """Export SNAPSHOT, or every snapshot of --client, into --output in standard formats readable without
    Do'BaaS: file trees as POSIX tar archives, disk images as raw/qcow2/VHDX/VMDK, database dumps and backup
    files as their product wrote them, VM configurations in the hypervisor's format. MANIFEST.json and SHA256SUMS
    list every file with its SHA-256; LISEZMOI.txt / README.txt say how to read each format."""
    from orchestrator.export.run import export_snapshots, snapshot_bytes
    from orchestrator.plugin.export import IMAGE_FORMATS, TREE_FORMATS

    if bool(snapshot) == bool(client):
        raise UsageError("give either a SNAPSHOT or --client CLIENT")
    if snapshot and (names or since or latest):
        raise UsageError("--source, --since and --latest go with --client")
    tree_fmt = [f for f in formats if f in TREE_FORMATS]
    image_fmt = [f for f in formats if f in IMAGE_FORMATS]
    unknown = [f for f in formats if f not in TREE_FORMATS + IMAGE_FORMATS]
    if unknown or len(tree_fmt) > 1 or len(image_fmt) > 1:
        raise UsageError(f"--format: at most one of {', '.join(TREE_FORMATS)} and one of "
                         f"{', '.join(IMAGE_FORMATS)} (got {', '.join(formats)})")
    vault = open_vault(vault_path)
    if snapshot:
        snaps = [vault.resolve(snapshot)]
        everything = snaps
    else:
        assert client is not None
        listed, broken = vault.list_snapshots()
        everything = [s for s in listed if s.name.split("/")[0] == client]
        if not everything:
            raise NotFound(f"no snapshot of client {client!r} in {vault.backend.location}")
        snaps = select_snapshots(everything, [f"{client}/{n}" for n in names] or [client], since, latest)
        for sid, why in broken:
            click.echo(f"warning: snapshot {sid[:12]} has a damaged manifest and is not exported ({why})", err=True)
    with progress_bar("export", snapshot_bytes(snaps), not as_json) as advance:
        rep = export_snapshots(vault, snaps, output, tree_fmt[0] if tree_fmt else None,
                               image_fmt[0] if image_fmt else None, advance, snapshot_bytes(everything))
    if as_json:
        emit_json(rep.to_json())
    else:
        click.echo(f"exported {rep.snapshots} snapshot(s) to {rep.output}: {rep.files} file(s), "
                   f"{human_bytes(rep.bytes)}" + (f" ({rep.parts_resumed} part(s) done by an earlier run)"
                                                  if rep.parts_resumed else ""))
        if rep.estimate:
            est = rep.estimate
            click.echo(f"throughput {human_bytes(int(rep.throughput_bytes_per_s))}/s: every snapshot "
                       f"({human_bytes(est['bytes'])}) would take {est['days']} day(s) — "
                       + ("within" if est["fits"] else "NOT within") + f" the {est['within_days']}-day obligation")
        for s in rep.skipped:
            click.echo(f"not in the export: {s}", err=True)
        for d in rep.damaged:
            click.echo(f"damaged: {d}", err=True)
    if rep.damaged:
        sys.exit(EXIT_DAMAGE)


def register(cli: click.Group) -> None:
    cli.add_command(export_cmd)
