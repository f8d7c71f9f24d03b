"""``dobaas prune``: apply retention, then reclaim space unless a backup is running."""

from __future__ import annotations

import click

from orchestrator.cli.common import (
    catalog_option,
    emit_json,
    human_bytes,
    json_option,
    open_catalog,
    open_vault,
    vault_option,
)
from orchestrator.vault.prune import prune


@click.command("prune")
@vault_option
@click.option("--keep-last", type=click.IntRange(min=1), required=True, help="Snapshots to keep per name.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@catalog_option
@json_option
def prune_cmd(vault_path: str, keep_last: int, dry_run: bool, catalog_url: str | None, as_json: bool) -> None:
    """Keep the newest N snapshots of each name, forget the others and free unreferenced data. The catalog
    forgets them too, so browsing never offers a snapshot that is gone."""
    vault = open_vault(vault_path)
    rep = prune(vault, keep_last, dry_run)
    if not dry_run and rep.removed:
        open_catalog(catalog_url).forget_missing(set(vault.snapshot_ids()))
    if as_json:
        emit_json(rep.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"kept {len(rep.kept)} snapshot(s), {verb} {len(rep.removed)}")
    if rep.gc.ran:
        click.echo(f"space {'reclaimable' if dry_run else 'reclaimed'}: {human_bytes(rep.gc.bytes_freed)} "
                   f"({rep.gc.packs_deleted} pack(s) deleted, {rep.gc.packs_repacked} repacked, "
                   f"{rep.gc.orphan_packs_deleted} orphan(s))")
    else:
        click.echo(f"space reclaim deferred: {rep.gc.deferred_reason}; it runs at the next prune")


def register(cli: click.Group) -> None:
    cli.add_command(prune_cmd)
