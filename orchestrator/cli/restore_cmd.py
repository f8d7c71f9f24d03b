"""``dobaas restore image``: write a snapshot's disk image back to a file or device."""

from __future__ import annotations

import time

import click

from orchestrator.cbt.image import restore_image
from orchestrator.cli.common import emit_json, human_bytes, json_option, open_vault, progress_bar, vault_option
from orchestrator.errors import UsageError


@click.group("restore")
def restore_group() -> None:
    """Restore from snapshots."""


@restore_group.command("image")
@click.argument("snapshot")
@vault_option
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="File or block device to write.")
@click.option("--item", help="Which image of the snapshot (default: the only one).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@json_option
def image_cmd(snapshot: str, vault_path: str, output: str, item: str | None, overwrite: bool, as_json: bool) -> None:
    """Restore the disk image of SNAPSHOT (a unique id prefix is enough)."""
    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    images = [i for i in snap.items if i["type"] == "image"]
    if item:
        images = [i for i in images if i["name"] == item]
    if len(images) != 1:
        names = ", ".join(i["name"] for i in snap.items if i["type"] == "image") or "none"
        raise UsageError(f"snapshot {snap.id[:12]} has image items: {names}; choose one with --item")
    t0 = time.monotonic()
    with progress_bar(f"restore {snap.name}", images[0]["size"], not as_json) as advance:
        st = restore_image(vault, images[0], output, overwrite, progress=advance,
                           what=f"snapshot {snap.id[:12]} item {images[0]['name']}")
    secs = time.monotonic() - t0
    res = {"id": snap.id, "item": images[0]["name"], "output": output, "size": images[0]["size"],
           "bytes_written": st.bytes_written, "seconds": round(secs, 3)}
    if as_json:
        emit_json(res)
    else:
        click.echo(f"restored {snap.id[:12]} ({snap.name}, {images[0]['name']}) to {output}: "
                   f"{human_bytes(res['size'])} in {secs:.1f} s, every chunk authenticated")


def register(cli: click.Group) -> None:
    cli.add_command(restore_group)
