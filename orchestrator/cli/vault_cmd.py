"""``dobaas vault …``: create a vault, show what it is, add a passphrase, clear stale locks."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from orchestrator.cli.common import emit_json, json_option, open_vault, parse_size, read_passphrase, vault_option
from orchestrator.errors import EXIT_DAMAGE, EXIT_OK, StorageFull, UsageError
from orchestrator.vault.config import DEFAULT_BLOCK_SIZE
from orchestrator.vault.keys import DEFAULT_KDF_COST, MAX_KDF_COST, MIN_KDF_COST
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
@json_option
def init_cmd(path: str, location: str, block_size: str, pack_size: str, kdf_cost: int, as_json: bool) -> None:
    """Create an encrypted vault at PATH (or DOBAAS_VAULT)."""
    location = location.strip().upper()
    if len(location) != 2 or not location.isalpha():
        raise UsageError(f"--location must be a two-letter country code, not {location!r}")
    bs = parse_size(block_size, "--block-size")
    ps = parse_size(pack_size, "--pack-size")
    if not 64 * 1024 <= ps <= 1024 * 2**20:
        raise UsageError("--pack-size must be between 64KiB and 1GiB")
    pw = read_passphrase(confirm=True)
    from orchestrator.vault.backend.opener import open_backend

    try:
        backend = open_backend(path, must_exist=False)
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


@vault_group.command("add-passphrase")
@vault_option
def add_key_cmd(vault_path: str) -> None:
    """Add another passphrase (a new key file) that opens the same vault."""
    vault = open_vault(vault_path)
    import getpass

    pw = getpass.getpass("New passphrase: ")
    if getpass.getpass("Repeat new passphrase: ") != pw or not pw:
        raise UsageError("the two passphrases differ or are empty")
    name = vault.add_passphrase(pw)
    click.echo(f"added key file {name}")


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
    vault = open_vault(vault_path)
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
