"""``dobaas jobs`` and ``dobaas status``: what ran, how it went, and how old each source's last success is."""

from __future__ import annotations

import click

from orchestrator.cli.common import catalog_option, emit_json, human_bytes, json_option, local_time, open_catalog
from orchestrator.errors import EXIT_FAILED, EXIT_OK


@click.command("jobs")
@click.option("--policy", help="Only this policy.")
@click.option("--source", help="Only this source.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@catalog_option
@json_option
def jobs_cmd(policy: str | None, source: str | None, limit: int, catalog_url: str | None, as_json: bool) -> None:
    """Job history, newest first: every source of every run, with its status, figures and errors."""
    rows = open_catalog(catalog_url).jobs(policy, source, limit)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{local_time(r['started'])}  {r['status']:7}  {r['policy']}/{r['client']}/{r['source']:16} "
                   f"read {human_bytes(r['bytes_read']):>10}  added {human_bytes(r['bytes_stored']):>10}  "
                   f"{(r['snapshot_id'] or '-')[:12]}")
        for e in r["errors"][:5]:
            click.echo(f"    error: {e}")


@click.command("status")
@click.option("--policies", "directory", type=click.Path(file_okay=False, exists=True), envvar="DOBAAS_POLICIES",
              help="The daemon's policy directory: adds each source's next scheduled run.")
@catalog_option
@json_option
def status_cmd(directory: str | None, catalog_url: str | None, as_json: bool) -> int:
    """Per source: the last run, the last success and its age, warnings, and (with --policies) the next run.
    Exit 1 when a source's last run failed."""
    rows = open_catalog(catalog_url).status()
    if directory:
        from orchestrator.scheduler.daemon import next_runs

        nxt = next_runs(directory)
        for r in rows:
            r["next_run"] = nxt.get(r["policy"])
    if as_json:
        emit_json(rows)
    else:
        for r in rows:
            age = f"{r['success_age_hours']:.1f} h ago" if r["success_age_hours"] is not None else "never"
            line = (f"{r['client']}/{r['source']:20} last run {r['last_status']:7} at {local_time(r['last_run'])}; "
                    f"last success {age}")
            if r["last_warnings"]:
                line += f"; {len(r['last_warnings'])} warning(s)"
            if directory:
                line += f"; next run {local_time(r['next_run']) if r.get('next_run') else 'not scheduled'}"
            click.echo(line)
            for e in r["last_errors"][:3]:
                click.echo(f"    error: {e}")
            for w in r["last_warnings"][:3]:
                click.echo(f"    warning: {w}")
    return EXIT_FAILED if any(r["last_status"] == "failed" for r in rows) else EXIT_OK


def register(cli: click.Group) -> None:
    cli.add_command(jobs_cmd)
    cli.add_command(status_cmd)
