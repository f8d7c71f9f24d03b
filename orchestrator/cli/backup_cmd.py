"""``dobaas backup image``: capture a raw disk image, in full or from a list of changed extents."""

from __future__ import annotations

import click

from orchestrator.backup.image import backup_image_file
from orchestrator.cbt.extents import load_extents_file
from orchestrator.cbt.reader import FileBlockReader
from orchestrator.cli.common import (
    emit_json,
    human_bytes,
    json_option,
    open_vault,
    parse_size,
    progress_bar,
    vault_option,
)
from orchestrator.errors import UsageError


@click.group("backup")
def backup_group() -> None:
    """Take backups."""


@backup_group.command("image")
@click.argument("file", type=click.Path(dir_okay=False))
@vault_option
@click.option("--name", required=True, help="Snapshot name (incrementals chain on the same name).")
@click.option("--changed-extents", "extents_path", type=click.Path(dir_okay=False),
              help="JSON list of [offset, length] byte ranges changed since the previous snapshot of NAME.")
@click.option("--read-limit", help="Cap the read rate, e.g. 200MiB/s (spares the production disk).")
@click.option("--lock-wait", type=float, default=300.0, show_default=True,
              help="Seconds to wait while maintenance holds the vault.")
@json_option
def image_cmd(file: str, vault_path: str, name: str, extents_path: str | None, read_limit: str | None,
              lock_wait: float, as_json: bool) -> None:
    """Back up the raw image FILE (a file or a block device)."""
    from orchestrator.vault.snapshot import name_problem

    if problem := name_problem(name):
        raise UsageError(f"--name: {problem}")
    probe = FileBlockReader(file)
    size = probe.size
    probe.close()
    extents = load_extents_file(extents_path, size) if extents_path else None
    rate = parse_size(read_limit, "--read-limit") if read_limit else None
    vault = open_vault(vault_path)
    with progress_bar(f"backup {name}", size, not as_json) as advance:
        res = backup_image_file(vault, file, name, read_rate=rate, extents=extents, lock_wait=lock_wait,
                                progress=advance)
    if as_json:
        emit_json(res)
        return
    for w in res["warnings"]:
        click.echo(f"warning: {w}", err=True)
    speed = res["bytes_read"] / res["seconds"] / 2**20 if res["seconds"] else 0
    click.echo(f"snapshot {res['id'][:12]} ({name}, {res['mode']}) saved")
    click.echo(f"  image {human_bytes(res['size'])}, read {human_bytes(res['bytes_read'])} "
               f"in {res['seconds']:.1f} s ({speed:.0f} MiB/s), added to vault {human_bytes(res['bytes_stored'])}")


def register(cli: click.Group) -> None:
    cli.add_command(backup_group)
