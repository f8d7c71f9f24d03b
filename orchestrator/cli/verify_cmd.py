"""``dobaas verify``: prove every stored byte is intact, or say exactly what is damaged."""

from __future__ import annotations

import click

from orchestrator.cli.common import emit_json, human_bytes, json_option, open_vault, progress_bar, vault_option
from orchestrator.errors import EXIT_DAMAGE, EXIT_OK, DobaasError
from orchestrator.vault.repository import Vault
from orchestrator.vault.verify import verify_vault


@click.command("verify")
@vault_option
@click.option("--metadata-only", is_flag=True, help="Check structure and presence only, without reading chunk data.")
@click.option("--deep", is_flag=True, help="Also have the database products check the latest snapshot of each "
              "database source (SQL Server: RESTORE VERIFYONLY of every stored backup file).")
@json_option
def verify_cmd(vault_path: str, metadata_only: bool, deep: bool, as_json: bool) -> int:
    """Re-read and authenticate everything; exit code 3 when anything is damaged."""
    vault = open_vault(vault_path)
    total = sum(vault.pack_names().values())
    with progress_bar("verify", total, not as_json and not metadata_only) as advance:
        rep = verify_vault(vault, read_data=not metadata_only, progress=advance)
    deep_rows = _deep(vault) if deep else []
    ok = rep.ok and not any(r["problems"] for r in deep_rows)
    if as_json:
        emit_json({**rep.to_json(), **({"deep": deep_rows} if deep else {}), "ok": ok})
        return EXIT_OK if ok else EXIT_DAMAGE
    for r in deep_rows:
        click.echo(f"deep check of {r['snapshot'][:12]} ({r['name']}): "
                   + ("OK" if not r["problems"] else "; ".join(r["problems"])))
    click.echo(f"checked {rep.snapshots} snapshot(s), {rep.packs_checked} pack(s), {rep.chunks_checked} "
               f"chunk(s), {human_bytes(rep.bytes_checked)} read")
    if rep.orphan_packs:
        click.echo(f"{rep.orphan_packs} unindexed pack(s) from interrupted backups (reused by the next backup, "
                   "reclaimed by prune)")
    for d in rep.damage:
        where = f"snapshot {d.snapshot[:12]} ({d.name})" if d.snapshot else "vault"
        if d.item:
            where += f" item {d.item}"
        if d.path is not None:
            where += f" file {d.path or '(root)'}"
        if d.offset is not None:
            where += f" offset {d.offset} length {d.length}"
        click.echo(f"DAMAGED: {where}: {d.reason}")
    if rep.chunks_recorded:
        click.echo(f"{rep.chunks_recorded} damaged chunk(s) recorded in the vault: the next backup of each affected "
                   "source stores that data again where the source still has it, which repairs every snapshot "
                   "that references it")
    if rep.record_error:
        click.echo(f"WARNING: {rep.record_error}")
    if rep.packs_with_superseded_copies:
        click.echo(f"{len(rep.packs_with_superseded_copies)} pack(s) hold damaged copies already replaced by good "
                   "ones (healed); the next prune or maintenance rewrites them")
    click.echo("vault OK" if rep.ok else f"vault DAMAGED: {rep.snapshots_damaged} snapshot(s) affected")
    return EXIT_OK if ok else EXIT_DAMAGE


def _deep(vault: Vault) -> list[dict]:
    """The latest snapshot of each name whose plugin can check its own backups, checked by the product."""
    from orchestrator.restore.database import verify_database_backups

    snaps, _broken = vault.list_snapshots()
    latest = {s.name: s for s in snaps}
    out = []
    for snap in latest.values():
        try:
            problems = verify_database_backups(vault, snap)
        except DobaasError as e:
            problems = [str(e)]
        if problems is not None:
            out.append({"snapshot": snap.id, "name": snap.name, "problems": problems})
    return out


def register(cli: click.Group) -> None:
    cli.add_command(verify_cmd)
