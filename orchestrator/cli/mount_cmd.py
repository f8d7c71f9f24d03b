"""``dobaas mount``: browse snapshots as folders (read-only FUSE), filesystems inside disk images included."""

from __future__ import annotations

import sys

import click

from orchestrator.cli.common import emit_json, json_option, open_vault, vault_option
from orchestrator.errors import NotFound, UsageError


@click.command("mount")
@click.argument("args", nargs=-1, metavar="[SNAPSHOT] MOUNTPOINT")
@vault_option
@click.option("--client", help="Only this client's snapshots (default: every snapshot of the vault).")
@click.option("--filesystems", is_flag=True,
              help="With a SNAPSHOT: also mount the partitions of its disk images read-only, in NAME.img.d/pN "
                   "(ext4, XFS, Btrfs, FAT, NTFS).")
@click.option("--unmount", "unmount_only", is_flag=True,
              help="Unmount MOUNTPOINT and everything below it (after a mount whose process was killed).")
@json_option
def mount_cmd(args: tuple[str, ...], vault_path: str, client: str | None, filesystems: bool, unmount_only: bool,
              as_json: bool) -> None:
    """Mount the vault's snapshots read-only on MOUNTPOINT: CLIENT/SOURCE[/UNIT]/DATE folders (and a `latest`
    link per source), each holding its file trees as they were, its disk images as NAME.img and its dumps as
    files; or only SNAPSHOT's content. Runs until interrupted (Ctrl-C, SIGTERM), then unmounts."""
    from orchestrator.mount.serve import clean_up, serve
    from orchestrator.mount.tree import SnapshotView, by_source, snapshot_root

    if unmount_only:
        if len(args) != 1:
            raise UsageError("--unmount takes the MOUNTPOINT only")
        done = clean_up(args[0])
        if as_json:
            emit_json({"unmounted": done})
        else:
            click.echo("\n".join(f"unmounted {p}" for p in done) or f"nothing mounted on {args[0]}")
        return
    if len(args) not in (1, 2):
        raise UsageError("usage: dobaas mount [SNAPSHOT] MOUNTPOINT")
    snapshot, mountpoint = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    if snapshot and client:
        raise UsageError("give either a SNAPSHOT or --client")
    if filesystems and not snapshot:
        raise UsageError("--filesystems goes with one SNAPSHOT (each image's partitions are mounted)")
    vault = open_vault(vault_path)
    view = SnapshotView(vault)
    if snapshot:
        snap = vault.resolve(snapshot)
        root = snapshot_root(view, snap)
        what = f"snapshot {snap.id[:12]} ({snap.name})"
    else:
        snaps, _ = vault.list_snapshots()
        if client:
            snaps = [s for s in snaps if s.name.split("/")[0] == client]
            if not snaps:
                raise NotFound(f"no snapshot of client {client!r} in {vault.backend.location}")
        root = by_source(view, snaps)
        what = f"{len(snaps)} snapshot(s)"

    def ready(partitions: list[str]) -> None:
        if as_json:
            emit_json({"mountpoint": mountpoint, "partitions": partitions})
        else:
            click.echo(f"{what} mounted read-only on {mountpoint}" +
                       "".join(f"\n  filesystem {p}" for p in partitions) + "\nCtrl-C (or SIGTERM) unmounts.")
        sys.stdout.flush()  # a script waits for this line before it reads the mount

    serve(view, root, mountpoint, filesystems, ready)


def register(cli: click.Group) -> None:
    cli.add_command(mount_cmd)
