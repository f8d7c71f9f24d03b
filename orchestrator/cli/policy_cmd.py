"""``dobaas policy check`` and ``dobaas run``: validate a policy, run it once now."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import click

from orchestrator.cli.common import (
    catalog_option,
    emit_json,
    exit_without_teardown,
    human_bytes,
    json_option,
    progress_bar,
)
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.catalog.db import Catalog
    from orchestrator.catalog.process import CatalogProcess
    from orchestrator.policy.model import Policy


@click.group("policy")
def policy_group() -> None:
    """Policy files."""


@policy_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--discover", is_flag=True, help="Also ask each plugin what it would capture.")
@click.option("--syntax-only", is_flag=True,
              help="Check the file only, not this machine's secrets (for policies written for another machine).")
@json_option
def check_cmd(file: str, discover: bool, syntax_only: bool, as_json: bool) -> None:
    """Validate FILE: errors name the file, the line and the field; every problem is reported at once, including
    what a run would fail on (secrets that cannot be read; with --discover, paths, VMs or databases not found)."""
    from orchestrator.errors import BadInput
    from orchestrator.policy.model import load_policy
    from orchestrator.policy.preflight import preflight

    p = load_policy(file)
    if syntax_only and discover:
        raise UsageError("--syntax-only and --discover exclude each other")
    problems, found = ([], {}) if syntax_only else preflight(p, discover)
    if problems:
        raise BadInput("\n".join(x if x.startswith(file) else f"{file}: {x}" for x in problems))
    out = {"policy": p.policy, "client": p.client, "vault": p.vault, "schedule": p.schedule,
           "sources": [{"name": c.name, "plugin": c.plugin, **({"items": found[c.name]} if discover else {})}
                       for c in p.source_configs]}
    if as_json:
        emit_json(out)
        return
    click.echo(f"{file}: OK — policy {p.policy} for client {p.client}, {len(p.source_configs)} source(s)")
    for c in p.source_configs:
        click.echo(f"  {c.name} ({c.plugin})" + (f": {', '.join(found[c.name])}" if discover else ""))


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--source", "only", multiple=True, help="Run only this source, or one unit as SOURCE/UNIT (repeatable).")
@click.option("--dry-run", is_flag=True, help="Say what would be captured, from where, into which vault, after the "
              "checks a run makes first; write nothing.")
@catalog_option
@json_option
def run_cmd(file: str, only: tuple[str, ...], dry_run: bool, catalog_url: str | None, as_json: bool) -> int:
    """Run every source of the policy FILE once, now. Exit 0: all saved; 1: a source failed (the others still
    ran); 9: all saved but some files could not be read or changed while being read. With --dry-run: exit 0 when
    a run would start, 1 when a check fails."""
    from orchestrator.catalog.process import CatalogProcess
    from orchestrator.memory import keep_freed_memory
    from orchestrator.policy.model import load_policy

    keep_freed_memory()

    policy = load_policy(file)
    if dry_run:
        return _dry_run(policy, as_json)
    unknown = {o for o in only if o.split("/", 1)[0] not in {c.name for c in policy.source_configs}}
    if unknown:
        raise UsageError(f"no source named {', '.join(sorted(unknown))} in {file}")
    catalog = CatalogProcess(catalog_url or policy.catalog)  # opens and records while this process backs up
    try:
        code = _run(policy, catalog, only, as_json)
    finally:
        catalog.close()
    exit_without_teardown()
    return code


def _dry_run(policy: Policy, as_json: bool) -> int:
    from orchestrator.cli.common import read_passphrase
    from orchestrator.errors import EXIT_FAILED, EXIT_OK
    from orchestrator.policy.dry_run import dry_run

    rep = dry_run(policy, lambda: policy.passphrase() or read_passphrase())
    if as_json:
        emit_json(rep)
    else:
        v = rep["vault"]
        click.echo(f"policy {rep['policy']} for client {rep['client']}, into {v['location']}"
                   + (f" (vault {v['id'][:12]}, {v['country']}, {v['snapshots']} snapshot(s))" if "id" in v else ""))
        for s in rep["sources"]:
            click.echo(f"  {s['name']} ({s['plugin']}): {', '.join(s['items']) or '-'}")
            for snap in s["snapshots"]:
                click.echo(f"    -> snapshot {snap}")
        for p in rep["problems"]:
            click.echo(f"problem: {p}", err=True)
        click.echo("a run would start; nothing was written" if rep["ok"] else "a run would fail on the problems above")
    return EXIT_OK if rep["ok"] else EXIT_FAILED


def _run(policy: Policy, catalog: CatalogProcess, only: tuple[str, ...], as_json: bool) -> int:
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.cli.common import read_passphrase
    from orchestrator.vault.repository import Vault

    # the key derivation (Argon2id, ~0.1 s) leaves the interpreter free: the run's code and its plugins are
    # imported meanwhile (a nightly incremental of 72,000 unchanged files takes about 1.3 s in all)
    passphrase = policy.passphrase() or read_passphrase()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault-open") as opener:
        opening = opener.submit(Vault.open, policy.backend(), passphrase)
        from orchestrator.backup.runner import run_policy
        from orchestrator.plugin import registry

        for name in {c.plugin for c in policy.source_configs}:
            with contextlib.suppress(Exception):  # an unknown plugin is reported by the run, source by source
                registry.load(name)
        vault = opening.result()
    bars = []

    def progress(name: str):
        if as_json:
            return None
        cm = progress_bar(f"{policy.client}/{name}", None, True)
        advance = cm.__enter__()
        bars.append(cm)
        return advance

    try:
        report = run_policy(policy, vault, cast("Catalog", catalog), progress, list(only) or None)
    finally:
        for cm in bars:
            cm.__exit__(None, None, None)
    from orchestrator.alerts.notify import notify_after_run

    try:
        notify_after_run(policy, report, cast("Catalog", catalog), vault)
    except Exception as e:  # the snapshots are safe in the vault; say why no alert could be evaluated
        for s in report.sources:
            s.warnings.append(f"alerts not evaluated: catalog unavailable ({e})")
    if as_json:
        emit_json(report.to_json())
        return report.exit_code
    for s in report.sources:
        mark = {"ok": "OK     ", "partial": "PARTIAL", "failed": "FAILED ", "interrupted": "STOPPED"}[s.status]
        line = f"{mark} {s.source:20} "
        if s.snapshot:
            line += (f"snapshot {s.snapshot[:12]} ({s.mode}, {s.consistency}), read {human_bytes(s.bytes_read)}, "
                     f"added {human_bytes(s.bytes_stored)}, {s.seconds:.1f} s")
            if s.files:
                line += f"; {s.files} files, {s.files_read} read, {s.files_unchanged} unchanged"
        click.echo(line)
        for err in s.errors[:20]:
            click.echo(f"    error: {err}")
        if len(s.errors) > 20:
            click.echo(f"    … {len(s.errors) - 20} more errors (see --json)")
        for w in s.warnings[:20]:
            click.echo(f"    warning: {w}")
    if report.copy is not None:
        c = report.copy
        if c["status"] == "ok":
            click.echo(f"COPIED  to {c['vault']}: {len(c['copied'])} snapshot(s), {c['chunks_sent']} new chunk(s), "
                       f"{human_bytes(c['bytes_sent'])} sent")
        else:
            click.echo(f"FAILED  copy to {c['vault']}: {c['error']}")
    return report.exit_code


def register(cli: click.Group) -> None:
    cli.add_command(policy_group)
    cli.add_command(run_cmd)
