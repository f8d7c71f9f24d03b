"""``dobaas portal …``: serve the client portal and technician console, and create its accounts."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from orchestrator.cli.common import catalog_option, emit_json, json_option, open_catalog
from orchestrator.errors import DobaasError, UsageError


@click.group("portal")
def portal_group() -> None:
    """The web portal: clients browse and restore their backups by date, technicians handle restore requests
    and incidents. Needs the `portal` extra (pip install 'dobaas[portal]')."""


def _need_extra() -> None:
    try:
        import argon2  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError as e:
        raise UsageError(f"the portal needs the `portal` extra: pip install 'dobaas[portal]' ({e.name} is "
                         "missing)") from None


@portal_group.command("serve")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where to listen. Put an HTTPS reverse proxy in front: cookies are marked Secure.")
@click.option("--policies", "policies_dir", envvar="DOBAAS_POLICIES", metavar="DIR", type=click.Path(file_okay=False),
              help="The directory of the clients' policy files (their vaults, passphrases, quotas, schedules).")
@click.option("--insecure-cookies", is_flag=True,
              help="Session cookies without the Secure flag (plain HTTP on a test machine only).")
@catalog_option
def serve_cmd(listen: str, policies_dir: str | None, insecure_cookies: bool, catalog_url: str | None) -> None:
    """Serve the portal until interrupted."""
    _need_extra()
    import uvicorn

    from orchestrator.portal.app import create_app

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen {listen!r}: expected HOST:PORT")
    from sqlalchemy.exc import OperationalError

    try:
        app = create_app(catalog_url, policies_dir, secure_cookies=not insecure_cookies)
    except OperationalError as e:
        raise DobaasError(f"the catalog database cannot be reached: {str(e.orig or e).strip().splitlines()[0]}") \
            from None
    click.echo(f"portal on http://{listen}/ (catalog {app.state.portal.catalog.shown})", err=True)
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level="info", proxy_headers=True)


@portal_group.group("user")
def user_group() -> None:
    """Portal accounts."""


@user_group.command("add")
@click.option("--tenant", default="", help="The client (its policies' `client:`); required for role client.")
@click.option("--login", required=True)
@click.option("--role", type=click.Choice(["client", "technician", "admin"]), default="client", show_default=True)
@catalog_option
@json_option
def user_add_cmd(tenant: str, login: str, role: str, catalog_url: str | None, as_json: bool) -> None:
    """Create an account and print its one-time default password: the user must change it at first login."""
    _need_extra()
    from orchestrator.portal.accounts import Accounts

    password = Accounts(open_catalog(catalog_url).engine).add(login, tenant, role, datetime.now(UTC))
    if as_json:
        emit_json({"login": login, "password": password, "role": role, "tenant": tenant})
        return
    click.echo(f"account {login} ({role}{', ' + tenant if tenant else ''}) created; default password: {password}")
    click.echo("give it to the user by a separate channel: it must be changed at the first login")


def register(cli: click.Group) -> None:
    cli.add_command(portal_group)
