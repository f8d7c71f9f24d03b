"""Exchange over the strict WS-Man double (pywinrm unmodified, real NTLM over HTTPS, only the shipped scripts
accepted), the model organisation writing the snapshot's files on the real Samba share: full and incremental
backups, logs truncated only once the snapshot is published, a DAG's passive copy chosen, the recovery-database
restore, and the failures named with the logs kept."""

from __future__ import annotations

import json
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
from tests.exchange_model import Organization, Server
from tests.samba import SambaServer, share_folder
from tests.wsman import Double, start, unparsable_scripts

pytestmark = pytest.mark.exchange
SCRIPTS = Path(__file__).resolve().parent.parent / "plugins" / "exchange" / "scripts"
USER, PASSWORD = "ACME\\svc-backup", "Exch-backup-1"


@pytest.fixture(scope="module")
def doubles() -> Iterator[tuple[Double, Double]]:
    """EXCH1 and EXCH2, two Exchange servers (DAG members) on two ports, trusted by the same certificate."""
    one, stop_one = start({USER: PASSWORD}, [SCRIPTS])
    two, stop_two = start({USER: PASSWORD}, [SCRIPTS], certificate=(one.key_file, one.ca_file, one.thumbprint))
    yield one, two
    stop_one()
    stop_two()


@pytest.fixture
def org(doubles: tuple[Double, Double], samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    one, two = doubles
    folder, path = share_folder(samba.share_dir, "exch")
    org = Organization(path, f"\\\\fs1\\{samba.share}\\{folder}")
    for name in ("EXCH1", "EXCH2"):
        org.servers[name] = Server(name, str(tmp_path / name))
    one.handlers, two.handlers = org.handlers("EXCH1"), org.handlers("EXCH2")
    one.calls.clear()
    two.calls.clear()
    monkeypatch.setenv("EXCH_PASSWORD", PASSWORD)
    monkeypatch.setenv("EXCH_SMB_PASSWORD", samba.password)
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")

    def run(**extra: object) -> list:  # type: ignore[type-arg]
        pfile = tmp_path / "exch.yaml"
        pfile.write_text(yaml.safe_dump({"policy": "mail", "client": "acme", "vault": str(vault_dir), "sources": [{
            "name": "mail", "plugin": "exchange", "host": "127.0.0.1", "port": one.port, "user": USER,
            "password_env": "EXCH_PASSWORD", "thumbprint": one.thumbprint, "share": samba.url(folder),
            "share_path": org.share_unc, "share_user": samba.user, "share_password_env": "EXCH_SMB_PASSWORD",
            "servers": {"EXCH2": {"host": "127.0.0.1", "port": two.port}}, "wait_minutes": 1, **extra}]}))
        return run_policy(load_policy(str(pfile)), Vault.open(LocalBackend(str(vault_dir)), PASS), catalog).sources

    def vault() -> Vault:
        return Vault.open(LocalBackend(str(vault_dir)), PASS)

    cli = Cli({"EXCH_PASSWORD": PASSWORD, "EXCH_SMB_PASSWORD": samba.password})
    return org, run, vault, Path(path), cli, vault_dir


def _mail(org: Organization, db: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        org.deliver(db, "alice", f"Inbox/{i:03d}.eml", f"message {i} " * 20)
        org.deliver(db, "bob", f"Inbox/{i:03d}.eml", f"bob {i}")
        if i % 3 == 2:
            org.roll(db, flush=i % 6 == 5)


def test_the_shipped_scripts_parse_as_powershell() -> None:
    assert len(list(SCRIPTS.glob("*.ps1"))) == 6 and unparsable_scripts(SCRIPTS) == []


def test_full_then_incremental_logs_truncated_after_publication_and_recovery_database_restore(org) -> None:
    org, run, vault, share, cli, vault_dir = org
    org.add_database("DB01", "EXCH1")
    _mail(org, "DB01", 9)
    before = org.log_generations("DB01", "EXCH1")
    published_at_truncation: list[int] = []
    org.on_truncate = lambda db: published_at_truncation.append(len(vault().list_snapshots()[0]))
    full_edb = Path(org.servers["EXCH1"].local(org.databases["DB01"].edb_path)).read_bytes()
    (full,) = run()
    assert full.status == "ok", full.errors
    # Exchange truncated only once the snapshot was in the vault, and only what the snapshot's EDB no longer needs
    assert published_at_truncation == [1] and org.sessions == ["completed"]
    checkpoint = org.databases["DB01"].checkpoint
    assert org.log_generations("DB01", "EXCH1") == [g for g in before if g >= checkpoint] and before[0] < checkpoint
    snap = vault().read_snapshot(full.snapshot)
    assert snap.meta["method"] == "Full" and snap.meta["ese"]["state"] == "Dirty Shutdown"
    assert snap.meta["ese"]["log_required"] == [checkpoint, org.databases["DB01"].gen]
    names = {i["name"] for i in snap.items}
    assert "DB01.edb" in names and "logs/E00.log" in names and not any(n.startswith("logs/E0000000001") for n in
                                                                          names if checkpoint > 1)
    assert list(share.iterdir()) == []  # the staging folder left the share

    _mail(org, "DB01", 7, start=9)
    expected = json.loads(json.dumps(org.databases["DB01"].mailboxes))
    (inc,) = run()
    assert inc.status == "ok" and not inc.warnings, (inc.errors, inc.warnings)
    s_inc = vault().read_snapshot(inc.snapshot)
    assert s_inc.meta["method"] == "Incremental" and "DB01.edb" in {i["name"] for i in s_inc.items}
    assert inc.bytes_new < full.bytes_new  # only the new logs were read and stored

    _mail(org, "DB01", 3, start=16)  # mail after the backup: not in the restore
    p = cli("restore", "exchange", inc.snapshot, "--vault", str(vault_dir), "--target-folder",
            "R:\\Recovery\\DB01", "--recovery-name", "RDB01", "--mailbox", "alice", "--json", check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["restored_as"] == "RDB01" and out["requests"][0]["Mailbox"] == "alice"
    assert org.recovery["RDB01"]["mailboxes"] == expected  # soft recovery replayed the full's EDB + every log
    restored = {k.split("/", 1)[1]: v for k, v in org.databases["DB01"].mailboxes["alice"].items()
                if k.startswith("Restored RDB01/")}
    assert restored == expected["alice"]
    assert [x.name for x in share.iterdir()] == []
    # never over the live database, never a name taken
    p = cli("restore", "exchange", inc.snapshot, "--vault", str(vault_dir), "--target-folder",
            "E:\\Mailbox\\DB01\\restore", check=False)
    assert p.returncode == 2 and "live database" in p.stderr
    p = cli("restore", "exchange", inc.snapshot, "--vault", str(vault_dir), "--target-folder", "R:\\Other",
            "--recovery-name", "RDB01", check=False)
    assert p.returncode == 1 and "already exists" in p.stderr
    # files only: the EDB and its logs on the share, for a technician
    p = cli("restore", "exchange", full.snapshot, "--vault", str(vault_dir), "--files-only", "--json", check=False)
    assert p.returncode == 0, p.stderr
    (kept,) = list(share.iterdir())
    assert json.loads(p.stdout)["restored_as"].endswith(kept.name)
    assert (kept / "DB01.edb").read_bytes() == full_edb and (kept / "logs" / "E00.log").exists()


def test_a_failed_upload_leaves_every_log_and_the_next_run_truncates(org) -> None:
    org, run, vault, share, _cli, _vd = org
    org.add_database("DB01", "EXCH1")
    _mail(org, "DB01", 15)  # the last flush at 12: generations after it are needed to replay
    before = org.log_generations("DB01", "EXCH1")
    org.lose_staged_log = True  # the copy is cut: a log vanishes before dobaas reads it
    (res,) = run()
    assert res.status == "failed" and "cannot be opened" in " ".join(res.errors), (res.errors, org.sessions)
    assert org.sessions == ["abandoned"] and org.log_generations("DB01", "EXCH1") == before
    assert vault().list_snapshots()[0] == [] and list(share.iterdir()) == []
    org.lose_staged_log = False
    (res,) = run()
    assert res.status == "ok", res.errors
    assert org.sessions[-1] == "completed" and org.log_generations("DB01", "EXCH1") != before


def test_a_dag_backs_up_a_healthy_passive_copy_else_the_active_one_with_a_warning(org, doubles) -> None:
    org, run, vault, _share, _cli, _vd = org
    one, two = doubles
    org.add_database("DB02", "EXCH1", passive=["EXCH2"])
    _mail(org, "DB02", 6)
    (res,) = run(databases=["DB02"])
    assert res.status == "ok", res.errors
    session = ["Test-DobaasExchangeBackup.ps1", "Copy-DobaasExchangeShadow.ps1", "Backup-DobaasExchangeDatabase.ps1"]
    assert [n for n, _ in two.calls] == session  # on the passive copy's server
    assert [n for n, _ in one.calls] == ["Get-DobaasExchangeDatabases.ps1"]  # discovery only
    meta = vault().read_snapshot(res.snapshot).meta
    assert (meta["server"], meta["copy"], meta["dag"]) == ("EXCH2", "passive", "DAG01")
    assert "Replica Writer" in res.consistency
    # logs truncated on both copies
    assert org.log_generations("DB02", "EXCH1") == org.log_generations("DB02", "EXCH2")
    org.databases["DB02"].copies["EXCH2"] = "FailedAndSuspended"
    _mail(org, "DB02", 3, start=6)
    (res,) = run(databases=["DB02"])
    assert res.status == "ok", res.errors
    assert any("no healthy passive copy" in w and "EXCH2: FailedAndSuspended" in w for w in res.warnings)
    assert vault().read_snapshot(res.snapshot).meta["server"] == "EXCH1"
    (res,) = run(databases=["DB09"])
    assert res.status == "failed" and "no mailbox database DB09" in " ".join(res.errors)


@pytest.mark.parametrize("fault, expect", [
    ("edb", "the EDB copied from the snapshot is damaged (header checksum mismatch"),
    ("store", "'Microsoft Exchange Writer' is not registered"),
    ("writer", "is not ready: state Failed, last error: Retryable error"),
    ("rights", "no Exchange management role"),
])
def test_service_stopped_writer_failed_rights_missing_are_named_and_keep_the_logs(org, fault: str,
                                                                                    expect: str) -> None:
    org, run, vault, share, _cli, _vd = org
    org.add_database("DB01", "EXCH1")
    _mail(org, "DB01", 6)
    before = org.log_generations("DB01", "EXCH1")
    server = org.servers["EXCH1"]
    server.information_store = fault != "store"
    server.writer_failure = ("Failed", "Retryable error") if fault == "writer" else None
    server.rights = fault != "rights"
    org.damage_staged_edb = fault == "edb"
    (res,) = run()
    assert res.status == "failed" and expect in " ".join(res.errors), res.errors
    assert org.log_generations("DB01", "EXCH1") == before and list(share.iterdir()) == []
    assert vault().list_snapshots()[0] == []
    server.information_store, server.writer_failure, server.rights = True, None, True
    org.damage_staged_edb = False
    assert run()[0].status == "ok"


def test_a_gap_in_the_logs_or_circular_logging_makes_a_full_backup(org) -> None:
    org, run, vault, _share, _cli, _vd = org
    org.add_database("DB01", "EXCH1")
    _mail(org, "DB01", 6)
    assert run()[0].status == "ok"
    _mail(org, "DB01", 6, start=6)
    org.truncate_elsewhere("DB01")  # another backup tool truncated the logs dobaas has not stored
    (res,) = run()
    assert res.status == "ok" and any("are gone from the server" in w for w in res.warnings), res.warnings
    assert vault().read_snapshot(res.snapshot).meta["method"] == "Full"
    assert org.sessions == ["completed", "abandoned", "completed"]  # the incremental session ended untruncated
    org.databases["DB01"].circular = True
    _mail(org, "DB01", 3, start=12)
    (res,) = run()
    assert res.status == "ok" and any("circular logging" in w for w in res.warnings), res.warnings
    assert vault().read_snapshot(res.snapshot).meta["method"] == "Full"


def test_a_run_killed_mid_backup_truncates_nothing_and_the_next_run_succeeds(org, tmp_path: Path) -> None:
    import signal

    org, run, vault, share, cli, _vd = org
    org.add_database("DB01", "EXCH1")
    _mail(org, "DB01", 15)
    before = org.log_generations("DB01", "EXCH1")
    run()  # writes the policy file (and a first snapshot)
    _mail(org, "DB01", 6, start=15)
    before = org.log_generations("DB01", "EXCH1")
    env = Cli({**cli.env, "DOBAAS_CATALOG": str(tmp_path / "cli-catalog.db")})
    org.ready.clear()
    proc = env.popen("run", str(tmp_path / "exch.yaml"))
    assert org.ready.wait(60), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert org.log_generations("DB01", "EXCH1") == before and org.sessions == ["completed"]
    (res,) = run()  # tells the killed run's session to give up, then backs up
    assert res.status == "ok", res.errors
    assert sorted(org.sessions) == ["abandoned", "completed", "completed"]
    assert list(share.iterdir()) == [] and len(vault().list_snapshots()[0]) == 2
