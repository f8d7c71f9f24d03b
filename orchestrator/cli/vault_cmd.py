"""``dobaas vault …``: create a vault, show what it is, add a passphrase, clear stale locks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import click

from orchestrator.cli.common import (
    emit_json,
    json_option,
    new_passphrase,
    open_vault,
    parse_size,
    read_passphrase,
    vault_option,
)
from orchestrator.errors import EXIT_DAMAGE, EXIT_OK, AppendOnly, StorageFull, UsageError
from orchestrator.vault.config import DEFAULT_BLOCK_SIZE
from orchestrator.vault.keys import DEFAULT_KDF_COST, MAX_KDF_COST, MIN_KDF_COST, list_key_files
from orchestrator.vault.locks import read_locks
from orchestrator.vault.repository import Vault


@click.group("vault")
def vault_group() -> None:
    """Create and look after vaults."""


@vault_group.command("init")
@click.argument("path", type=click.Path(file_okay=False), envvar="DOBAAS_VAULT")
@click.option("--location", default="FR", show_default=True, help="Country code where this vault is hosted.")
@click.option("--block-size", default=str(DEFAULT_BLOCK_SIZE), show_default=True,
              help="Block size for disk images (power of two, 4KiB-16MiB).")
@click.option("--pack-size", default="16MiB", show_default=True,
              help="Target size of pack objects (fewer, larger objects suit remote storage).")
@click.option("--kdf-cost", type=click.IntRange(MIN_KDF_COST, MAX_KDF_COST), default=DEFAULT_KDF_COST,
              show_default=True, help="Argon2id memory as log2(KiB): 16 = 64 MiB; lower only for tests.")
@click.option("--object-lock", "object_lock_days", type=click.IntRange(1, 36500), default=None,
              help="s3:// only, with the provider's key: create the bucket with Object Lock and this many days of "
                   "default retention (every object the client writes is then immutable that long).")
@click.option("--object-lock-mode", type=click.Choice(["compliance", "governance"]), default="compliance",
              show_default=True, help="COMPLIANCE: nobody deletes before the end; GOVERNANCE: the provider's key may.")
@json_option
def init_cmd(path: str, location: str, block_size: str, pack_size: str, kdf_cost: int,
             object_lock_days: int | None, object_lock_mode: str, as_json: bool) -> None:
    """Create an encrypted vault at PATH (or DOBAAS_VAULT); an s3:// vault's bucket is created when missing."""
    location = location.strip().upper()
    if len(location) != 2 or not location.isalpha():
        raise UsageError(f"--location must be a two-letter country code, not {location!r}")
    bs = parse_size(block_size, "--block-size")
    ps = parse_size(pack_size, "--pack-size")
    if not 64 * 1024 <= ps <= 1024 * 2**20:
        raise UsageError("--pack-size must be between 64KiB and 1GiB")
    pw = read_passphrase(confirm=True)
    from orchestrator.vault.backend.opener import open_backend

    if object_lock_days and not path.startswith("s3://"):
        raise UsageError("--object-lock is for s3:// vaults (an SFTP vault is made append-only by its server)")
    try:
        backend = open_backend(path, must_exist=False, provider=True)
        if path.startswith("s3://"):
            if backend.exists("config"):
                raise UsageError(f"a vault already exists at {backend.location}")
            backend.create_bucket(object_lock_days, object_lock_mode.upper())  # type: ignore[attr-defined]
        vault = Vault.create(backend, pw, kdf_cost=kdf_cost, location=location, block_size=bs, pack_size=ps)
    except OSError as e:
        raise StorageFull(f"cannot create a vault at {path}: {e.strerror or e}") from None
    if as_json:
        emit_json({"path": vault.backend.location, "id": vault.config.id, "location": location, "block_size": bs})
    else:
        click.echo(f"created vault {vault.config.id[:12]} at {vault.backend.location} (location {location})")
        click.echo("keep the passphrase safe: without it the backups cannot be read")


@vault_group.command("info")
@vault_option
@json_option
def info_cmd(vault_path: str, as_json: bool) -> None:
    """Show the vault's configuration and size."""
    vault = open_vault(vault_path)
    idx = vault.load_index()
    packs = vault.pack_names()
    info = {**asdict(vault.config), "path": vault.backend.location, "snapshots": len(vault.snapshot_ids()),
            "packs": len(packs), "chunks": len(idx.chunks), "stored_bytes": sum(packs.values())}
    if as_json:
        emit_json(info)
    else:
        for k in ("path", "id", "location", "created", "block_size", "snapshots", "packs", "chunks", "stored_bytes"):
            click.echo(f"{k:13} {info[k]}")


new_passphrase_options = [
    click.option("--new-passphrase-file", type=click.Path(dir_okay=False), help="File holding the new passphrase."),
    click.option("--new-passphrase-env", help="Environment variable holding the new passphrase."),
]


def _new_passphrase_options(f: Callable) -> Callable:
    for option in reversed(new_passphrase_options):
        f = option(f)
    return f


@vault_group.command("add-passphrase")
@vault_option
@_new_passphrase_options
def add_key_cmd(vault_path: str, new_passphrase_file: str | None, new_passphrase_env: str | None) -> None:
    """Add another passphrase (a new key file) that opens the same vault (same as `vault key add`)."""
    vault = open_vault(vault_path)
    name = vault.add_passphrase(new_passphrase(new_passphrase_file, new_passphrase_env))
    click.echo(f"added key file {name}")


@vault_group.group("key")
def key_group() -> None:
    """The vault's key files: each wraps the master key with one passphrase. Without a terminal: the current
    passphrase from DOBAAS_PASSPHRASE(_FILE|_COMMAND), the new one from --new-passphrase-file/-env."""


@key_group.command("list")
@vault_option
@json_option
def key_list_cmd(vault_path: str, as_json: bool) -> None:
    """The key files, and which one the current passphrase opened."""
    vault = open_vault(vault_path)
    rows = [{**k, "current": k["name"] == vault.key_name} for k in list_key_files(vault.backend)]
    if as_json:
        emit_json(rows)
        return
    for k in rows:
        kdf = k["kdf"] or {}
        click.echo(f"{k['name'].removeprefix('keys/')}  {k['type'] or 'DAMAGED'}  {k['created'] or '-'}  "
                   f"{kdf.get('name', '-')} m={kdf.get('m', '-')}{'  (current)' if k['current'] else ''}")


@key_group.command("add")
@vault_option
@_new_passphrase_options
@json_option
def key_add_cmd(vault_path: str, new_passphrase_file: str | None, new_passphrase_env: str | None,
                as_json: bool) -> None:
    """Add a passphrase that opens the same vault (a new key file)."""
    vault = open_vault(vault_path)
    name = vault.add_passphrase(new_passphrase(new_passphrase_file, new_passphrase_env))
    if as_json:
        emit_json({"added": name})
    else:
        click.echo(f"added key file {name.removeprefix('keys/')}")


@key_group.command("remove")
@click.argument("key_id")
@vault_option
@json_option
def key_remove_cmd(key_id: str, vault_path: str, as_json: bool) -> None:
    """Remove a key file (a unique prefix of its id is enough). Never the last one, nor the one the current
    passphrase opened (use `vault key passwd` to change that passphrase)."""
    vault = open_vault(vault_path)
    keys = list_key_files(vault.backend)
    match = [k["name"] for k in keys if k["name"].removeprefix("keys/").startswith(key_id.strip())]
    if len(match) != 1:
        raise UsageError(f"key {key_id!r} matches {len(match)} key files; `dobaas vault key list` shows them")
    if match[0] == vault.key_name:
        raise UsageError("that is the key file the current passphrase opened: change it with `dobaas vault key "
                         "passwd`, or open the vault with another passphrase to remove this one")
    _delete_key(vault, match[0])
    if as_json:
        emit_json({"removed": match[0]})
    else:
        click.echo(f"removed key file {match[0].removeprefix('keys/')}")


@key_group.command("passwd")
@vault_option
@_new_passphrase_options
@json_option
def key_passwd_cmd(vault_path: str, new_passphrase_file: str | None, new_passphrase_env: str | None,
                   as_json: bool) -> None:
    """Change the current passphrase: a key file for the new one is written (and checked to open the vault)
    before the current one is removed."""
    vault = open_vault(vault_path)
    new = new_passphrase(new_passphrase_file, new_passphrase_env)
    added = vault.add_passphrase(new)
    Vault.open(vault.backend, new)  # the new passphrase opens the vault before the old key file goes
    _delete_key(vault, vault.key_name)
    if as_json:
        emit_json({"added": added, "removed": vault.key_name})
    else:
        click.echo(f"passphrase changed: key file {added.removeprefix('keys/')} added, "
                   f"{vault.key_name.removeprefix('keys/')} removed")


def _delete_key(vault: Vault, name: str) -> None:
    try:
        vault.backend.delete(name)
    except PermissionError:
        raise AppendOnly(f"the vault at {vault.backend.location} refuses deletions (append-only access): key files "
                         "are removed by the provider") from None


@vault_group.command("maintain")
@vault_option
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, exists=True),
              help="The client's policy: its retention is applied to its sources' snapshots.")
@click.option("--verify", is_flag=True, help="Verify every snapshot's data afterwards.")
@json_option
def maintain_cmd(vault_path: str, policy_file: str | None, verify: bool, as_json: bool) -> int:
    """Provider maintenance, on the vault host: apply the client's retention and reclaim space, remove expired
    locks and the incomplete objects interrupted uploads left (append-only clients cannot), optionally verify.
    Deferred (exit 0, reported) while a backup holds the vault. Exit 3 when verify finds damage, or when an
    undecodable object was kept because the data some snapshot references could not all be located."""
    from orchestrator.vault.maintain import maintain

    retention, names = None, None
    if policy_file:
        from orchestrator.backup.runner import snapshot_names
        from orchestrator.policy.model import load_policy

        policy = load_policy(policy_file)
        retention = policy.retention.model_dump(exclude_none=True) or None
        names = snapshot_names(policy)
    vault = open_vault(vault_path, provider=True)
    rep = maintain(vault, retention, names, verify)
    if as_json:
        emit_json(rep.to_json())
    else:
        if rep.prune is not None:
            click.echo(f"retention: kept {len(rep.prune['kept'])}, removed {len(rep.prune['removed'])} snapshot(s)")
        if rep.deferred:
            click.echo(f"clean-up deferred: {rep.deferred}")
        else:
            click.echo(f"removed {rep.locks_removed} expired lock(s) and {len(rep.incomplete_removed)} incomplete "
                       "object(s)")
            if rep.reindexed_packs:
                click.echo(f"indexed {rep.reindexed_packs} pack(s) again from their own headers")
            if rep.refused:
                click.echo(f"kept undecodable objects: {rep.refused}", err=True)
        if rep.verify is not None:
            click.echo(f"verify: {'ok' if rep.verify['ok'] else 'DAMAGE FOUND'} ({rep.verify['snapshots']} "
                       "snapshot(s))")
    return EXIT_DAMAGE if rep.refused or (rep.verify is not None and not rep.verify["ok"]) else EXIT_OK


@vault_group.command("undelete")
@vault_option
@json_option
def undelete_cmd(vault_path: str, as_json: bool) -> None:
    """s3:// with Object Lock, the provider's key: remove the delete markers a client (or whoever holds its key)
    put over the vault's objects. Every locked version is still there: the vault is whole again; run verify."""
    from orchestrator.vault.backend.opener import open_backend

    if not vault_path or not vault_path.startswith("s3://"):
        raise UsageError("undelete is for s3:// vaults (delete markers exist only in versioned buckets)")
    backend = open_backend(vault_path, must_exist=False, provider=True)
    rep = backend.undelete()  # type: ignore[attr-defined]
    Vault.open(backend, read_passphrase())  # the passphrase opens it again: the config and keys are back
    if as_json:
        emit_json(rep)
    else:
        click.echo(f"removed {rep['markers_removed']} delete marker(s): {rep['objects_restored']} object(s) visible "
                   "again; run 'dobaas verify' to check every snapshot")


@vault_group.command("locks")
@vault_option
@click.option("--remove-stale", is_flag=True, help="Delete locks whose process is gone or that expired.")
@json_option
def locks_cmd(vault_path: str, remove_stale: bool, as_json: bool) -> None:
    """List the vault's locks (and remove stale ones)."""
    vault = open_vault(vault_path)
    now = time.time()
    locks = read_locks(vault.backend)
    removed = []
    if remove_stale:
        for lk in locks:
            if not lk.live(now):
                vault.backend.delete(lk.name)
                removed.append(lk.name)
    rows = [{"name": lk.name, "kind": lk.kind, "holder": lk.describe(), "live": lk.live(now)} for lk in locks]
    if as_json:
        emit_json({"locks": rows, "removed": removed})
    else:
        for r in rows:
            click.echo(f"{r['kind']:9} {'live ' if r['live'] else 'stale'} {r['holder']}")
        if removed:
            click.echo(f"removed {len(removed)} stale lock(s)")


def register(cli: click.Group) -> None:
    cli.add_command(vault_group)
