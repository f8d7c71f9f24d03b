"""Windows system state (wbadmin) over the strict WS-Man double (pywinrm unmodified, real NTLM over HTTPS, only
the shipped script accepted); the backup tree is written by the model host on the real Samba share and read
over SMB, stored file by file, and removed from the share whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli
from tests.samba import SambaServer, share_folder
from tests.winsystemstate_model import SystemStateHost
from tests.wsman import Double, start, unparsable_scripts

pytestmark = pytest.mark.winsystemstate
SCRIPTS = Path(__file__).resolve().parent.parent / "plugins" / "winsystemstate" / "scripts"
USER, PASSWORD = "ACME\\backup", "Ss-backup-pass-1"


@pytest.fixture(scope="module")
def wsman() -> Iterator[Double]:
    double, stop = start({USER: PASSWORD}, [SCRIPTS])
    yield double
    stop()


@pytest.fixture
def ss(wsman: Double, samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    folder, path = share_folder(samba.share_dir, "wsb")
    host = SystemStateHost(path, f"\\\\fs1\\{samba.share}\\{folder}")
    wsman.handlers = host.handlers()
    monkeypatch.setenv("SS_PASSWORD", PASSWORD)
    monkeypatch.setenv("SS_SMB_PASSWORD", samba.password)
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    pfile = tmp_path / "ss.yaml"
    pfile.write_text(yaml.safe_dump({"policy": "ss", "client": "acme", "vault": str(vault_dir), "sources": [{
        "name": "dc01", "plugin": "winsystemstate", "host": "127.0.0.1", "port": wsman.port, "user": USER,
        "password_env": "SS_PASSWORD", "thumbprint": wsman.thumbprint, "share": samba.url(folder),
        "share_path": host.share_unc, "share_user": samba.user, "share_password_env": "SS_SMB_PASSWORD"}]}))
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")

    def run():  # type: ignore[no-untyped-def]
        return run_policy(load_policy(str(pfile)), Vault.open(LocalBackend(str(vault_dir)), PASS), catalog).sources[0]

    return host, run, vault_dir, Path(path)


def test_the_shipped_script_parses_as_powershell() -> None:
    assert len(list(SCRIPTS.glob("*.ps1"))) == 1 and unparsable_scripts(SCRIPTS) == []


def test_system_state_stored_file_by_file_and_exported_as_wbadmin_reads_it(ss, tmp_path: Path, cli: Cli) -> None:
    host, run, vault_dir, share = ss
    first = run()
    assert first.status == "ok", first.errors
    written = dict(host.written)
    assert any(k.startswith("WindowsImageBackup/DC01/Backup ") and k.endswith(".vhdx") for k in written)
    assert list(share.iterdir()) == []  # the share keeps nothing once the snapshot is published
    snap = Vault.open(LocalBackend(str(vault_dir)), PASS).read_snapshot(first.snapshot)
    assert sorted(i["name"] for i in snap.items) == sorted(written)
    assert snap.meta["computer"] == "DC01" and snap.meta["files"] == len(written)
    second = run()
    assert second.status == "ok" and second.bytes_new < 0.5 * first.bytes_new  # most of it deduplicated
    out = tmp_path / "export"
    cli("export", first.snapshot, "--vault", str(vault_dir), "--output", str(out))
    (folder,) = [p for p in out.rglob("WindowsImageBackup") if p.is_dir()]
    for rel, data in written.items():
        assert (folder.parent / rel).read_bytes() == data, rel
    assert "wbadmin start systemstaterecovery" in (out / "README.txt").read_text()


@pytest.mark.parametrize("fault, expect", [
    ("feature", "install the Windows Server Backup feature"),
    ("denied", "ERROR - Access is denied."),
    ("writer", "VSS writers: NTDS: Failed, last error: Retryable error"),
])
def test_failures_name_the_cause_and_leave_nothing(ss, fault: str, expect: str) -> None:
    host, run, vault_dir, share = ss
    host.feature = fault != "feature"
    host.access_denied = fault == "denied"
    host.failing_writer = ("NTDS", "Failed", "Retryable error") if fault == "writer" else None
    res = run()
    assert res.status == "failed" and expect in " ".join(res.errors), res.errors
    assert list(share.iterdir()) == []
    assert Vault.open(LocalBackend(str(vault_dir)), PASS).list_snapshots()[0] == []
    host.feature, host.access_denied, host.failing_writer = True, False, None
    assert run().status == "ok"  # fixed: the next run succeeds
