"""``dobaas diff``: what changed between two snapshots (from listings and block maps, no content read)."""

from __future__ import annotations

import click

from orchestrator.cli.common import emit_json, human_bytes, json_option, open_vault, vault_option


@click.command("diff")
@click.argument("snap1")
@click.argument("snap2")
@click.argument("path", required=False)
@vault_option
@json_option
def diff_cmd(snap1: str, snap2: str, path: str | None, vault_path: str, as_json: bool) -> None:
    """Entries added (+), removed (-), modified (M) or changed in metadata only (m) from SNAP1 to SNAP2, under
    PATH when given; for disk images, the byte ranges that differ."""
    from orchestrator.restore.diff import diff_snapshots

    vault = open_vault(vault_path)
    res = diff_snapshots(vault, vault.resolve(snap1), vault.resolve(snap2), path)
    if as_json:
        emit_json(res)
        return
    for item in res["items"]:
        if "status" in item:
            click.echo(f"item {item['item']}: {item['status']}")
        elif item["type"] == "tree":
            for mark, key in (("+", "added"), ("-", "removed"), ("M", "modified"), ("m", "metadata_only")):
                for p in item[key]:
                    click.echo(f"{mark} {item['item']}:{p}")
        elif item["type"] == "image":
            click.echo(f"image {item['item']}: {len(item['changed_ranges'])} range(s), "
                       f"{human_bytes(item['changed_bytes'])} changed")
        else:
            click.echo(f"{item['type']} {item['item']}: {'changed' if item['changed'] else 'unchanged'}")


def register(cli: click.Group) -> None:
    cli.add_command(diff_cmd)
