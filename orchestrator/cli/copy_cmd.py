"""``dobaas copy``: snapshots copied to a second vault (3-2-1) without reading the sources again."""

from __future__ import annotations

import click

from orchestrator.cli.common import (
    emit_json,
    human_bytes,
    json_option,
    progress_bar,
    read_passphrase,
    select_snapshots,
)


@click.command("copy")
@click.option("--from", "src_path", envvar="DOBAAS_VAULT", metavar="PATH|URL", required=True,
              help="The vault copied from (or DOBAAS_VAULT); its passphrase as for every command.")
@click.option("--to", "dst_path", metavar="PATH|URL", required=True,
              help="The vault copied to; its passphrase from DOBAAS_TO_PASSPHRASE(_FILE|_COMMAND).")
@click.option("--source", "names", multiple=True, metavar="NAME",
              help="Only snapshots of this name or below it (client/source); repeatable.")
@click.option("--since", help="Only snapshots taken since this date (YYYY-MM-DD[ HH:MM]).")
@click.option("--latest", is_flag=True, help="Only the latest snapshot of each name.")
@click.option("--dry-run", is_flag=True, help="List what would be copied.")
@json_option
def copy_cmd(src_path: str, dst_path: str, names: tuple[str, ...], since: str | None, latest: bool, dry_run: bool,
             as_json: bool) -> None:
    """Copy snapshots to another vault: only the chunks it lacks are sent, re-encrypted with its keys; those
    already copied are skipped, so running it after every backup keeps a second copy up to date."""
    from orchestrator.backup.copy_run import id_map_path
    from orchestrator.vault.backend.opener import open_backend
    from orchestrator.vault.copy import IdMap, copy_snapshots, plan_copy
    from orchestrator.vault.repository import Vault

    src = Vault.open(open_backend(src_path), read_passphrase())
    dst = Vault.open(open_backend(dst_path), read_passphrase(var="DOBAAS_TO_PASSPHRASE", prompt=False))
    snaps, broken = src.list_snapshots()
    snaps = select_snapshots(snaps, names, since, latest)
    if dry_run:
        todo, already, _done = plan_copy(src, dst, snaps)
        if as_json:
            emit_json({"would_copy": [{"id": s.id, "name": s.name, "time": s.time} for s in todo],
                       "already": already})
        else:
            for s in todo:
                click.echo(f"would copy {s.id[:12]}  {s.time}  {s.name}")
            click.echo(f"{len(todo)} to copy, {len(already)} already in {dst.backend.location}")
        return
    id_map = IdMap(id_map_path(src.config.id, dst.config.id))
    try:
        with progress_bar("copying", None, not as_json) as advance:
            rep = copy_snapshots(src, dst, snaps, id_map, advance)
    finally:
        id_map.close()
    if as_json:
        emit_json({**rep.to_json(), "damaged_manifests": [sid for sid, _ in broken]})
        return
    click.echo(f"copied {len(rep.copied)} snapshot(s) to {dst.backend.location} ({len(rep.already)} already "
               f"there): {rep.chunks_sent} new chunk(s), {human_bytes(rep.bytes_sent)} sent")
    for sid, why in broken:
        click.echo(f"not copied: snapshot {sid[:12]} has a damaged manifest ({why})", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(copy_cmd)
