"""SQL Server plugin against a strict TDS double (real pymssql/FreeTDS over TCP, real login checks, only the
modelled statements answered, SQL Server's error numbers) and a model instance whose backup files land in the
real Samba share's directory, read by dobaas over SMB."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import DOBAAS, PASS, Cli
from tests.mssql_model import Instance, start_instance
from tests.samba import SambaServer, share_folder

pytestmark = pytest.mark.mssql
USER, PASSWORD = "backup", "Sql-backup-pass-1"
SHARE_PATH = "\\\\proxy\\sqlbackup"


@pytest.fixture
def sql(samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    folder, share_dir = share_folder(samba.share_dir, "sql")
    inst = Instance(SHARE_PATH, share_dir)
    port, server = start_instance(inst, {USER: PASSWORD})
    inst.port = port
    monkeypatch.setenv("SQL_PASSWORD", PASSWORD)
    monkeypatch.setenv("SMB_PASSWORD", samba.password)
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)

    def policy(dbs: list[str], **extra: object):  # type: ignore[no-untyped-def]
        p = tmp_path / "sql.yaml"
        p.write_text(yaml.safe_dump({"policy": "sql", "client": "acme", "vault": str(vault_dir), "sources": [{
            "name": "sql", "plugin": "mssql", "host": "127.0.0.1", "port": port, "user": USER,
            "password_env": "SQL_PASSWORD", "databases": dbs, "share": samba.url(folder), "share_path": SHARE_PATH,
            "share_user": samba.user, "share_password_env": "SMB_PASSWORD", **extra}]}))
        return load_policy(str(p)), p

    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield inst, policy, vault_dir, catalog, share_dir
    server.shutdown()
    server.server_close()


def _run(vault_dir: Path, catalog: Catalog, policy):  # type: ignore[no-untyped-def]
    return run_policy(policy, Vault.open(LocalBackend(str(vault_dir)), PASS), catalog)


def _files(share_dir: str) -> list[str]:
    return [str(p) for p in Path(share_dir).rglob("*") if p.is_file()]


def _restore(vault_dir: Path, sid: str, *args: str) -> dict:
    p = Cli({"SQL_PASSWORD": PASSWORD, "SMB_PASSWORD": os.environ["SMB_PASSWORD"]})(
        "restore", "mssql", sid[:12], "--vault", str(vault_dir), *args, "--json", check=False)
    return {"code": p.returncode, "err": p.stderr, **(json.loads(p.stdout) if p.returncode == 0 else {})}


def test_a_week_of_fulls_differentials_and_logs_restores_to_last_and_to_a_point_in_time(sql) -> None:
    inst, policy, vault_dir, catalog, share_dir = sql
    db = inst.add("erp")
    pol, _ = policy(["erp"], full_every=3)
    modes, snaps, marks = [], [], []
    for day in range(5):
        for i in range(3):
            inst.insert(db, f"day{day}-row{i}")
            marks.append((inst.clock, len(db.rows)))
        (res,) = _run(vault_dir, catalog, pol).sources
        assert res.status == "ok", res.errors
        v = Vault.open(LocalBackend(str(vault_dir)), PASS)
        snap = v.read_snapshot(res.snapshot)
        modes.append(snap.meta["backup"])
        snaps.append(snap)
        assert _files(share_dir) == [], "the share keeps nothing once the snapshot is published"
    assert modes == ["full", "differential", "differential", "full", "differential"]
    last = snaps[-1]
    assert sorted(i["name"] for i in last.items) == ["diff.bak", "full.bak", "log-0001.trn", "log-0002.trn"]
    everything = [list(r) for r in db.rows]
    r = _restore(vault_dir, last.id, "--as-database", "erp_last")
    assert r["code"] == 0, r["err"]
    assert inst.databases["erp_last"].rows == everything and inst.databases["erp_last"].state == "ONLINE"
    # between two log backups of the last snapshot's chain: exactly the rows committed by then
    t, count = marks[-2]
    r = _restore(vault_dir, last.id, "--as-database", "erp_pit",
                 "--to-time", datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S"))
    assert r["code"] == 0, r["err"]
    assert inst.databases["erp_pit"].rows == everything[:count]
    assert r["backups_applied"][0] == "full.bak" and r["backups_applied"][-1].endswith(".trn")
    too_early = datetime.fromtimestamp(marks[0][0]).strftime("%Y-%m-%d %H:%M:%S")
    r = _restore(vault_dir, last.id, "--as-database", "erp_x", "--to-time", too_early)
    assert r["code"] == 2 and "outside what this snapshot covers" in r["err"], r["err"]
    r = _restore(vault_dir, last.id, "--as-database", "erp_last")
    assert r["code"] == 2 and "already exists" in r["err"]
    assert "erp_x" not in inst.databases and _files(share_dir) == []
    statements = " ".join(inst.statements)
    assert "WITH CHECKSUM, INIT, FORMAT" in statements and "DBCC CHECKDB (N'erp_pit')" in statements

    # reversibility: the backup files as SQL Server wrote them, and the RESTORE statements in order
    out = Path(str(vault_dir)).parent / "export"
    p = subprocess.run([DOBAAS, "export", last.id, "--vault", str(vault_dir), "--output", str(out)],
                       env={**os.environ, "DOBAAS_PASSPHRASE": PASS}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in out.rglob("*") if f.suffix in (".bak", ".trn"))
    assert names == ["diff.bak", "full.bak", "log-0001.trn", "log-0002.trn"]
    script = next(out.rglob("restore.sql")).read_text()
    assert script.index("full.bak") < script.index("diff.bak") < script.index("log-0002.trn")
    assert script.rstrip().endswith("WITH RECOVERY;")


def test_a_backup_taken_by_another_tool_breaks_the_chain_and_the_next_run_is_a_full(sql) -> None:
    inst, policy, vault_dir, catalog, _share = sql
    db = inst.add("compta_2026")
    pol, _ = policy(["compta_*"])
    assert _run(vault_dir, catalog, pol).sources[0].status == "ok"
    inst.insert(db, "a")
    inst.backup("compta_2026", "D", f"{SHARE_PATH}\\other-tool\\nightly.bak", {"CHECKSUM"}, by="ACME\\sqladmin")
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "ok"
    assert any("taken outside Do'BaaS by ACME\\sqladmin" in w and "full backup taken" in w for w in res.warnings)
    snap = Vault.open(LocalBackend(str(vault_dir)), PASS).read_snapshot(res.snapshot)
    assert snap.meta["backup"] == "full"


def test_simple_recovery_has_no_log_backups_and_says_so(sql) -> None:
    inst, policy, vault_dir, catalog, _share = sql
    inst.add("staging", recovery="SIMPLE")
    (res,) = _run(vault_dir, catalog, policy(["staging"])[0]).sources
    assert res.status == "ok"
    assert any("SIMPLE recovery model" in w and "no point-in-time restore" in w for w in res.warnings)
    assert not any("BACKUP LOG" in s for s in inst.statements)


def test_login_failure_missing_permission_unwritable_share_and_offline_database(sql, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inst, policy, vault_dir, catalog, share_dir = sql
    db = inst.add("erp")
    monkeypatch.setenv("SQL_PASSWORD", "wrong")
    (res,) = _run(vault_dir, catalog, policy(["erp"])[0]).sources
    assert res.status == "failed" and "login failed for backup (18456)" in res.errors[0]
    monkeypatch.setenv("SQL_PASSWORD", PASSWORD)
    inst.can_backup = False
    (res,) = _run(vault_dir, catalog, policy(["erp"])[0]).sources
    assert res.status == "failed" and "262" in res.errors[0] and "db_backupoperator" in res.errors[0]
    inst.can_backup, inst.share_writable = True, False
    (res,) = _run(vault_dir, catalog, policy(["erp"])[0]).sources
    assert res.status == "failed" and "3201" in res.errors[0] and "service account" in res.errors[0]
    inst.share_writable, db.state = True, "OFFLINE"
    (res,) = _run(vault_dir, catalog, policy(["erp"])[0]).sources
    assert res.status == "failed" and "offline" in res.errors[0]
    assert Vault.open(LocalBackend(str(vault_dir)), PASS).snapshot_ids() == [] and _files(share_dir) == []
    (res,) = _run(vault_dir, catalog, policy(["nosuch"])[0]).sources
    assert res.status == "failed" and "no database named nosuch" in res.errors[0]
    (res,) = _run(vault_dir, catalog, policy(["erp"], port=1)[0]).sources  # the server is down
    assert res.status == "failed" and "SQL Server unreachable" in res.errors[0], res.errors
    assert any("Incorrect syntax" not in s for s in inst.statements)


def test_the_double_refuses_what_it_does_not_model_and_checks_logins(sql) -> None:
    import pymssql

    inst, *_ = sql
    conn = pymssql.connect(server="127.0.0.1", port=str(inst.port), user=USER, password=PASSWORD, autocommit=True)
    cur = conn.cursor()
    for statement in ("SELECT 1", "DROP DATABASE erp", "BACKUP DATABASE [erp] TO DISK = N'x' WITH INIT"):
        with pytest.raises(pymssql.ProgrammingError) as e:
            cur.execute(statement)
        assert e.value.args[0] == 102, (statement, e.value.args)
    conn.close()
    with pytest.raises(pymssql.OperationalError) as e:
        pymssql.connect(server="127.0.0.1", port=str(inst.port), user=USER, password="nope")
    assert e.value.args[0][0] == 18456  # connect errors come as ((number, message),)


def test_a_full_share_or_a_backup_cut_half_way_publishes_nothing_and_leaves_nothing(sql) -> None:
    inst, policy, vault_dir, catalog, share_dir = sql
    inst.add("erp")
    pol, _ = policy(["erp"])
    inst.share_full = True
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "failed" and "disk is full" in res.errors[0], res.errors
    assert _files(share_dir) == [] and Vault.open(LocalBackend(str(vault_dir)), PASS).snapshot_ids() == []
    inst.share_full, inst.cut_next = False, True
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "failed" and "3013" in res.errors[0], res.errors
    assert _files(share_dir) == [] and Vault.open(LocalBackend(str(vault_dir)), PASS).snapshot_ids() == []
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "ok" and res.mode == "full"


def test_verify_deep_has_sql_server_check_every_stored_backup(sql, cli: Cli) -> None:
    inst, policy, vault_dir, catalog, share_dir = sql
    db = inst.add("erp")
    pol, _ = policy(["erp"])
    for i in range(2):
        inst.insert(db, f"r{i}")
        assert _run(vault_dir, catalog, pol).sources[0].status == "ok"
    env = Cli({"SQL_PASSWORD": PASSWORD, "SMB_PASSWORD": os.environ["SMB_PASSWORD"]})
    out = json.loads(env("verify", "--vault", str(vault_dir), "--deep", "--json").stdout)
    assert out["ok"] and [d["problems"] for d in out["deep"]] == [[]]
    verified = [s for s in inst.statements if s.startswith("RESTORE VERIFYONLY")]
    assert len(verified) == 4  # full, differential, two logs
    assert _files(share_dir) == []
