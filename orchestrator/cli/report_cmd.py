"""``dobaas report``: the monthly report for a client (PDF or HTML, French by default), from the catalog."""

from __future__ import annotations

import click

from orchestrator.cli.common import catalog_option, emit_json, json_option, open_catalog, parse_size


@click.command("report")
@click.option("--client", required=True, help="The client (as in its policies).")
@click.option("--month", required=True, help="YYYY-MM.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="report.pdf or report.html.")
@click.option("--quota", help="The subscribed volume, e.g. 500GiB (default: the policy's, with --policy).")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), help="The client's policy (its quota).")
@click.option("--lang", type=click.Choice(["fr", "en"]), default="fr", show_default=True)
@catalog_option
@json_option
def report_cmd(client: str, month: str, output: str, quota: str | None, policy_file: str | None, lang: str,
               catalog_url: str | None, as_json: bool) -> None:
    """What was protected in MONTH, the success rate, the restores, the saved volume against the subscribed one,
    the change rate against the contract's 0.2% daily budget, and the incidents."""
    from orchestrator.errors import UsageError
    from orchestrator.report.monthly import build
    from orchestrator.report.render import to_html, to_pdf

    limit = parse_size(quota, "--quota") if quota else None
    if policy_file and limit is None:
        from orchestrator.policy.model import load_policy

        p = load_policy(policy_file)
        limit = parse_size(p.quota, "quota") if p.quota else None
        catalog_url = catalog_url or p.catalog
    rep = build(open_catalog(catalog_url), client, month, limit)
    if output.lower().endswith(".pdf"):
        to_pdf(rep, output, lang)
    elif output.lower().endswith((".html", ".htm")):
        with open(output, "w", encoding="utf-8") as f:
            f.write(to_html(rep, lang))
    else:
        raise UsageError("--output must end in .pdf or .html")
    summary = {"client": client, "month": month, "output": output, "runs": rep.runs, "success_rate": rep.success_rate,
               "restores": len(rep.restores), "incidents": len(rep.incidents), "volume": rep.volume,
               "quota": rep.quota, "sources": rep.sources}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"report for {client}, {month}: {rep.runs} run(s), {len(rep.incidents)} incident(s) -> {output}")


def register(cli: click.Group) -> None:
    cli.add_command(report_cmd)
