"""The shares plugin against a real Samba server on loopback: nested folders, unicode names, a file locked by
another client, wrong credentials, a missing share, and restore."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import smbclient

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.restore.files import restore_files
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS
from tests.filetrees import write_policy
from tests.samba import SambaServer

pytestmark = [pytest.mark.files, pytest.mark.smb]


@pytest.fixture
def share(samba: SambaServer) -> SambaServer:
    root = Path(samba.share_dir)
    for p in root.iterdir():
        os.system(f"rm -rf '{p}'")
    (root / "Compta 2026" / "Trimestre 1" / "Factures").mkdir(parents=True)
    (root / "Compta 2026" / "Trimestre 1" / "Factures" / "facture-001.pdf").write_bytes(os.urandom(300_000))
    (root / "Compta 2026" / "bilan été.xlsx").write_bytes(b"bilan " * 5000)
    (root / "Éléments partagés").mkdir()
    (root / "Éléments partagés" / "日本語.txt").write_text("こんにちは")
    (root / "verrouillé.docx").write_bytes(b"locked by someone else")
    (root / "empty").mkdir()
    os.system(f"chmod -R a+rX '{root}'")
    return samba


def _policy(tmp: Path, samba: SambaServer, password_env: str = "SHARE_PASSWORD", url: str | None = None):  # type: ignore[no-untyped-def]
    vault = tmp / "vault"
    if not vault.exists():
        Vault.create(LocalBackend(str(vault)), PASS, kdf_cost=12)
    path = write_policy(tmp, vault, [{"name": "fileserver", "plugin": "shares", "url": url or samba.url(),
                                      "username": samba.user, "password_env": password_env}])
    return load_policy(str(path)), Vault.open(LocalBackend(str(vault)), PASS), Catalog(f"sqlite:///{tmp}/c.db")


def test_share_backup_reports_locked_file_and_restores(share: SambaServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARE_PASSWORD", share.password)
    policy, vault, catalog = _policy(tmp_path, share)
    locker_cache: dict = {}
    smbclient.register_session("127.0.0.1", username=share.user, password=share.password, port=share.port,
                               connection_cache=locker_cache)
    locked = smbclient.open_file(f"\\\\127.0.0.1\\{share.share}\\verrouillé.docx", mode="rb", share_access=None,
                                 port=share.port, connection_cache=locker_cache)
    try:
        rep = run_policy(policy, vault, catalog)
    finally:
        locked.close()
        smbclient.reset_connection_cache(connection_cache=locker_cache)
    res = rep.sources[0]
    assert res.status == "partial", res
    assert len(res.errors) == 1 and "verrouillé.docx" in res.errors[0]
    assert res.files == 4 and res.files_read == 3

    out = tmp_path / "restored"
    snap = vault.read_snapshot(res.snapshot)
    r = restore_files(vault, snap, [share.url()], str(out), "never", False, catalog)
    assert any("verrouillé.docx" in e and "not backed up" in e for e in r.errors)  # said again at restore
    src = Path(share.share_dir)
    for rel in ("Compta 2026/Trimestre 1/Factures/facture-001.pdf", "Compta 2026/bilan été.xlsx",
                "Éléments partagés/日本語.txt"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()
        assert abs(os.stat(out / rel).st_mtime_ns - os.stat(src / rel).st_mtime_ns) < 1000  # µs over SMB
    assert (out / "empty").is_dir()
    names = {r["name"] for r in catalog.ls(catalog.snapshot(res.snapshot), share.url("Compta 2026"))}
    assert names == {"Trimestre 1", "bilan été.xlsx"}

    second = run_policy(policy, vault, catalog).sources[0]  # nothing locked now, nothing else changed
    assert second.status == "ok" and second.files_read == 1 and second.files_unchanged == 3


def test_share_errors_are_clear(share: SambaServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARE_PASSWORD", "not the password")
    policy, vault, catalog = _policy(tmp_path, share)
    res = run_policy(policy, vault, catalog).sources[0]
    assert res.status == "failed" and "wrong user name or password" in res.errors[0], res.errors

    monkeypatch.setenv("SHARE_PASSWORD", share.password)
    policy, vault, catalog = _policy(tmp_path, share, url=f"smb://127.0.0.1:{share.port}/nosuchshare")
    res = run_policy(policy, vault, catalog).sources[0]
    assert res.status == "failed" and "does not exist" in res.errors[0], res.errors

    policy, vault, catalog = _policy(tmp_path, share, url="smb://127.0.0.1:1/compta")
    res = run_policy(policy, vault, catalog).sources[0]
    assert res.status == "failed" and "cannot connect" in res.errors[0], res.errors
    assert vault.list_snapshots()[0] == []  # nothing half-written


def test_restore_in_place_on_the_share_and_into_another_share_folder(share: SambaServer, tmp_path: Path, cli,
                                                                      monkeypatch) -> None:
    import json

    monkeypatch.setenv("SHARE_PASSWORD", share.password)
    src = Path(share.share_dir)
    os.system(f"chown -R {share.user}: '{src}'")  # the share's files belong to the user the backup logs on as
    policy, vault, catalog = _policy(tmp_path, share)
    rep = run_policy(policy, vault, catalog)
    snap_id = rep.sources[0].snapshot
    bilan = src / "Compta 2026" / "bilan été.xlsx"
    facture = src / "Compta 2026" / "Trimestre 1" / "Factures" / "facture-001.pdf"
    original_bilan, original_facture = bilan.read_bytes(), facture.read_bytes()
    bilan_mtime = os.stat(bilan).st_mtime_ns
    # the client overwrites one file and deletes a whole folder
    bilan.write_bytes(b"ruined by ransomware")
    os.system(f"rm -rf '{src / 'Compta 2026' / 'Trimestre 1'}'")
    env_args = ["--vault", str(tmp_path / "vault"), "--catalog", f"sqlite:///{tmp_path}/c.db", "--json"]

    # in place, --overwrite never: the deleted folder comes back, the existing file is left alone
    p = cli("restore", "files", snap_id, share.url("Compta 2026"), "--in-place", *env_args, check=False)
    res = json.loads(p.stdout)
    assert p.returncode == 0, res
    assert res["skipped"] == [share.url("Compta 2026/bilan été.xlsx")] and res["files"] == 1, res
    assert facture.read_bytes() == original_facture
    assert bilan.read_bytes() == b"ruined by ransomware"

    # in place, --overwrite always: replaced through a temporary name, modification time put back
    p = cli("restore", "files", snap_id, share.url("Compta 2026/bilan été.xlsx"), "--in-place", "--overwrite",
            "always", *env_args, check=False)
    assert json.loads(p.stdout)["files"] == 1, p.stdout
    assert bilan.read_bytes() == original_bilan
    assert abs(os.stat(bilan).st_mtime_ns - bilan_mtime) < 1000
    assert not [n for n in os.listdir(bilan.parent) if n.startswith(".dobaas-restore-")]

    # into another folder of the share, for the client to compare
    p = cli("restore", "files", snap_id, share.url("Éléments partagés"), "--target", share.url("Restauration"),
            *env_args)
    assert json.loads(p.stdout)["files"] == 1
    assert (src / "Restauration" / "Éléments partagés" / "日本語.txt").read_text() == "こんにちは"
    targets = [r["target"] for r in catalog.restores()]  # the audit trail
    assert targets == ["(original location)", "(original location)", share.url("Restauration")], targets

    # wrong password: a one-line error, nothing written
    monkeypatch.setenv("SHARE_PASSWORD", "wrong")
    p = cli("restore", "files", snap_id, share.url("Compta 2026"), "--in-place", *env_args, check=False)
    assert p.returncode == 1 and "wrong user name or password" in p.stderr, p.stderr


def test_ntfs_permissions_are_captured_and_put_back(share: SambaServer, tmp_path: Path, cli, monkeypatch) -> None:
    """Samba presents POSIX ACLs as NT security descriptors: what a Windows client sees and sets."""
    import base64
    import json
    import subprocess

    monkeypatch.setenv("SHARE_PASSWORD", share.password)
    src = Path(share.share_dir)
    os.system(f"chown -R {share.user}: '{src}'")
    doc = src / "Compta 2026" / "bilan été.xlsx"
    subprocess.run(["setfacl", "-m", "u:nobody:r,g:nogroup:rw", str(doc)], check=True)
    subprocess.run(["setfacl", "-m", "u:nobody:rx", str(src / "Compta 2026")], check=True)
    acl_before = subprocess.run(["getfacl", "-cp", str(doc)], capture_output=True, text=True).stdout
    policy, vault, catalog = _policy(tmp_path, share)
    first = run_policy(policy, vault, catalog).sources[0]
    from orchestrator.vault.tree import iter_tree

    snap = vault.read_snapshot(first.snapshot)
    entries = {e["p"]: e for e in iter_tree(snap.items[0], lambda c: vault.read_chunk(c))}
    sd = base64.b64decode(entries["Compta 2026/bilan été.xlsx"]["sd"])
    assert sd[0] == 1 and len(sd) > 40  # a self-relative SECURITY_DESCRIPTOR, revision 1, with a DACL

    second = run_policy(policy, Vault.open(vault.backend, PASS), catalog).sources[0]
    assert second.files_read == 0 and second.files_unchanged == second.files  # nothing asked again

    subprocess.run(["setfacl", "-b", str(doc)], check=True)  # someone strips the permissions
    assert "nobody" not in subprocess.run(["getfacl", "-cp", str(doc)], capture_output=True, text=True).stdout
    p = cli("restore", "files", first.snapshot, share.url("Compta 2026/bilan été.xlsx"), "--in-place",
            "--overwrite", "always", "--vault", str(tmp_path / "vault"), "--json", check=False)
    assert json.loads(p.stdout)["status"] == "ok", p.stdout
    acl_after = subprocess.run(["getfacl", "-cp", str(doc)], capture_output=True, text=True).stdout
    assert "user:nobody:r--" in acl_after and "group:nogroup:rw-" in acl_after, (acl_before, acl_after)


def test_alternate_data_streams_are_saved_and_restored_on_the_share(share: SambaServer, tmp_path: Path, cli,
                                                                    monkeypatch) -> None:
    """Samba with streams_xattr keeps NTFS-style named streams (the mark of the web, Office metadata…)."""
    import json

    monkeypatch.setenv("SHARE_PASSWORD", share.password)
    os.system(f"chown -R {share.user}: '{share.share_dir}'")
    cache: dict = {}
    smbclient.register_session("127.0.0.1", username=share.user, password=share.password, port=share.port,
                               connection_cache=cache)
    kw = {"port": share.port, "connection_cache": cache}
    doc = f"\\\\127.0.0.1\\{share.share}\\Compta 2026\\bilan été.xlsx"
    zone = b"[ZoneTransfer]\r\nZoneId=3\r\n"
    big = os.urandom(3000)  # streams_xattr keeps streams in xattrs: ext4 holds up to a block (4 KiB)
    try:
        with smbclient.open_file(doc + ":Zone.Identifier", mode="wb", **kw) as f:
            f.write(zone)
        with smbclient.open_file(doc + ":résumé", mode="wb", **kw) as f:
            f.write(big)
        policy, vault, catalog = _policy(tmp_path, share)
        res = run_policy(policy, vault, catalog).sources[0]
        assert res.status == "partial" or res.status == "ok"
        assert not [w for w in res.warnings if "stream" in w], res.warnings
        from orchestrator.vault.tree import iter_tree

        snap = vault.read_snapshot(res.snapshot)
        entry = next(e for e in iter_tree(snap.items[0], lambda c: vault.read_chunk(c))
                     if e["p"] == "Compta 2026/bilan été.xlsx")
        assert set(entry["xs"]) == {":Zone.Identifier:$DATA", ":résumé:$DATA"} and "xn" not in entry

        out = tmp_path / "local"  # a local restore keeps them as Samba's streams_xattr would
        r = restore_files(vault, snap, [share.url("Compta 2026/bilan été.xlsx")], str(out), "never", False, catalog)
        assert r.status == "ok", r.errors
        local = out / "Compta 2026" / "bilan été.xlsx"
        assert os.getxattr(local, "user.DosStream.Zone.Identifier:$DATA") == zone
        assert os.getxattr(local, "user.DosStream.résumé:$DATA") == big

        smbclient.remove(doc, **kw)  # the file and its streams are gone
        p = cli("restore", "files", res.snapshot, share.url("Compta 2026/bilan été.xlsx"), "--in-place",
                "--vault", str(tmp_path / "vault"), "--json", check=False)
        assert json.loads(p.stdout)["files"] == 1, p.stdout
        with smbclient.open_file(doc + ":Zone.Identifier", mode="rb", **kw) as f:
            assert f.read() == zone
        with smbclient.open_file(doc + ":résumé", mode="rb", **kw) as f:
            assert f.read() == big
        names = {s.name for s in smbclient.liststreams(doc, **kw)}
        assert names == {"::$DATA", ":Zone.Identifier:$DATA", ":résumé:$DATA"}
    finally:
        smbclient.reset_connection_cache(connection_cache=cache)
