"""``dobaas restore …``: disk images, whole VMs, databases and files, each recorded in the audit trail."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from orchestrator.cli.common import (
    catalog_option,
    emit_json,
    human_bytes,
    json_option,
    open_catalog,
    open_vault,
    progress_bar,
    vault_option,
)
from orchestrator.errors import EXIT_DAMAGE, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, DobaasError, UsageError
from orchestrator.restore.image import restore_image

if TYPE_CHECKING:
    from orchestrator.vault.snapshot import Snapshot

F = TypeVar("F", bound=Callable[..., Any])


@click.group("restore")
def restore_group() -> None:
    """Restore from snapshots. Every restore, whatever its kind and outcome, goes into the audit trail
    (`dobaas catalog restores`)."""


@contextlib.contextmanager
def audited(catalog_url: str | None, snap: Snapshot, kind: str, target: str) -> Iterator[dict]:
    """Record the restore in the catalog's audit trail, done or failed (``detail`` filled by the caller)."""
    detail: dict = {"kind": kind}
    status = "failed"
    try:
        yield detail
        status = "ok"
    except DobaasError as e:
        detail["error"] = str(e)
        raise
    finally:
        try:
            open_catalog(catalog_url).record_restore(snap.id, [kind], target, "new", status, 0,
                                                     int(detail.get("bytes", 0)), detail)
        except Exception as e:  # the restore itself stands; say the trail missed it
            click.echo(f"warning: the restore was not recorded in the audit trail ({e})", err=True)


@restore_group.command("image")
@click.argument("snapshot")
@vault_option
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="File or block device to write.")
@click.option("--item", help="Which image of the snapshot (default: the only one).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@catalog_option
@json_option
def image_cmd(snapshot: str, vault_path: str, output: str, item: str | None, overwrite: bool, catalog_url: str | None,
              as_json: bool) -> None:
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
    with audited(catalog_url, snap, "image", output) as detail, \
            progress_bar(f"restore {snap.name}", images[0]["size"], not as_json) as advance:
        st = restore_image(vault, images[0], output, overwrite, progress=advance,
                           what=f"snapshot {snap.id[:12]} item {images[0]['name']}")
        detail.update(item=images[0]["name"], bytes=st.bytes_written)
    secs = time.monotonic() - t0
    res: dict = {"id": snap.id, "item": images[0]["name"], "output": output, "size": images[0]["size"],
           "bytes_written": st.bytes_written, "seconds": round(secs, 3)}
    if as_json:
        emit_json(res)
    else:
        click.echo(f"restored {snap.id[:12]} ({snap.name}, {images[0]['name']}) to {output}: "
                   f"{human_bytes(res['size'])} in {secs:.1f} s, every chunk authenticated")


@restore_group.command("vm")
@click.argument("snapshot")
@vault_option
@click.option("--as", "new_name", required=True, help="Name of the new virtual machine.")
@click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]), default="qcow2", show_default=True,
              help="KVM: disk image format.")
@click.option("--target-dir",
              help="KVM: where the disk images are written (default /var/lib/libvirt/images). Hyper-V: the "
                   "host's directory for the new VM's disks, e.g. 'D:\\Restore' (default: the original's).")
@click.option("--start", is_flag=True, help="Start (power on) the new VM and wait until it runs.")
@click.option("--uri", help="KVM: libvirt URI; VMware: vCenter/ESXi host (default: the one backed up from).")
@click.option("--host", help="Hyper-V: the host to create the VM on (default: the one backed up from).")
@click.option("--connect", is_flag=True, help="Hyper-V: connect the network adapters (default: disconnected).")
@click.option("--datastore", help="VMware: datastore for the new VM (default: the original's).")
@click.option("--esx-host", help="VMware: ESXi host to run it on.")
@click.option("--pool", help="VMware: resource pool (default: the host's or cluster's root pool).")
@click.option("--folder", help="VMware: VM folder (default: the datacenter's root VM folder).")
@click.option("--datacenter", help="VMware: datacenter (default: the original's).")
@click.option("--user", help="VMware, Hyper-V: user name (default: the policy's).")
@click.option("--password-env", help="VMware, Hyper-V: environment variable with the password (default: the "
              "policy's).")
@catalog_option
@json_option
def vm_cmd(snapshot: str, vault_path: str, new_name: str, fmt: str, target_dir: str | None, start: bool,
           uri: str | None, host: str | None, connect: bool, datastore: str | None, esx_host: str | None,
           pool: str | None, folder: str | None,
           datacenter: str | None, user: str | None, password_env: str | None, catalog_url: str | None,
           as_json: bool) -> None:
    """Restore the virtual machine of SNAPSHOT as a new VM (new name, identity and disk files); the original is
    not touched. Every disk is re-read and checked against the snapshot before the VM is made (VMware: and read
    back from the datastore after upload)."""
    from orchestrator.plugin.base import MachineRestoreOptions
    from orchestrator.restore.vm import restore_vm

    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    options: MachineRestoreOptions = {
        "name": new_name, "format": fmt, "target_dir": target_dir, "start": start, "uri": uri,
        "datastore": datastore, "esx_host": esx_host, "pool": pool, "folder": folder, "datacenter": datacenter,
        "user": user, "password_env": password_env, "host": host, "connect": connect}
    bars: list = []

    def progress(item: str, size: int):
        if as_json:
            return None
        while bars:  # one bar at a time: the previous disk is done
            bars.pop().__exit__(None, None, None)
        cm = progress_bar(f"restore {item}", size, True)
        bars.append(cm)
        return cm.__enter__()

    options["upload_progress"] = progress  # VMware: disks uploaded to the datastore after the local check
    try:
        with audited(catalog_url, snap, "vm", new_name) as detail:
            res = restore_vm(vault, snap, options, progress)
            detail.update(vm=res.get("domain"), bytes=res.get("bytes_written", 0), state=res.get("state"))
    finally:
        for cm in bars:
            cm.__exit__(None, None, None)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"restored {snap.id[:12]} ({snap.name}, {snap.time[:19]}) as {res['domain']}: "
                   f"{len(res['disks'])} disk(s) in {res['seconds']:.1f} s, {res['verified']}; {res['state']}")
        for t, p in res["disks"].items():
            click.echo(f"  {t}: {p}")
        for w in res.get("warnings", []):
            click.echo(f"warning: {w}", err=True)
        if res.get("nics"):
            click.echo(f"network: {res['nics']}")


@restore_group.command("mysql")
@click.argument("snapshot")
@vault_option
@click.option("--as-database", "as_database", help="Create the restored database under this (new) name.")
@click.option("--database", help="Which database of the snapshot (default: the only one).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3306, show_default=True, type=int)
@click.option("--socket", help="Unix socket of the server (instead of host/port).")
@click.option("--user", default="root", show_default=True)
@click.option("--password-env", help="Environment variable holding the password.")
@click.option("--to-time", help="Stop at this local time, 'YYYY-MM-DD HH:MM:SS' (replays the archived logs).")
@click.option("--to-position", help="Stop at this binary-log position, FILE:POS.")
@click.option("--target-datadir", type=click.Path(file_okay=False), help="Physical restore into a data directory.")
@click.option("--with-users", is_flag=True, help="Also create the snapshot's accounts and grants on the server.")
@catalog_option
@json_option
def mysql_cmd(snapshot: str, vault_path: str, as_database: str | None, database: str | None, host: str, port: int,
              socket: str | None, user: str, password_env: str | None, to_time: str | None, to_position: str | None,
              target_datadir: str | None, with_users: bool, catalog_url: str | None, as_json: bool) -> None:
    """Restore a MySQL/MariaDB snapshot into a running server under a new database name, at the snapshot's
    instant or at any point between the previous snapshot and this one; checked against the capture."""
    from orchestrator.restore.database import restore_database

    # the command's values as given: the plugin checks and interprets them (restore contract, docs/plugins.md)
    options = {"as_database": as_database, "database": database, "host": host, "port": port, "socket": socket,
               "user": user, "password_env": password_env, "to_time": to_time, "to_position": to_position,
               "target_datadir": target_datadir, "with_users": with_users}
    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    with audited(catalog_url, snap, "mysql", as_database or target_datadir or "") as detail:
        res = restore_database(vault, snap, "mysql", options)
        detail.update(database=res.get("database"), restored_as=res.get("restored_as"), until=res.get("until"))
    if as_json:
        emit_json(res)
    elif target_datadir:
        click.echo(f"restored {snap.id[:12]} ({snap.name}, {snap.time[:19]}) into {res['target_datadir']}: "
                   f"{len(res['chain'])} backup(s) prepared, {res['tables']} table(s); {res['verified']}")
    else:
        click.echo(f"restored {res['database']} from {snap.id[:12]} ({snap.name}, {snap.time[:19]}) as "
                   f"{res['restored_as']} on {res['server']}, until {res['until']}: {res['tables']} table(s), "
                   f"{sum(res['rows'].values())} row(s) in {res['seconds']:.1f} s; {res['verified']}")


@restore_group.command("mssql")
@click.argument("snapshot")
@vault_option
@click.option("--as-database", "as_database", required=True, help="The restored database's (new) name.")
@click.option("--database", help="Which database the snapshot holds (a check).")
@click.option("--to-time", help="Stop at this local time, 'YYYY-MM-DD HH:MM:SS' (replays the log backups).")
@click.option("--to-lsn", help="Stop before this LSN.")
@click.option("--host", help="SQL Server to restore into (default: the one backed up from).")
@click.option("--port", help="Its port (default: the original's).")
@click.option("--user", help="SQL login (default: the policy's).")
@click.option("--password-env", help="Environment variable holding its password (default: the policy's).")
@click.option("--data-dir", help="Server directory for the data files, e.g. 'D:\\Data' (default: the original's).")
@click.option("--log-dir", help="Server directory for the log file (default: the original's).")
@catalog_option
@json_option
def mssql_cmd(snapshot: str, vault_path: str, as_database: str, database: str | None, to_time: str | None,
              to_lsn: str | None, host: str | None, port: str | None, user: str | None, password_env: str | None,
              data_dir: str | None, log_dir: str | None, catalog_url: str | None, as_json: bool) -> None:
    """Restore a SQL Server snapshot under a new database name, to its last backup or to a point in time covered
    by its log chain; checked with DBCC CHECKDB."""
    from orchestrator.restore.database import restore_database

    options = {"as_database": as_database, "database": database, "to_time": to_time, "to_lsn": to_lsn,
               "host": host, "port": port, "user": user, "password_env": password_env, "data_dir": data_dir,
               "log_dir": log_dir}
    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    with audited(catalog_url, snap, "mssql", as_database) as detail:
        res = restore_database(vault, snap, "mssql", options)
        detail.update(database=res["database"], restored_as=res["restored_as"], until=res["until"])
    if as_json:
        emit_json(res)
    else:
        click.echo(f"restored {res['database']} from {snap.id[:12]} ({snap.name}, {snap.time[:19]}) as "
                   f"{res['restored_as']} on {res['server']}, until {res['until']}: "
                   f"{len(res['backups_applied'])} backup(s) applied in {res['seconds']:.1f} s; {res['verified']}")


@restore_group.command("oracle")
@click.argument("snapshot")
@vault_option
@click.option("--target-host", required=True, metavar="HOST[:PORT]", help="Where the new instance is made (SSH).")
@click.option("--oracle-sid", required=True, help="The new instance's SID (must not exist there).")
@click.option("--to-scn", help="Recover until this SCN (default: the end of the snapshot).")
@click.option("--to-time", help="Recover until this time, 'YYYY-MM-DD HH:MM:SS' on the database host's clock.")
@click.option("--oracle-home", help="ORACLE_HOME on the target (default: the source's).")
@click.option("--staging-dir", help="Directory on the target for the pieces (default: the policy's).")
@click.option("--user", help="SSH user on the target (default: the policy's).")
@click.option("--identity-file", help="SSH private key (default: the policy's).")
@click.option("--known-hosts", help="known_hosts with the target's key (default: the policy's).")
@click.option("--in-place", is_flag=True, help="Allow the source host itself as the target (on purpose).")
@catalog_option
@json_option
def oracle_cmd(snapshot: str, vault_path: str, target_host: str, oracle_sid: str, to_scn: str | None,
               to_time: str | None, oracle_home: str | None, staging_dir: str | None, user: str | None,
               identity_file: str | None, known_hosts: str | None, in_place: bool, catalog_url: str | None,
               as_json: bool) -> None:
    """Restore an Oracle snapshot as a new instance on --target-host with RMAN, to the end of the snapshot or to
    an SCN or time inside it; RESTORE DATABASE VALIDATE checks the result."""
    from orchestrator.restore.database import restore_database

    options = {"target_host": target_host, "oracle_sid": oracle_sid, "to_scn": to_scn, "to_time": to_time,
               "oracle_home": oracle_home, "staging_dir": staging_dir, "user": user, "identity_file": identity_file,
               "known_hosts": known_hosts, "in_place": in_place}
    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    with audited(catalog_url, snap, "oracle", f"{target_host}/{oracle_sid}") as detail:
        res = restore_database(vault, snap, "oracle", options)
        detail.update(database=res["database"], restored_as=res["restored_as"], until=res["until"])
    if as_json:
        emit_json(res)
    else:
        click.echo(f"restored {res['database']} from {snap.id[:12]} ({snap.name}, {snap.time[:19]}) as instance "
                   f"{res['restored_as']} on {res['server']}, until {res['until']} in {res['seconds']:.1f} s; "
                   f"{res['verified']}")


def windows_server_options(product: str) -> Callable[[F], F]:
    """The options of a restore that runs on a Windows server and hands it files through a share."""
    def apply(f: F) -> F:
        for option in reversed([
            click.option("--share", help=f"smb:// folder the {product} server reads (default: the policy's share)."),
            click.option("--share-path", help="The same folder as the server names it (UNC)."),
            click.option("--user", help="WinRM user (default: the policy's)."),
            click.option("--password-env", help="Environment variable with its password (default: the policy's)."),
            click.option("--share-user", help="Share user (default: the WinRM user)."),
            click.option("--share-password-env", help="Environment variable with the share's password.")]):
            f = option(f)
        return f
    return apply


@restore_group.command("sharepoint")
@click.argument("snapshot")
@vault_option
@click.option("--site", help="Site collection snapshots: which site (its original URL).")
@click.option("--as-url", help="Site collection snapshots: the new URL (no site may exist there).")
@click.option("--item", help="Farm snapshots: the component to restore (default: the backup's top component).")
@click.option("--host", help="Farm snapshots: a server of the recovery farm (default: the one backed up from, which "
              "needs --in-place).")
@click.option("--in-place", is_flag=True, help="Farm snapshots: allow Restore-SPFarm on the source farm (overwrites).")
@windows_server_options("SharePoint")
@catalog_option
@json_option
def sharepoint_cmd(snapshot: str, vault_path: str, site: str | None, as_url: str | None, item: str | None,
                   host: str | None, in_place: bool, share: str | None, share_path: str | None, user: str | None,
                   password_env: str | None, share_user: str | None, share_password_env: str | None,
                   catalog_url: str | None, as_json: bool) -> None:
    """Restore a SharePoint snapshot: a site collection to a new URL (Restore-SPSite), or a farm component onto a
    recovery farm (Restore-SPFarm, full + differential)."""
    from orchestrator.restore.database import restore_database

    options = {"site": site, "as_url": as_url, "item": item, "host": host, "in_place": in_place, "share": share,
               "share_path": share_path, "user": user, "password_env": password_env, "share_user": share_user,
               "share_password_env": share_password_env}
    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    with audited(catalog_url, snap, "sharepoint", as_url or host or "") as detail:
        res = restore_database(vault, snap, "sharepoint", options)
        detail.update(restored_as=res["restored_as"], server=res["server"])
    if as_json:
        emit_json(res)
    else:
        click.echo(f"restored {res['database']} from {snap.id[:12]} ({snap.name}, {snap.time[:19]}) as "
                   f"{res['restored_as']} on {res['server']} in {res['seconds']:.1f} s; {res['verified']}")


@restore_group.command("exchange")
@click.argument("snapshot")
@vault_option
@click.option("--target-folder", help="An empty folder on the Exchange server for the recovery database "
              "(R:\\Recovery\\DB01); never a live database's folder.")
@click.option("--recovery-name", help="Name of the recovery database (default: RDB-<database>-<time>).")
@click.option("--mailbox", "mailboxes", multiple=True, help="Restore this mailbox's content from the recovery "
              "database into the live mailbox (New-MailboxRestoreRequest); repeatable.")
@click.option("--files-only", is_flag=True, help="Only put the EDB and its logs in a folder of the share (kept), no "
              "recovery.")
@click.option("--host", help="The Exchange server to restore on (default: the one backed up from).")
@click.option("--port", type=int, help="Its WinRM port, with --host.")
@click.option("--thumbprint", help="Its WinRM certificate's SHA-256, with --host.")
@windows_server_options("Exchange")
@catalog_option
@json_option
def exchange_cmd(snapshot: str, vault_path: str, target_folder: str | None, recovery_name: str | None,
                 mailboxes: tuple[str, ...], files_only: bool, host: str | None, port: int | None,
                 thumbprint: str | None, share: str | None, share_path: str | None, user: str | None,
                 password_env: str | None, share_user: str | None, share_password_env: str | None,
                 catalog_url: str | None, as_json: bool) -> None:
    """Restore an Exchange mailbox database as a recovery database (soft recovery of its logs, then mounted),
    optionally with New-MailboxRestoreRequest for chosen mailboxes; or only its files with --files-only."""
    from orchestrator.restore.database import restore_database

    options = {"target_folder": target_folder, "recovery_name": recovery_name, "mailboxes": list(mailboxes),
               "files_only": files_only, "host": host, "port": port, "thumbprint": thumbprint, "share": share,
               "share_path": share_path, "user": user, "password_env": password_env, "share_user": share_user,
               "share_password_env": share_password_env}
    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    with audited(catalog_url, snap, "exchange", recovery_name or target_folder or "files") as detail:
        res = restore_database(vault, snap, "exchange", options)
        detail.update(database=res["database"], restored_as=res["restored_as"], server=res["server"])
    if as_json:
        emit_json(res)
    else:
        where = f" on {res['server']}" if res["server"] else ""
        click.echo(f"restored {res['database']} from {snap.id[:12]} ({snap.name}, {snap.time[:19]}) as "
                   f"{res['restored_as']}{where} in {res['seconds']:.1f} s; {res['verified']}")
        for r in res.get("requests") or []:
            click.echo(f"  mailbox {r.get('Mailbox')}: restore request {r.get('Name')} {r.get('Status')}")


@restore_group.command("files")
@click.argument("snapshot")
@click.argument("paths", nargs=-1, required=True)
@vault_option
@click.option("--target", help="Directory to restore into, or a share folder (smb://server/share/folder).")
@click.option("--in-place", is_flag=True, help="Write over the original location (explicit, on purpose); for a "
              "share, through SMB with the policy's user.")
@click.option("--user", help="Share destinations: user name (default: the one the snapshot was taken with).")
@click.option("--password-env", help="Share destinations: environment variable with the password (default: the "
              "policy's).")
@click.option("--overwrite", type=click.Choice(["never", "always", "if-newer"]), default="never", show_default=True,
              help="What to do with files that already exist.")
@click.option("--item", help="Disk image snapshots: which disk (default: the only one).")
@click.option("--partition", type=int,
              help="Disk image snapshots: the partition to read PATHS from (default: the only one with a "
                   "filesystem); PATHS are copied out of it read-only, the disk is not restored.")
@catalog_option
@json_option
def files_cmd(snapshot: str, paths: tuple[str, ...], vault_path: str, target: str | None, in_place: bool,
              user: str | None, password_env: str | None, overwrite: str, item: str | None, partition: int | None,
              catalog_url: str | None, as_json: bool) -> int:
    """Restore files or directories (PATHS as shown by ls/find) from SNAPSHOT with their metadata.
    Exit 0: all restored; 9: some entries skipped or failed (listed); 3: every intact file was restored but some
    are damaged in the vault (each listed, none written); 1: nothing could be restored."""
    from orchestrator.restore.files import restore_files

    vault = open_vault(vault_path)
    snap = vault.resolve(snapshot)
    has_trees = any(i["type"] == "tree" for i in snap.items)
    if item or partition is not None or (not has_trees and any(i["type"] == "image" for i in snap.items)):
        from orchestrator.mount.extract import restore_from_image

        if not target or in_place:
            raise UsageError("files from a disk image go to a --target directory")
        res = restore_from_image(vault, snap, item, partition, list(paths), target, overwrite)
        open_catalog(catalog_url).record_restore(snap.id, list(paths), res.target, overwrite, res.status,
                                                 res.files, res.bytes, {"errors": res.errors[:1000],
                                                                        "item": item, "partition": partition})
    else:
        res = restore_files(vault, snap, list(paths), target, overwrite, in_place, open_catalog(catalog_url),
                            options={"user": user, "password_env": password_env})
    if as_json:
        emit_json(res.to_json())
    else:
        click.echo(f"restored from {snap.id[:12]} ({snap.name}, {snap.time[:19]}) to {res.target}: {res.files} "
                   f"file(s), {res.dirs} dir(s), {res.links} link(s), {human_bytes(res.bytes)}")
        if res.skipped:
            click.echo(f"skipped {len(res.skipped)} existing (--overwrite {overwrite}): "
                       + ", ".join(res.skipped[:10]) + (" …" if len(res.skipped) > 10 else ""))
        for e in res.errors[:50]:
            click.echo(f"error: {e}", err=True)
        if len(res.errors) > 50:
            click.echo(f"… {len(res.errors) - 50} more errors (see --json)", err=True)
        if res.damaged:
            click.echo(f"{len(res.damaged)} file(s) damaged in the vault were not restored; every other file was. "
                       "'dobaas verify' names the damage; an older snapshot may hold intact copies", err=True)
    return {"ok": EXIT_OK, "partial": EXIT_PARTIAL, "failed": EXIT_FAILED, "damaged": EXIT_DAMAGE}[res.status]


def register(cli: click.Group) -> None:
    cli.add_command(restore_group)
