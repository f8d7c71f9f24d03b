"""``dobaas stats``: per source and day, what was read, what was new, what deduplicated, how well it compressed,
and the change rate against the contract's 0.2% daily budget; then the vault's totals. From the snapshots'
manifests (the vault is the truth), so it needs the passphrase but no catalog."""

from __future__ import annotations

from collections import defaultdict

import click

from orchestrator.cli.common import emit_json, human_bytes, json_option, open_vault, parse_when, vault_option
from orchestrator.policy.budget import DAILY_CHANGE_BUDGET as BUDGET


@click.command("stats")
@vault_option
@click.option("--source", help="Only snapshots of this name (client/source[/unit]) or this source.")
@click.option("--since", help="Only days from this date ('YYYY-MM-DD').")
@json_option
def stats_cmd(vault_path: str, source: str | None, since: str | None, as_json: bool) -> None:
    """Per source and day: bytes read, new, deduplicated, stored, compression, change rate vs the 0.2% budget."""
    vault = open_vault(vault_path)
    snaps, _broken = vault.list_snapshots()
    start = parse_when(since, "--since") if since else None
    initial: dict[str, int] = {}
    days: dict[tuple[str, str], dict] = defaultdict(lambda: {"snapshots": 0, "read": 0, "new": 0, "stored": 0})
    for s in snaps:  # oldest first: the first snapshot of a name is its initially saved volume
        initial.setdefault(s.name, sum(int(i.get("size", 0)) for i in s.items))
        if source and source not in (s.name, s.meta.get("source")):
            continue
        when = s.datetime.astimezone()
        if start and when < start:
            continue
        d = days[(s.name, when.strftime("%Y-%m-%d"))]
        d["snapshots"] += 1
        d["read"] += int(s.stats.get("bytes_read", 0))
        d["new"] += int(s.stats.get("raw_bytes_new", 0))
        d["stored"] += int(s.stats.get("bytes_stored", 0))
    rows = []
    for (name, day), d in sorted(days.items()):
        base = initial.get(name) or 0
        rate = d["new"] / base if base else None
        rows.append({"source": name, "day": day, **d, "deduplicated": max(0, d["read"] - d["new"]),
                     "compression": round(d["new"] / d["stored"], 2) if d["stored"] else None,
                     "change_rate": round(rate, 6) if rate is not None else None,
                     "over_budget": rate is not None and rate > BUDGET})
    packs = vault.pack_names()
    totals = {"snapshots": len(snaps), "packs": len(packs), "stored_bytes": sum(packs.values()),
              "chunks": len(vault.load_index().chunks)}
    if as_json:
        emit_json({"days": rows, "vault": totals, "budget": BUDGET})
        return
    click.echo(f"{'source':32} {'day':10} {'read':>10} {'new':>10} {'dedup':>10} {'stored':>10} {'compr':>6} "
               f"{'change':>8}")
    for r in rows:
        change = f"{100 * r['change_rate']:.3f}%" if r["change_rate"] is not None else "-"
        click.echo(f"{r['source'][:32]:32} {r['day']:10} {human_bytes(r['read']):>10} {human_bytes(r['new']):>10} "
                   f"{human_bytes(r['deduplicated']):>10} {human_bytes(r['stored']):>10} "
                   f"{(str(r['compression']) + 'x') if r['compression'] else '-':>6} {change:>8}"
                   f"{'  OVER BUDGET' if r['over_budget'] else ''}")
    click.echo(f"vault: {totals['snapshots']} snapshot(s), {totals['packs']} pack(s), "
               f"{human_bytes(totals['stored_bytes'])} stored, {totals['chunks']} chunk(s)")


def register(cli: click.Group) -> None:
    cli.add_command(stats_cmd)
