"""``dobaas catalog …``: rebuild the catalog from the vault alone; show the restore audit trail."""

from __future__ import annotations

import click

from orchestrator.cli.common import catalog_option, emit_json, json_option, open_catalog, open_vault, vault_option


@click.group("catalog")
def catalog_group() -> None:
    """The catalog (metadata index)."""


@catalog_group.command("rebuild")
@vault_option
@catalog_option
@json_option
def rebuild_cmd(vault_path: str, catalog_url: str | None, as_json: bool) -> None:
    """Recreate the catalog's snapshots and file index from the vault (the vault is the source of truth)."""
    from orchestrator.catalog.rebuild import rebuild

    vault = open_vault(vault_path)
    catalog = open_catalog(catalog_url)
    n, files = rebuild(vault, catalog)
    if as_json:
        emit_json({"snapshots": n, "entries": files, "catalog": catalog.url})
    else:
        click.echo(f"catalog {catalog.url}: {n} snapshot(s), {files} file entries indexed from the vault")


@catalog_group.command("restores")
@catalog_option
@json_option
def restores_cmd(catalog_url: str | None, as_json: bool) -> None:
    """Who restored what, when and where (audit trail)."""
    rows = open_catalog(catalog_url).restores()
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['time'][:19]} {r['user']}@{r['host']} {r['status']:8} snapshot {r['snapshot_id'][:12]} "
                   f"{r['paths']} -> {r['target']} ({r['files']} files)")


def register(cli: click.Group) -> None:
    cli.add_command(catalog_group)
