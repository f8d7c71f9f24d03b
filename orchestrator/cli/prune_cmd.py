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
)
from orchestrator.errors import UsageError
from orchestrator.vault.prune import prune


@click.command("prune")
@click.option("--vault", "vault_path", envvar="DOBAAS_VAULT", metavar="PATH",
              help="Vault location (or DOBAAS_VAULT); with --policy, the policy's vault.")
@click.option("--keep-last", type=click.IntRange(min=1), help="Snapshots to keep per name.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False),
              help="Apply this policy's retention (keep_last/hourly/daily/weekly/monthly/yearly) to its sources.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed, and why the rest is kept.")
@catalog_option
@json_option
def prune_cmd(vault_path: str | None, keep_last: int | None, policy_file: str | None, dry_run: bool,
              catalog_url: str | None, as_json: bool) -> None:
    """Apply retention: forget snapshots no rule keeps, then free unreferenced data (deferred while a backup
    runs). The catalog forgets them too, so browsing never offers a snapshot that is gone."""
    if (keep_last is None) == (policy_file is None):
        raise UsageError("give either --keep-last N or --policy FILE")
    retention, names = None, None
    if policy_file:
        from orchestrator.policy.model import load_policy

        policy = load_policy(policy_file)
        retention = policy.retention.model_dump(exclude_none=True)
        from orchestrator.backup.runner import snapshot_names

        names = snapshot_names(policy)
        vault_path = vault_path or policy.vault
        if not retention:
            raise UsageError(f"{policy_file}: the policy has no retention rule; nothing would be pruned")
    if not vault_path:
        raise UsageError("no vault: give --vault or set DOBAAS_VAULT")
    vault = open_vault(vault_path)
    rep = prune(vault, keep_last, dry_run, retention, names)
    if not dry_run and rep.removed:
        open_catalog(catalog_url).forget_missing(set(vault.snapshot_ids()))
    if as_json:
        emit_json(rep.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"kept {len(rep.kept)} snapshot(s), {verb} {len(rep.removed)}")
    if dry_run:
        for sid, why in rep.reasons.items():
            click.echo(f"  keep {sid[:12]}: {', '.join(why)}")
        for sid in rep.removed:
            click.echo(f"  remove {sid[:12]}")
    if rep.gc.ran:
        click.echo(f"space {'reclaimable' if dry_run else 'reclaimed'}: {human_bytes(rep.gc.bytes_freed)} "
                   f"({rep.gc.packs_deleted} pack(s) deleted, {rep.gc.packs_repacked} repacked, "
                   f"{rep.gc.orphan_packs_deleted} orphan(s))")
    else:
        click.echo(f"space reclaim deferred: {rep.gc.deferred_reason}; it runs at the next prune")


def register(cli: click.Group) -> None:
    cli.add_command(prune_cmd)
