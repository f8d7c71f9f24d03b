"""`dobaas tenant destroy`: nothing of the client left on any backend (local, an SFTP vault host, S3 with and
without Object Lock), other clients untouched, catalog rows gone, and a signed certificate that verifies and
fails once tampered with."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASS, Cli, assert_one_line_error
from tests.filetrees import write_policy

pytestmark = pytest.mark.export
MiB = 2**20


def files(root: Path, seed: str) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(f"contrat {seed}\n" * 50)
    (root / "sub" / "b.bin").write_bytes(os.urandom(2 * MiB))
    return root


@pytest.fixture
def signing_key(tmp_path: Path, cli: Cli) -> Path:
    key = tmp_path / "provider.key"
    out = json.loads(cli("certificate", "keygen", str(key), "--json").stdout)
    assert oct(key.stat().st_mode & 0o777) == "0o600" and len(out["key_id"]) == 16
    return key


def objects(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_whole_and_shared_vaults_catalog_and_certificate(tmp_path: Path, cli: Cli, signing_key: Path) -> None:
    own, shared = tmp_path / "own", tmp_path / "shared"
    for v in (own, shared):
        cli("vault", "init", str(v), "--kdf-cost", "12", "--pack-size", "1MiB")
    catalog = tmp_path / "catalog.db"
    env = Cli({"DOBAAS_CATALOG": str(catalog)})
    acme, other = files(tmp_path / "acme-src", "acme"), files(tmp_path / "other-src", "other")
    for client, src, vault in (("acme", acme, own), ("acme", acme, shared), ("other", other, shared)):
        pol = write_policy(tmp_path, vault, [{"name": "docs", "plugin": "files", "paths": [str(src)]}], client)
        env("run", str(pol))
    acme_ids = {s["id"] for s in json.loads(env("snapshots", "--vault", str(shared), "--json").stdout)
                if s["name"].startswith("acme/")}
    from orchestrator.vault.backend.local import LocalBackend
    from orchestrator.vault.repository import Vault
    from orchestrator.vault.snapshot import item_refs

    v = Vault.open(LocalBackend(str(shared)), PASS)
    acme_chunks = {c for s in v.list_snapshots()[0] if s.id in acme_ids for it in s.items
                   for _o, _l, c in item_refs(it, v.read_chunk)}
    cert = tmp_path / "certs" / "acme.json"
    args = ["tenant", "destroy", "--client", "acme", "--vault", str(own), "--vault", str(shared),
            "--certificate", str(cert), "--signing-key", str(signing_key)]
    before = objects(own)
    assert_one_line_error(env(*args, check=False), 2, "nothing was deleted", "--yes")
    assert objects(own) == before and not cert.exists()

    done = json.loads(env(*args, "--yes", "--json").stdout)
    assert done["complete"] is True
    whole, part = done["vaults"]
    assert whole["mode"] == "whole vault" and whole["keys_destroyed"] and whole["objects_deleted"] == len(before)
    assert objects(own) == []  # not one object left, keys and config included
    assert part["mode"] == "shared vault" and part["snapshots_deleted"] == 1 and not part["keys_destroyed"]
    v = Vault.open(LocalBackend(str(shared)), PASS)
    left = v.list_snapshots()[0]
    assert [s.name for s in left] == ["other/docs"]
    index = v.load_index(refresh=True)
    assert not [c for c in acme_chunks if index.get(c) is not None and not _shared(c, v, left)]
    out = tmp_path / "other-out"
    env("restore", "files", left[0].id, str(other), "--vault", str(shared), "--target", str(out))
    assert (out / "sub" / "b.bin").read_bytes() == (other / "sub" / "b.bin").read_bytes()
    assert json.loads(env("verify", "--vault", str(shared), "--json").stdout)["ok"]
    assert done["catalog"]["snapshots"] == 2 and done["catalog"]["jobs"] >= 2
    import sqlite3

    rows = sqlite3.connect(catalog).execute("select count(*) from snapshots s join sources o on o.id = s.source_id "
                                            "join clients c on c.id = o.client_id where c.name = 'acme'").fetchone()
    assert rows[0] == 0
    assert sqlite3.connect(catalog).execute("select count(*) from jobs where client = 'other'").fetchone()[0] == 1

    # the certificate: valid with the provider's public key, invalid once a figure is changed or re-signed
    ok = json.loads(env("certificate", "verify", str(cert), "--public-key", f"{signing_key}.pub", "--json").stdout)
    assert ok["valid"] and ok["trusted_key"]
    pdf = subprocess.run(["pdftotext", str(cert.with_suffix(".pdf")), "-"], capture_output=True, text=True,
                         check=True).stdout
    assert "acme" in pdf and "Data destruction certificate" in pdf and str(own) in pdf
    doc = json.loads(cert.read_text())
    doc["certificate"]["vaults"][0]["objects_deleted"] += 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    p = env("certificate", "verify", str(tampered), "--public-key", f"{signing_key}.pub", check=False)
    assert p.returncode == 3 and "changed after it was signed" in p.stderr
    other_key = tmp_path / "mallory.key"
    env("certificate", "keygen", str(other_key))
    p = env("certificate", "verify", str(cert), "--public-key", f"{other_key}.pub", check=False)
    assert p.returncode == 3 and "not with the key given" in p.stderr

    # idempotent: a second run finds nothing of the client and says so
    again = json.loads(env(*args, "--yes", "--json").stdout)
    assert again["complete"] and again["vaults"][0]["mode"] == "nothing here"
    assert again["vaults"][1]["snapshots_deleted"] == 0 and again["vaults"][1]["objects_deleted"] == 0


def _shared(cid: bytes, vault, left) -> bool:  # type: ignore[no-untyped-def]
    """A chunk the remaining snapshots reference too (identical content: it stays, it is theirs as well)."""
    from orchestrator.vault.snapshot import item_refs

    return any(c == cid for s in left for it in s.items for _o, _l, c in item_refs(it, vault.read_chunk))


@pytest.fixture(scope="module")
def vault_host() -> Iterator:  # type: ignore[type-arg]
    from tests.sshd import start_sshd, stop_sshd

    s = start_sshd(["destroyed"])
    yield s
    stop_sshd(s)


def test_sftp_vault_destroyed_on_the_vault_host(vault_host, tmp_path: Path, cli: Cli,  # type: ignore[no-untyped-def]
                                                signing_key: Path) -> None:
    t = vault_host.tenants["destroyed"]
    cli("vault", "init", t.repo, "--kdf-cost", "12", "--pack-size", "1MiB")
    vault_host.give_to("destroyed")
    src = files(tmp_path / "src", "sftp")
    pol = tmp_path / "p.yaml"
    import yaml

    pol.write_text(yaml.safe_dump({"policy": "remote", "client": "destroyed", "vault": vault_host.url("destroyed"),
                                   "remote": {"known_hosts": vault_host.known_hosts, "identity_file": t.key},
                                   "sources": [{"name": "docs", "plugin": "files", "paths": [str(src)]}]}))
    client = Cli(vault_host.env("destroyed"))
    assert json.loads(client("run", str(pol), "--json").stdout)["exit_code"] == 0
    # the client's own key cannot destroy (the vault is append-only for it) …
    p = client("tenant", "destroy", "--client", "destroyed", "--vault", vault_host.url("destroyed"),
               "--certificate", str(tmp_path / "c.json"), "--signing-key", str(signing_key), "--yes", check=False)
    assert p.returncode != 0 and objects(Path(t.repo))
    # … the provider does, on the vault host
    cert = tmp_path / "cert.json"
    done = json.loads(cli("tenant", "destroy", "--client", "destroyed", "--vault", t.repo, "--certificate",
                          str(cert), "--signing-key", str(signing_key), "--yes", "--json").stdout)
    assert done["complete"] and done["vaults"][0]["keys_destroyed"] and objects(Path(t.repo)) == []
    p = client("snapshots", "--vault", vault_host.url("destroyed"), check=False)
    assert p.returncode != 0
    assert json.loads(cli("certificate", "verify", str(cert), "--json").stdout)["valid"]


@pytest.mark.s3
def test_s3_every_version_purged_and_object_lock_scheduled(s3server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          signing_key: Path) -> None:
    from tests.s3server import PROVIDER

    provider = Cli(s3server.env(PROVIDER))
    s3 = s3server.client()
    s3.create_bucket(Bucket="destroy-plain")
    src = files(tmp_path / "src", "s3")
    for url, extra in (("s3://destroy-plain/acme", ()), ("s3://destroy-locked/acme", ("--object-lock", "1"))):
        provider("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB", *extra)
        pol = tmp_path / "p.yaml"
        import yaml

        pol.write_text(yaml.safe_dump({"policy": "s3", "client": "acme", "vault": url,
                                       "sources": [{"name": "docs", "plugin": "files", "paths": [str(src)]}]}))
        provider("run", str(pol))
    # a compromised client key hid one object: it is found and deleted all the same
    keys = s3.list_objects_v2(Bucket="destroy-plain", Prefix="acme/snapshots/")["Contents"]
    s3.delete_object(Bucket="destroy-plain", Key=keys[0]["Key"])  # a delete marker (versioned bucket)
    cert = tmp_path / "cert.json"
    p = provider("tenant", "destroy", "--client", "acme", "--vault", "s3://destroy-plain/acme", "--vault",
                 "s3://destroy-locked/acme", "--certificate", str(cert), "--signing-key", str(signing_key), "--yes",
                 "--json", check=False)
    assert p.returncode == 9, p.stderr  # deletions still scheduled
    done = json.loads(p.stdout)
    plain, locked = done["vaults"]
    assert plain["keys_destroyed"] and plain["remaining_objects"] == 0
    left = s3.list_object_versions(Bucket="destroy-plain", Prefix="acme/")
    assert not left.get("Versions") and not left.get("DeleteMarkers")  # nothing, not even old versions
    assert not locked["keys_destroyed"] and locked["remaining_objects"] > 0 and locked["scheduled"]
    assert all(s["retained_until"] for s in locked["scheduled"]) and done["complete"] is False
    doc = json.loads(cert.read_text())
    assert doc["certificate"]["complete"] is False
    ok = json.loads(provider("certificate", "verify", str(cert), "--public-key", f"{signing_key}.pub",
                             "--json").stdout)
    assert ok["valid"]


def test_destruction_killed_half_way_resumes_from_its_marker(tmp_path: Path, cli: Cli, signing_key: Path) -> None:
    """Killed in the middle of the data, then killed again after the config and keys went (the vault no longer
    opens): each next run resumes and finishes; a marker naming another client is refused."""
    from orchestrator.tenant.destroy import MARKER, destroy_vault
    from orchestrator.vault.backend.local import LocalBackend

    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12", "--pack-size", "1MiB")
    src = files(tmp_path / "src", "kill")
    cli("run", str(write_policy(tmp_path, vault, [{"name": "docs", "plugin": "files", "paths": [str(src)]}])))

    class Dies(LocalBackend):
        """The process 'dies' at the n-th deletion, or when it comes to ``at``."""

        def __init__(self, root: str, n: int = 10**9, at: str = "") -> None:
            super().__init__(root)
            self.n, self.at = n, at

        def delete(self, name: str) -> None:
            self.n -= 1
            if self.n < 0 or name == self.at:
                raise KeyboardInterrupt("killed")
            super().delete(name)

    with pytest.raises(KeyboardInterrupt):
        destroy_vault(Dies(str(vault), n=2), PASS, "acme", dry_run=False)
    assert (vault / "config").exists() and (vault / MARKER).exists()
    with pytest.raises(KeyboardInterrupt):
        destroy_vault(Dies(str(vault), at=MARKER), PASS, "acme", dry_run=False)
    assert objects(vault) == [MARKER]  # config and keys gone: the vault no longer opens
    p = cli("tenant", "destroy", "--client", "other", "--vault", str(vault), "--certificate",
            str(tmp_path / "x.json"), "--signing-key", str(signing_key), "--yes", check=False)
    assert_one_line_error(p, 1, "being destroyed for client 'acme'")
    done = json.loads(cli("tenant", "destroy", "--client", "acme", "--vault", str(vault), "--certificate",
                          str(tmp_path / "c.json"), "--signing-key", str(signing_key), "--yes", "--json").stdout)
    assert done["complete"] and objects(vault) == [] and done["vaults"][0]["mode"] == "whole vault"
