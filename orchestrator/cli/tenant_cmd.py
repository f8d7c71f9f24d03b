"""``dobaas tenant destroy`` (end of contract, with a signed certificate) and ``dobaas certificate``."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import uuid
from datetime import UTC, datetime

import click

from orchestrator import __version__
from orchestrator.cli.common import catalog_option, emit_json, human_bytes, json_option, open_catalog, read_passphrase
from orchestrator.errors import EXIT_DAMAGE, UsageError


@click.group("tenant")
def tenant_group() -> None:
    """A client's whole presence in the service."""


@tenant_group.command("destroy")
@click.option("--client", required=True, help="The client whose data is destroyed.")
@click.option("--vault", "vaults", multiple=True, metavar="PATH|URL",
              help="A vault holding the client's data, as the provider reaches it (repeatable; second copies "
                   "too). Default: the vaults the catalog recorded for the client.")
@click.option("--certificate", "cert_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the signed certificate (JSON; the PDF goes beside it, .pdf).")
@click.option("--signing-key", envvar="DOBAAS_SIGNING_KEY", type=click.Path(dir_okay=False),
              help="The provider's Ed25519 private key (or DOBAAS_SIGNING_KEY).")
@click.option("--operator", default=lambda: os.environ.get("SUDO_USER") or getpass.getuser(),
              help="Who carries it out (default: the logged-in user).")
@click.option("--yes", is_flag=True, help="Really destroy (without it: what would be destroyed, nothing deleted).")
@catalog_option
@json_option
def destroy_cmd(client: str, vaults: tuple[str, ...], cert_path: str, signing_key: str | None, operator: str,
                yes: bool, catalog_url: str | None, as_json: bool) -> None:
    """Delete every object of CLIENT from every vault that holds it (local, SFTP, S3), destroy the keys of
    vaults that were only its own, remove its catalog rows and this machine's caches of its data, and write a
    destruction certificate signed with the provider's key. Object-locked objects are deleted once their
    retention ends: they are listed as scheduled, and running the same command after that date finishes the
    job. Idempotent. Exit 0: complete; 9: deletions still scheduled."""
    from orchestrator.errors import EXIT_PARTIAL
    from orchestrator.tenant.certificate import load_private_key, sign
    from orchestrator.tenant.destroy import destroy_vault
    from orchestrator.tenant.pdf import write_pdf
    from orchestrator.vault.backend.opener import open_backend

    if not client or "/" in client or client in (".", ".."):
        raise UsageError(f"--client {client!r}: a client name, as the policies give it")
    if yes and not signing_key:
        raise UsageError("--signing-key (or DOBAAS_SIGNING_KEY) is needed to sign the certificate")
    if yes:
        load_private_key(signing_key or "")  # before anything is deleted
    catalog = open_catalog(catalog_url)
    known = catalog.snapshots(client=client)
    recorded = sorted({s["vault"] for s in known})
    locations = list(dict.fromkeys(vaults)) or recorded
    if not locations:
        raise UsageError(f"no vault known for client {client!r}: name them with --vault")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    passphrase = read_passphrase()
    reports = []
    for loc in locations:
        backend = open_backend(loc, provider=True, must_exist=False)
        try:
            reports.append(destroy_vault(backend, passphrase, client, dry_run=not yes))
        finally:
            backend.close()
    if not yes:
        plan = {"client": client, "would_destroy": [r.to_json() for r in reports],
                "catalog_snapshots": len(known)}
        if as_json:
            emit_json(plan)
        else:
            for r in reports:
                click.echo(f"would destroy in {r.location} ({r.mode}): {r.snapshots_deleted} snapshot(s), "
                           f"{r.objects_deleted} object(s), {human_bytes(r.bytes_deleted)}")
        raise UsageError("nothing was deleted: run again with --yes to destroy")
    # the client's snapshots the vaults held (some may be unknown to this catalog): their restores' audit rows go too
    ids = {i for r in reports for i in r.snapshot_ids}
    counts = catalog.forget_client(client, ids | {s["id"] for s in known})
    body = {
        "type": "dobaas-destruction-certificate", "version": 1, "id": str(uuid.uuid4()), "client": client,
        "operator": operator, "host": socket.gethostname(), "tool": f"dobaas {__version__}", "started": started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "vaults": [r.to_json() for r in reports], "catalog": {**counts, "url": catalog.shown},
        "catalog_vaults": recorded,  # where the catalog saw the client's snapshots (clients' own view)
        "complete": not any(r.scheduled for r in reports),
    }
    doc = sign(body, signing_key or "")
    os.makedirs(os.path.dirname(os.path.abspath(cert_path)), exist_ok=True)
    with open(cert_path + ".partial", "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
    os.replace(cert_path + ".partial", cert_path)
    pdf_path = os.path.splitext(cert_path)[0] + ".pdf"
    write_pdf(doc, pdf_path)
    if as_json:
        emit_json({**body, "certificate_file": cert_path, "pdf": pdf_path})
    else:
        for r in reports:
            click.echo(f"{r.location} ({r.mode}): {r.snapshots_deleted} snapshot(s), {r.objects_deleted} object(s), "
                       f"{human_bytes(r.bytes_deleted)} deleted; keys destroyed: {'yes' if r.keys_destroyed else 'no'}"
                       + "".join(f"; {s['objects']} object(s) scheduled after {s['retained_until'] or '?'}"
                                 for s in r.scheduled))
        click.echo(f"catalog: {', '.join(f'{k} {n}' for k, n in counts.items())}")
        click.echo(f"certificate: {cert_path} and {pdf_path}"
                   + ("" if body["complete"] else " (INCOMPLETE: run again after the dates above)"))
    if not body["complete"]:
        sys.exit(EXIT_PARTIAL)


@click.group("certificate")
def certificate_group() -> None:
    """The provider's signing key and the certificates it signs."""


@certificate_group.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
def keygen_cmd(path: str, as_json: bool) -> None:
    """Make the provider's Ed25519 signing key: PATH (private, mode 0600) and PATH.pub (given to clients)."""
    from orchestrator.tenant.certificate import generate_key

    kid = generate_key(path)
    if as_json:
        emit_json({"private_key": path, "public_key": path + ".pub", "key_id": kid})
    else:
        click.echo(f"signing key {kid}: {path} (keep it secret) and {path}.pub (publish it)")


@certificate_group.command("verify")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True),
              help="The provider's public key (PEM): checks that the provider signed it, not just anyone.")
@json_option
def verify_cmd(path: str, public_key: str | None, as_json: bool) -> None:
    """Check a destruction certificate's signature. Exit 0: intact; 3: changed or not signed by that key."""
    from orchestrator.tenant.certificate import load, verify

    doc = load(path)
    v = verify(doc, public_key)
    if as_json:
        emit_json({"valid": v.valid, "key_id": v.key_id, "trusted_key": v.trusted_key, "reason": v.reason})
    elif v.valid:
        click.echo(f"valid: signed by key {v.key_id}" + ("" if v.trusted_key else
                   " (the key the certificate carries: pass --public-key to check it is the provider's)"))
    else:
        click.echo(f"INVALID: {v.reason}", err=True)
    if not v.valid:
        sys.exit(EXIT_DAMAGE)


def register(cli: click.Group) -> None:
    cli.add_command(tenant_group)
    cli.add_command(certificate_group)
